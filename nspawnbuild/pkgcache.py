"""The package cache: every downloaded package file (.deb, .rpm, .apk) kept by content digest.

A bootstrap or a package layer is offered every cached file of its kind under the name the
package manager gives it (``cache/packages/SHA256/FILE``), and afterwards the files it
downloaded are taken in. A file another build left (a recipe may name its own archive, and a
package's maintainer script may write into the download directory) must never become a
package of this build: dnf checks a cached file's checksum against its repository metadata
and apk its signature, but apt takes a file of the right size as already downloaded, so apt
is offered only the files whose sha256 its own signed index gives for that name (``offer``'s
``accept``). Each package manager is offered copies, never the cache's own files, so that
nothing run during the build can change a cached file in place.

What came from the cache and what was downloaded is counted per build (:class:`Use`), for the
build log and ``nspawnbuild build --json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
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


def cached(cache: Path, suffix: str) -> dict[str, list[Path]]:
    """``{file name: [cached files]}`` of one kind, the most recently used first (two archives
    may build one version into different files; another build may have left a file under a
    name it does not deserve)."""
    found: dict[str, list[tuple[float, Path]]] = {}
    top = root(cache)
    if not top.is_dir():
        return {}
    for d in top.iterdir():
        if d.name.startswith(".") or not d.is_dir() or d.is_symlink():
            continue
        for f in d.iterdir():
            if f.name.endswith(suffix) and f.is_file() and not f.is_symlink():
                found.setdefault(f.name, []).append((d.stat().st_mtime, f))
    return {name: [p for _used, p in sorted(paths, key=lambda x: (-x[0], str(x[1])))]
            for name, paths in found.items()}


def offer(cache: Path, dest: Path, suffix: str,
          accept: Callable[[str, str], bool] | None = None) -> dict[str, str]:
    """Copy the cached files of one kind that ``accept(file name, sha256)`` takes into
    ``dest`` (a directory the package manager reads its downloads from); returns ``{file
    name: sha256}`` of what was offered.

    ``accept`` is where a consumer whose package manager does not check a file it finds
    already downloaded (apt trusts one of the right size) offers only the files its own signed
    index lists with that digest: another build's file is offered only when it is exactly the
    one this archive would have downloaded. Each copy is a new file (never through a link the
    directory might hold); a file pruned meanwhile is skipped."""
    offered: dict[str, str] = {}
    dest.mkdir(parents=True, exist_ok=True)
    for name, paths in sorted(cached(cache, suffix).items()):
        path = next((p for p in paths if accept is None or accept(name, p.parent.name)), None)
        if path is None:
            continue
        sha = path.parent.name
        target = dest / name
        target.unlink(missing_ok=True)
        try:
            with open(path, "rb") as src, \
                    open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o644), "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except FileNotFoundError:  # pruned since it was listed
            continue
        offered[name] = sha
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
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha}.tmp-", dir=top))  # -j threads share a pid
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
