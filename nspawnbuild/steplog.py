"""Run external programs with their output in a log file, and fail with a useful message.

A failed step must tell the user which step failed, the command, its exit code, the last lines
of its output and where the full log is, without a traceback; this module is the one place
that knows how to do that.

Every program a build or a command starts for real work runs through here, so that each one
dies with nspawnbuild (:func:`die_with_parent`) and is stopped when it is interrupted:
:meth:`StepLog.run` for a build step whose output goes to its log, and three siblings for the
children that have no log: :func:`run_captured` (a whole build whose output is shown only when
it fails), :func:`run_fed` (a program fed a stream on stdin, such as systemd-import) and
:func:`run_attached` (a program on the user's terminal: ``nspawnbuild shell``). Short host jobs
(mount, rm, cp) use ``nspawnbuild.host.run``.

:meth:`StepLog.run` is also where a build's processes get their fixed environment (umask,
variables, host name: :mod:`nspawnbuild.buildenv`), never the caller's.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shlex
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from . import buildenv
from .errors import BuildError

TAIL_LINES = 25
#: lines that are kept in the log but are noise in an error message: on hosts where /run is
#: not a tmpfs, every systemd-nspawn run ends with this harmless complaint
TAIL_NOISE = re.compile(r"^Attempted to remove disk file system under .*/run/systemd/nspawn/propagate/")


#: called with (log path, line) for every line a step prints: the progress display shows the
#: latest one beside the spinner
listeners: list[Callable[[Path, str], None]] = []


class StepLog:
    """An append-only log for one task of one recipe, e.g. ``.nspawnbuild/NAME/logs/rootfs.log``."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def note(self, text: str) -> None:
        """Write a line of our own into the log (a step header, a decision)."""
        self._fh.write(f"[nspawnbuild {time.strftime('%H:%M:%S')}] {text}\n")
        self._fh.flush()

    def say(self, text: str) -> None:
        """A note the live display shows as well, as a step's latest line: for a build that
        is waiting rather than working, which would otherwise look hung."""
        self.note(text)
        for listener in listeners:
            listener(self.path, text)

    def run(
        self,
        argv: Sequence[str],
        *,
        step: str,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        shown_command: str | None = None,
        stop: signal.Signals = signal.SIGTERM,
    ) -> None:
        """Run ``argv``; its stdout and stderr go to the log. Raise BuildError on failure.

        The child runs in the build's environment (:mod:`nspawnbuild.buildenv`): umask 022,
        :data:`~nspawnbuild.buildenv.FIXED` plus ``env``, a UTS namespace with fixed names.

        ``stop``: the signal that ends the child when the build is interrupted (SIGKILL for a
        child that ignores SIGTERM, such as ``unshare --fork``, when nothing of it is kept).
        """
        shown = shown_command or shlex.join(argv)
        self.note(f"{step}: {shlex.join(argv)}")
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=buildenv.environment(env),
                preexec_fn=_child_setup(os.getpid(), buildenv.build_child),
            )
        except subprocess.SubprocessError as e:  # buildenv.build_child failed in the child
            raise BuildError(f"{step}: could not give it the build's environment (a UTS "
                             f"namespace of its own needs root): {e}") from None
        try:
            if stdin is not None:
                assert proc.stdin is not None
                proc.stdin.write(stdin)
                proc.stdin.close()
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace")
                self._fh.write(line)
                if not TAIL_NOISE.match(line):
                    tail.append(line.rstrip("\n"))
                    for listener in listeners:
                        listener(self.path, tail[-1])
            code = proc.wait()
        except BaseException:
            # Ctrl-C or SIGTERM: stop the child promptly, then let the interruption through.
            _stop(proc, stop)
            raise
        finally:
            self._fh.flush()
        if code != 0:
            self.note(f"{step}: exit code {code}")
            raise BuildError(format_failure(step, shown, code, list(tail), self.path))


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """In the child: get SIGKILL when nspawnbuild dies, even by SIGKILL.

    A killed build must not leave a bootstrapper or a container running on the host. If the
    build died between fork and prctl (the signal would never come), exit at once.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(137)


def format_failure(step: str, command: str, code: int, tail: list[str], log: Path) -> str:
    """The message of a failed step: what, which command, exit code, last lines, full log."""
    lines = [f"{step} failed with exit code {code}", f"  command: {command}"]
    if tail:
        lines.append("  last lines of its output:")
        lines.extend(f"    {t}" for t in tail)
    lines.append(f"  full log: {log}")
    return "\n".join(lines)


def _child_setup(parent: int, prepare: Callable[[], None] | None) -> Callable[[], None]:
    """The ``preexec_fn`` of a child: die with the parent, then the caller's own setup."""
    def setup() -> None:
        die_with_parent(parent)
        if prepare is not None:
            prepare()
    return setup


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], stop: signal.Signals) -> None:
    """End ``proc`` after an interruption or an error: ``stop``, then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(stop)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_captured(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, prepare: Callable[[], None] | None = None,
                 stop: signal.Signals = signal.SIGTERM) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with stdout and stderr captured apart, as text; the caller decides what a
    failure means (``--check-reproducible`` shows a failed build's stderr).

    ``env`` is the child's whole environment (None: this process's); ``prepare`` runs in the
    child before it executes (a umask, a CPU affinity)."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(env) if env is not None else None, cwd=cwd,
                            preexec_fn=_child_setup(os.getpid(), prepare))
    try:
        out, err = proc.communicate()
    except BaseException:
        _stop(proc, stop)
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def run_fed(argv: Sequence[str], source: IO[bytes], *,
            chunk: int = 1 << 20) -> tuple[int, str]:
    """Run ``argv`` with ``source`` copied to its stdin; return its exit code and its output
    (stdout and stderr together). A program that stops reading early ends the copy; an error
    while reading ``source`` (a damaged tarball) kills the program and is raised."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            preexec_fn=functools.partial(die_with_parent, os.getpid()))
    assert proc.stdin is not None and proc.stdout is not None
    try:
        try:
            while data := source.read(chunk):
                proc.stdin.write(data)
            proc.stdin.close()
        except BrokenPipeError:  # it read what it wanted and exited: its exit code says more
            pass
        out = proc.stdout.read().decode(errors="replace")
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
    return code, out


def run_attached(argv: Sequence[str]) -> int:
    """Run ``argv`` on this terminal (its stdin, stdout and stderr); return its exit code.
    The program dies with nspawnbuild, and is stopped when nspawnbuild is interrupted."""
    proc = subprocess.Popen(list(argv), preexec_fn=functools.partial(die_with_parent, os.getpid()))
    try:
        return proc.wait()
    except BaseException:
        _stop(proc, signal.SIGTERM)
        raise
