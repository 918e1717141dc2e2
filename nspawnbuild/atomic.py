"""Files that appear whole or not at all: written under a fresh temporary name, then renamed.

A build can be killed at any moment; a reader (doit, a host that pulls the artifacts, the next
build) must never find half a file. Every file the build writes outside an image goes through
:func:`replacing` (files inside an image use ``rootfs.write_file``, which also refuses symlinks
planted in the image).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: the prefix of every temporary name, so that a killed build's leftovers can be found
TMP_MARK = ".tmp-"


@contextlib.contextmanager
def replacing(dest: Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a new, empty temporary file beside ``dest``; rename it over ``dest`` on success.

    The temporary name is created exclusively (never an existing path, which could be a symlink
    planted to redirect the write) and removed when the block fails or is interrupted."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}{TMP_MARK}", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(dest: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with replacing(dest, mode=mode) as tmp:
        tmp.write_bytes(data)


def write_json(dest: Path, doc: Any) -> None:
    """Write ``doc`` as indented, key-sorted JSON (the form of every plan and state file)."""
    write_bytes(dest, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def remove_leftovers(directory: Path, name: str = "") -> None:
    """Remove temporary files a killed build left in ``directory`` (for ``name``, or all)."""
    for stale in directory.glob(f".{name}*{TMP_MARK}*"):
        if stale.is_file() or stale.is_symlink():
            stale.unlink()
