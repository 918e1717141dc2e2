"""File locks: one build of a recipe at a time, one writer of a cache entry at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import BuildError

_held: dict[str, int] = {}


def _holder(fd: int) -> str:
    """The pid the lock's holder wrote into it."""
    return os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"


def hold(path: Path, *, what: str) -> None:
    """Take an exclusive lock on ``path`` for the rest of this process, or fail naming the holder.

    The kernel drops it when the process ends, however it ends.
    """
    key = str(path)
    if key in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise BuildError(f"{what} is being built by process {holder} (lock {path}); wait for "
                         "it to finish") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = fd


@contextlib.contextmanager
def exclusive(path: Path, *, wait: bool, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; without ``wait``, fail naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _holder(fd)
            raise BuildError(f"{what} is locked by process {holder} ({path}); wait for it to "
                             "finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_unless(path: Path, done: Callable[[], bool], *, poll: float = 0.5,
                     waiting: Callable[[str], None] | None = None) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (yields True), or False as soon as ``done()`` holds
    while another holds the lock: the work it guards was done by that other holder.
    ``waiting(holder)`` is called once, with the holder's pid, when the lock is taken: a
    build that waits says for whom rather than seem to hang.

    A build waiting to make a cache entry must not block on the lock until it is free: in one
    process (``-j``, doit's threads) the build that made the entry takes it shared for the rest
    of the run right after, and a blocking wait for the exclusive lock would never end.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if done():
                    yield False
                    return
                if waiting is not None and not told:
                    waiting(_holder(fd))
                    told = True
                time.sleep(poll)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield True
            return
    finally:
        os.close(fd)


#: path -> [fd, holders]: builds of several recipes in one process (-j, threads) share it
_shared: dict[str, list[int]] = {}


def hold_shared(path: Path, *, what: str) -> None:
    """Take a shared ``flock`` on ``path`` until :func:`release_shared` or the process ends.

    Builds that use a cache entry hold it shared; pruning and eviction take it exclusively and
    so wait until no build uses the entry.
    """
    key = str(path)
    if key in _shared:
        _shared[key][1] += 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _shared[key] = [fd, 1]


def release_shared(path: Path) -> None:
    held = _shared.get(str(path))
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _shared[str(path)]
        os.close(held[0])
