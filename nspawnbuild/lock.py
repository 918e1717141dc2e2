"""File locks: one build of a recipe at a time, one writer of a cache entry at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import BuildError


@contextlib.contextmanager
def exclusive(path: Path, *, wait: bool, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; without ``wait``, fail naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise BuildError(f"{what} is locked by process {holder} ({path}); wait for it to "
                             "finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
