"""Digests: of JSON documents (plan specs, recipe identity) and of files, streamed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COPY_BUFSIZE = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes for digests (read-only mappings count as the dicts they are)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=_as_json).encode()


def _as_json(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON data")


def digest(doc: Any) -> str:
    """sha256 of a JSON document in its canonical form."""
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file's content, read in chunks (tarballs are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(COPY_BUFSIZE):
            h.update(chunk)
    return h.hexdigest()
