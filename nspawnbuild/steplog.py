"""Run external programs with their output in a log file, and fail with a useful message.

A failed step must tell the user which step failed, the command, its exit code, the last lines
of its output and where the full log is, without a traceback; this module is the one place
that knows how to do that.
"""

from __future__ import annotations

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

        ``stop``: the signal that ends the child when the build is interrupted (SIGKILL for a
        child that ignores SIGTERM, such as ``unshare --fork``, when nothing of it is kept).
        """
        shown = shown_command or shlex.join(argv)
        self.note(f"{step}: {shlex.join(argv)}")
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
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
            proc.send_signal(stop)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
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
