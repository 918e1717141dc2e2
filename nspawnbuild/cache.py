"""The build cache: base and package-layer trees by key, packages and downloads by sha256.
List and prune it.

An entry's last use is the mtime of its ``info.json`` (bootstraps, touched on every build that
uses them) or of the file itself (downloads), so pruning by age keeps what is in use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .digests import sha256_file
from .lock import exclusive
from .tree import remove_tree

SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)i?B?$", re.IGNORECASE)


@dataclass
class Entry:
    kind: str  # "bootstrap", "layer", "package" or "source"
    key: str
    path: Path
    size: int
    last_used: float
    description: str

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "key": self.key, "path": str(self.path), "size": self.size,
                "last_used": int(self.last_used), "description": self.description}


def tree_size(path: Path) -> int:
    total, seen = 0, set()
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _describe_base(spec: dict[str, Any]) -> str:
    base = spec.get("base", {})
    return (f"{base.get('distro', '?')} {base.get('release', '?')} {base.get('arch', '?')}, "
            f"{len(spec.get('packages', []))} packages")


def _describe_layer(spec: dict[str, Any]) -> str:
    return (f"package layer on base {str(spec.get('bootstrap_key', '?'))[:12]}, "
            f"{len(spec.get('packages', []))} packages")


def _tree_entries(top: Path, kind: str, describe: Callable[[dict[str, Any]], str]) -> list[Entry]:
    """The complete entries (info.json written) of one tree kind: bases or package layers."""
    out: list[Entry] = []
    for d in sorted(top.iterdir()) if top.is_dir() else []:
        info = d / "info.json"
        if d.name.startswith(".") or not info.is_file():
            continue
        try:
            spec = json.loads(info.read_text()).get("spec", {})
        except ValueError:
            spec = {}
        out.append(Entry(kind, d.name, d, tree_size(d), info.stat().st_mtime, describe(spec)))
    return out


def entries(cache: Path) -> list[Entry]:
    out = _tree_entries(cache / "bootstrap", "bootstrap", _describe_base)
    out += _tree_entries(cache / "layers", "layer", _describe_layer)
    packages = cache / "packages"  # nspawnbuild.pkgcache: one downloaded package per digest
    if packages.is_dir():
        for d in sorted(packages.iterdir()):
            if d.name.startswith(".") or not d.is_dir():
                continue
            names = [f.name for f in d.iterdir()]
            out.append(Entry("package", d.name, d, tree_size(d), d.stat().st_mtime,
                             names[0] if len(names) == 1 else "package"))
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
            lock = e.path.with_name(f"{e.key}.lock" if e.kind in ("bootstrap", "layer")
                                    else f".{e.key}.lock")
            with exclusive(lock, wait=True, what=f"cache entry {e.key}"):
                remove_tree(e.path)
    return doomed


# -- the content digest of a bootstrap entry ---------------------------------------------------

CONTENTS = "contents.json"


def _xattrs(path: str) -> list[list[str]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    return [[n, os.getxattr(path, n, follow_symlinks=False).hex()] for n in sorted(names)]


def _record(path: str, st: os.stat_result) -> list[object]:
    """What a tree entry is: type and mode, owner, size, content digest or link target, xattrs."""
    if stat.S_ISREG(st.st_mode):
        content = sha256_file(Path(path))
    elif stat.S_ISLNK(st.st_mode):
        content = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        content = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    else:
        content = ""
    return [st.st_mode, st.st_uid, st.st_gid, st.st_size if stat.S_ISREG(st.st_mode) else 0,
            content, _xattrs(path)]


def _stamp(st: os.stat_result) -> list[int]:
    """What changes whenever anything writes, truncates, chmods or chowns the file: ctime can
    not be set from user space, so an unchanged stamp means unchanged content (as git's index)."""
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _walk(root: Path) -> Iterator[tuple[str, str, os.stat_result]]:
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            path = os.path.join(dirpath, name)
            yield os.path.relpath(path, root), path, os.lstat(path)


def write_contents(entry: Path) -> str:
    """Record the content digest of ``entry/root``; returns the digest of the record."""
    records, stamps = {}, {}
    for rel, path, st in _walk(entry / "root"):
        records[rel] = _record(path, st)
        stamps[rel] = _stamp(st)
    doc = {"records": records, "stamps": stamps}
    digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
    (entry / CONTENTS).write_text(json.dumps(doc, sort_keys=True))
    return digest


def verify_contents(entry: Path, expected: str | None) -> list[str]:
    """What in ``entry/root`` differs from its recorded contents (empty when intact).

    Files whose stamp is unchanged are trusted; any other file is hashed again, so a cache that
    was copied or restored (new ctimes, same content) still verifies, and a truncated or
    rewritten file never does.
    """
    try:
        doc = json.loads((entry / CONTENTS).read_text())
        records, stamps = doc["records"], doc["stamps"]
    except (OSError, ValueError, KeyError):
        return [f"{CONTENTS} is missing or unreadable"]
    if expected is not None and \
            hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest() != expected:
        return [f"{CONTENTS} does not match the digest in info.json"]
    problems, seen = [], set()
    for rel, path, st in _walk(entry / "root"):
        seen.add(rel)
        if rel not in records:
            problems.append(f"{rel}: not in the recorded contents")
        elif stamps.get(rel) != _stamp(st) and _record(path, st) != records[rel]:
            problems.append(f"{rel}: changed since it was cached")
        if len(problems) >= 5:
            return problems
    problems.extend(f"{rel}: missing" for rel in sorted(set(records) - seen))
    return problems[:5]
