"""The package cache: every downloaded package file (.deb, .rpm, .apk) kept by content digest.

A bootstrap or a package layer is offered every cached file of its kind under the name the
package manager gives it (``cache/packages/SHA256/FILE``), and afterwards the files it
downloaded are taken in. Nothing here decides whether a file may be used: the package manager
checks each offered file against its signed index (apt and dnf by hash, apk by signature) and
downloads it again when it does not match, so a damaged or planted file costs a download,
never a wrong package. Each package manager is offered copies, never the cache's own files,
so that nothing run during the build can change a cached file in place.

What came from the cache and what was downloaded is counted per build (:class:`Use`), for the
build log and ``nspawnbuild build --json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_json
from .digests import sha256_file

DIR = "packages"
#: the file names a package manager gives its downloads: a digest directory holds one such file
SUFFIXES = (".deb", ".rpm", ".apk")


@dataclass
class Use:
    """How one build step used the cache: counted, not assumed."""

    #: packages installed from a file the cache offered
    from_cache: int = 0
    #: packages whose file was downloaded (absent from the cache, or not the archive's)
    downloaded: int = 0
    downloaded_bytes: int = 0
    #: the downloaded files' names, for the log
    names: list[str] = field(default_factory=list)

    def add(self, other: Use) -> Use:
        return Use(self.from_cache + other.from_cache, self.downloaded + other.downloaded,
                   self.downloaded_bytes + other.downloaded_bytes, self.names + other.names)

    def as_dict(self) -> dict[str, int]:
        return {"from_cache": self.from_cache, "downloaded": self.downloaded,
                "downloaded_bytes": self.downloaded_bytes}

    def line(self) -> str:
        return (f"package cache: {self.from_cache} packages from the cache, {self.downloaded} "
                f"downloaded ({self.downloaded_bytes} bytes)")


def root(cache: Path) -> Path:
    return cache / DIR


def cached(cache: Path, suffix: str) -> dict[str, Path]:
    """``{file name: cached file}`` of one kind; of two files with one name (two archives'
    builds of one version), the most recently used."""
    found: dict[str, tuple[float, Path]] = {}
    top = root(cache)
    if not top.is_dir():
        return {}
    for d in top.iterdir():
        if d.name.startswith(".") or not d.is_dir() or d.is_symlink():
            continue
        for f in d.iterdir():
            if f.name.endswith(suffix) and f.is_file() and not f.is_symlink():
                used = d.stat().st_mtime
                if f.name not in found or found[f.name][0] < used:
                    found[f.name] = (used, f)
    return {name: path for name, (_used, path) in found.items()}


def offer(cache: Path, dest: Path, suffix: str) -> dict[str, str]:
    """Copy every cached file of one kind into ``dest`` (a directory the package manager reads
    its downloads from); returns ``{file name: sha256}`` of what was offered."""
    offered: dict[str, str] = {}
    dest.mkdir(parents=True, exist_ok=True)
    for name, path in sorted(cached(cache, suffix).items()):
        shutil.copyfile(path, dest / name)
        offered[name] = path.parent.name
        with contextlib.suppress(OSError):
            os.utime(path.parent)  # last use, for `nspawnbuild cache prune`
    return offered


def take_in(cache: Path, files: Iterable[Path]) -> dict[str, tuple[str, int]]:
    """Keep each file in the cache under its digest; returns ``{file name: (sha256, size)}``."""
    top = root(cache)
    top.mkdir(parents=True, exist_ok=True)
    os.chmod(top, 0o700)
    kept: dict[str, tuple[str, int]] = {}
    for f in files:
        if not f.is_file() or f.is_symlink():
            continue
        sha = sha256_file(f)
        kept[f.name] = (sha, f.stat().st_size)
        entry = top / sha
        if (entry / f.name).is_file():
            continue
        tmp = top / f".{sha}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shutil.copyfile(f, tmp / f.name)
        os.chmod(tmp / f.name, 0o644)
        try:
            os.replace(tmp, entry)
        except OSError:  # another build kept the same file first
            shutil.rmtree(tmp, ignore_errors=True)
    return kept


def count(installed: Iterable[str], offered: dict[str, str],
          kept: dict[str, tuple[str, int]]) -> Use:
    """Where each installed package's file (``installed``: the file names the package manager
    gives them) came from: a file the cache offered that the package manager kept unchanged,
    or a download. A package whose file is not among ``kept`` is not counted."""
    use = Use()
    for name in sorted(set(installed)):
        if name not in kept:
            continue
        sha, size = kept[name]
        if offered.get(name) == sha:
            use.from_cache += 1
        else:
            use.downloaded += 1
            use.downloaded_bytes += size
            use.names.append(name)
    return use


def write_use(path: Path, use: Use) -> None:
    """The step's count, read by the build's summary (``--json``)."""
    write_json(path, use.as_dict())


def read_use(path: Path) -> Use:
    try:
        doc = json.loads(path.read_text())
        return Use(int(doc["from_cache"]), int(doc["downloaded"]), int(doc["downloaded_bytes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Use()
