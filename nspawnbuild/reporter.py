"""How a build looks in the terminal: one line per stage with its time; errors without noise.

doit's default reporter prints tracebacks and ``TaskFailed - taskid`` banners; a user wants to
know which step of which recipe failed, why, and where the log is.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from doit.exceptions import BaseFail, TaskFailed
from doit.reporter import ConsoleReporter


class Reporter(ConsoleReporter):
    """``.  rootfs:NAME`` becomes ``rootfs:NAME ... done in 12.3s``; up-to-date tasks say so."""

    def __init__(self, outstream: Any, options: dict[str, Any]):
        super().__init__(outstream, options)
        self._started: dict[str, float] = {}
        if os.environ.get("NSPAWNBUILD_QUIET"):
            self.write = lambda text: None  # type: ignore[method-assign]

    def execute_task(self, task: Any) -> None:
        if task.actions and not task.name.startswith("_"):
            self._started[task.name] = time.monotonic()
            self.write(f"  {task.name} ...\n")
            self.outstream.flush()

    def add_success(self, task: Any) -> None:
        if task.name in self._started:
            took = time.monotonic() - self._started.pop(task.name)
            self.write(f"  {task.name} done in {took:.1f}s\n")

    def skip_uptodate(self, task: Any) -> None:
        if task.actions and not task.name.startswith("_"):
            self.write(f"  {task.name} up to date\n")

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        self._started.pop(task.name, None)
        if not fail.report:
            return
        self.failures.append({"task": task, "exception": fail})
        if isinstance(fail, TaskFailed):
            sys.stderr.write(f"error: {task.name}: {fail.message}\n")
        else:  # an unexpected exception in our code: the traceback is for a bug report
            sys.stderr.write(f"error: {task.name}: internal error, please report:\n"
                             f"{fail.get_msg()}\n")
        sys.stderr.flush()

    def complete_run(self) -> None:
        if self.runtime_errors:
            sys.stderr.write("error: " + "\n".join(self.runtime_errors) + "\n")
