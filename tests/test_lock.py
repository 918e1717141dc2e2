"""exclusive_unless on the real kernel's flock: a build that waits for another's cache entry
says whom it waits for, once, and stops waiting when that entry is complete."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from nspawnbuild import steplog
from nspawnbuild.lock import exclusive_unless
from nspawnbuild.steplog import StepLog


def _held_by(path: Path, pid: str) -> int:
    """Another holder of ``path``'s lock (its own open file: flock conflicts within a process
    too), which wrote its pid as the build does."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, f"{pid}\n".encode(), 0)
    return fd


def test_a_waiting_build_names_the_holder_once_and_stops_when_the_work_is_done(tmp_path: Path) -> None:
    lock, done = tmp_path / "entry.lock", tmp_path / "entry-done"
    fd = _held_by(lock, "4242")
    told: list[str] = []
    threading.Timer(0.3, done.touch).start()  # the holder finishes its entry meanwhile
    try:
        with exclusive_unless(lock, done.exists, poll=0.02, waiting=told.append) as mine:
            assert mine is False
    finally:
        os.close(fd)
    assert told == ["4242"]


def test_a_free_lock_is_taken_without_a_word(tmp_path: Path) -> None:
    told: list[str] = []
    with exclusive_unless(tmp_path / "entry.lock", lambda: False, waiting=told.append) as mine:
        assert mine is True
        assert (tmp_path / "entry.lock").read_text() == f"{os.getpid()}\n"
    assert told == []


def test_say_goes_to_the_log_and_to_the_live_display(tmp_path: Path) -> None:
    seen: list[tuple[Path, str]] = []
    steplog.listeners.append(lambda p, line: seen.append((p, line)))
    try:
        with StepLog(tmp_path / "bootstrap.log") as log:
            log.say("waiting for process 4242")
    finally:
        steplog.listeners.pop()
    assert seen == [(tmp_path / "bootstrap.log", "waiting for process 4242")]
    assert (tmp_path / "bootstrap.log").read_text().endswith("] waiting for process 4242\n")
