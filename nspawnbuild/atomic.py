"""Files that appear whole or not at all: written under a fresh temporary name, then renamed.

A build can be killed at any moment; a reader (doit, a host that pulls the artifacts, the next
build) must never find half a file. Every file the build writes outside an image goes through
:func:`replacing`: plan and state documents, the tarball, downloads, the build log, installed
files. (Files inside an image use ``imagefs.write_file``, which also refuses symlinks planted in
the image; a bootstrap cache entry is a directory, renamed into place the same way.)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: what follows the file's name in its temporary name (``.NAME.tmp-XXXXXX``), so that a killed
#: build's leftovers can be found
TMP_MARK = ".tmp-"


def umask() -> int:
    """This process's umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


@contextlib.contextmanager
def replacing(dest: Path, *, mode: int | None = None, mark: str = TMP_MARK) -> Iterator[Path]:
    """Yield a new, empty temporary file beside ``dest``; rename it over ``dest`` on success.

    The temporary name (``.NAME`` + ``mark`` + random) is created exclusively, never an
    existing path, which could be a symlink planted to redirect the write; it is removed when
    the block fails or is interrupted. ``dest`` gets ``mode``, or what a plain ``open`` gives
    (0666 less the umask)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}{mark}", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode if mode is not None else 0o666 & ~umask())
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


def remove_leftovers(directory: Path, name: str = "*", mark: str = TMP_MARK) -> None:
    """Remove the temporary files a killed build left in ``directory`` (of ``name``, or all)."""
    for stale in directory.glob(f".{name}{mark}*"):
        if stale.is_file() or stale.is_symlink():
            stale.unlink()
