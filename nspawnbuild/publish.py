"""Publish a recipe's artifacts into out/NAME all at once.

The tarball, the .nspawn, the drop-in, the SBOM, manifest.json and SHA256SUMS are made in a staging
directory and swapped into place with one ``renameat2(RENAME_EXCHANGE)``: a reader (or a
``machinectl pull-tar`` from a web server on out/) sees either the old complete set or the new
complete set, never a new .nspawn beside an old tarball, and a failed or interrupted build
leaves the previous artifacts as they were.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path

from .tree import remove_tree

AT_FDCWD = -100
RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False when the kernel or filesystem cannot."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    res = libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def link_or_copy(src: Path, dest: Path) -> None:
    """Hardlink (same inode: the published tarball keeps its mtime) or copy with metadata."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def publish(files: dict[str, Path], out_dir: Path) -> None:
    """Make ``out_dir`` hold exactly ``files`` ({relative name: staged path}), atomically."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{out_dir.name}.publish-*", f".{out_dir.name}.old-*"):
        for stale in out_dir.parent.glob(pattern):  # left by a killed build
            remove_tree(stale)
    new = out_dir.with_name(f".{out_dir.name}.publish-{os.getpid()}")
    new.mkdir()
    try:
        for rel, src in sorted(files.items()):
            link_or_copy(src, new / rel)
        if out_dir.exists():
            if not _exchange(new, out_dir):
                old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
                os.rename(out_dir, old)
                os.rename(new, out_dir)
                new = old
        else:
            os.rename(new, out_dir)
            return
    finally:
        remove_tree(new)
