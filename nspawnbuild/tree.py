"""Whole directory trees on the build host: find mounts below one, remove one, copy one.

Work trees and cache entries may have overlays, proc or bind mounts below them while a build
runs; removing one must never reach through a mount into another file system.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import BuildError
from .host import run


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo)."""
    prefix = os.fsencode(path.resolve())
    found = []
    with open("/proc/self/mountinfo", "rb") as fh:  # bytes: mount points need not be UTF-8
        for line in fh:
            # the kernel escapes space, tab, newline and backslash as \ooo, nothing else
            mnt = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), line.split()[4])
            if mnt == prefix or mnt.startswith(prefix.rstrip(b"/") + b"/"):
                found.append(os.fsdecode(mnt))
    return found


def remove_tree(path: Path) -> None:
    """Delete a work or cache directory, never crossing into a mount or another filesystem."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    mounted = mounts_below(path)
    if mounted:
        raise BuildError(f"refusing to remove {path}: something is mounted below it "
                         f"({', '.join(mounted)}); unmount it first")
    run(["rm", "-rf", "--one-file-system", "--", str(path)], f"remove {path}")


def copy_tree(src: Path, dest: Path) -> None:
    """Copy a tree keeping owners, modes, hardlinks, xattrs (file capabilities) and timestamps."""
    run(["cp", "-a", "--reflink=auto", "--", str(src), str(dest)], f"copy {src} to {dest}")
