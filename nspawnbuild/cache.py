"""The build cache: bootstrap trees by key, downloads by sha256. List and prune it.

An entry's last use is the mtime of its ``info.json`` (bootstraps, touched on every build that
uses them) or of the file itself (downloads), so pruning by age keeps what is in use.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .lock import exclusive
from .rootfs import remove_tree

SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)i?B?$", re.IGNORECASE)


@dataclass
class Entry:
    kind: str  # "bootstrap" or "source"
    key: str
    path: Path
    size: int
    last_used: float
    description: str

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "key": self.key, "path": str(self.path), "size": self.size,
                "last_used": int(self.last_used), "description": self.description}


def parse_size(text: str) -> int:
    m = SIZE.match(text.strip())
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 500M or 20G)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def tree_size(path: Path) -> int:
    total, seen = 0, set()
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def entries(cache: Path) -> list[Entry]:
    out: list[Entry] = []
    boot = cache / "bootstrap"
    if boot.is_dir():
        for d in sorted(boot.iterdir()):
            info = d / "info.json"
            if d.name.startswith(".") or not info.is_file():
                continue
            try:
                spec = json.loads(info.read_text()).get("spec", {})
            except ValueError:
                spec = {}
            base = spec.get("base", {})
            desc = (f"{base.get('distro', '?')} {base.get('release', '?')} {base.get('arch', '?')},"
                    f" {len(spec.get('packages', []))} packages")
            out.append(Entry("bootstrap", d.name, d, tree_size(d), info.stat().st_mtime, desc))
    src = cache / "sources"
    if src.is_dir():
        for f in sorted(src.iterdir()):
            if f.name.startswith(".") or not f.is_file():
                continue
            st = f.stat()
            out.append(Entry("source", f.name, f, st.st_blocks * 512, st.st_mtime, "download"))
    return out


def touch(path: Path) -> None:
    """Record a use of a cache entry."""
    with contextlib.suppress(OSError):
        os.utime(path)


def prune(cache: Path, *, older_than_days: float | None, max_size: int | None,
          dry_run: bool = False) -> list[Entry]:
    """Remove entries unused for longer than the age, then the least recently used until the
    cache fits ``max_size``. Returns what was (or would be) removed."""
    now = time.time()
    items = sorted(entries(cache), key=lambda e: e.last_used)
    doomed = [e for e in items if older_than_days is not None
              and now - e.last_used > older_than_days * 86400]
    if max_size is not None:
        kept = [e for e in items if e not in doomed]
        total = sum(e.size for e in kept)
        for e in kept:
            if total <= max_size:
                break
            doomed.append(e)
            total -= e.size
    if not dry_run:
        for e in doomed:
            lock = e.path.with_name(f"{e.key}.lock" if e.kind == "bootstrap" else f".{e.key}.lock")
            with exclusive(lock, wait=True, what=f"cache entry {e.key}"):
                remove_tree(e.path)
    return doomed
