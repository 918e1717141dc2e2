"""How a build looks in the terminal, and the build log it leaves in ``out/NAME/build.log``.

doit's default reporter prints tracebacks and ``TaskFailed - taskid`` banners; a user wants to
see each stage of each recipe with a spinner and its time while it runs, which step failed and
why, and where the full log is. On a terminal that is a live display (rich) with colours; in a
pipe or a CI log it is one plain line per event, with no escape codes.

doit makes the reporter itself, from a class; :func:`reporter_for` makes a subclass per run
that carries the run's options (where the logs are, whether to be quiet).
"""

from __future__ import annotations

import atexit
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from doit.exceptions import BaseFail, TaskFailed
from doit.reporter import ConsoleReporter
from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text

from . import __version__, steplog
from .atomic import write_bytes
from .options import Options
from .paths import Layout

#: escape sequences and control characters in a step's output line
CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")
#: stages whose work is logged by a StepLog (the others are quick and log nothing)
LOGGED_STAGES = ("bootstrap", "rootfs")


@dataclass
class Event:
    stage: str
    outcome: str  # running, done, up to date, failed, interrupted
    seconds: float = 0.0
    error: str = ""


@dataclass
class RecipeRun:
    """What happened to one recipe in this run, for its build.log."""

    started: float = field(default_factory=time.time)
    events: list[Event] = field(default_factory=list)

    @property
    def did_work(self) -> bool:
        return any(e.outcome != "up to date" for e in self.events)


def split_task(task_name: str) -> tuple[str, str] | None:
    """``rootfs:web`` -> ("rootfs", "web"); None for tasks that are not a recipe's stage."""
    stage, sep, recipe = task_name.partition(":")
    return (stage, recipe) if sep and not stage.startswith("_") else None


def write_build_log(name: str, run: RecipeRun, layout: Layout) -> Path:
    """``out/NAME/build.log``: every stage of this run with its time and its step log.

    Written after every stage, failed ones included, so a failed build keeps its log beside the
    artifacts of the last good build (which it does not touch). Not listed in SHA256SUMS: it
    holds times and is not part of the reproducible set.
    """
    out = layout.build_log(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(run.started))
    parts = [f"nspawnbuild {__version__}: build of {name}, started {started}\n"]
    for e in run.events:
        took = f" in {e.seconds:.1f}s" if e.outcome in ("done", "failed", "interrupted") else ""
        parts.append(f"\n== {e.stage}: {e.outcome}{took}\n")
        log = layout.log(name, e.stage)
        if e.stage in LOGGED_STAGES and e.outcome != "up to date" and log.is_file():
            parts.append(log.read_text(errors="replace"))
        if e.error:
            parts.append(e.error.rstrip("\n") + "\n")
    write_bytes(out, "".join(parts).encode())
    return out


class StateColumn(ProgressColumn):
    """A spinner while a stage runs, then a coloured mark for how it ended."""

    MARKS = {"done": Text("✓", style="green"), "up to date": Text("·", style="dim"),
             "failed": Text("✗", style="bold red"), "interrupted": Text("✗", style="yellow")}

    def __init__(self) -> None:
        super().__init__()
        self.spinner = SpinnerColumn("dots")

    def render(self, task: Task) -> Text:
        state = task.fields.get("state", "running")
        if state == "running":
            return self.spinner.render(task)  # type: ignore[return-value]
        return self.MARKS[state]


class ElapsedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.fields.get("state") == "up to date":
            return Text("up to date", style="dim")
        elapsed = task.finished_time if task.finished else task.elapsed
        return Text(f"{elapsed or 0:6.1f}s", style="cyan")


class Reporter(ConsoleReporter):  # type: ignore[misc]  # doit has no type hints
    """Live stage lines on a terminal, plain lines elsewhere, build.log always."""

    #: the run's options, on the subclass :func:`reporter_for` makes (doit passes only its own)
    build_options: ClassVar[Options | None] = None

    def __init__(self, outstream: Any, options: dict[str, Any], *,
                 build: Options | None = None, console: Console | None = None,
                 err: Console | None = None):
        super().__init__(outstream, options)
        build = build or self.build_options
        if build is None:
            raise TypeError("Reporter needs the build's options: make its class with "
                            "reporter_for(options), or pass build=")
        self.quiet = build.quiet
        # doit swaps sys.stdout/stderr while an action runs: write to the real streams
        self.console = console or Console(file=sys.__stdout__)
        self.err = err or Console(file=sys.__stderr__, highlight=False)
        self.progress: Progress | None = None
        if self.console.is_terminal and not self.quiet:
            self.progress = Progress(
                StateColumn(), TextColumn("{task.fields[recipe]:<20} {task.fields[stage]:<10}"),
                ElapsedColumn(), TextColumn("{task.fields[line]}", style="dim", markup=False),
                console=self.console, redirect_stdout=False, redirect_stderr=False,
            )
        self.layout: Layout = build.layout
        self.runs: dict[str, RecipeRun] = {}
        self._rows: dict[str, Any] = {}  # task name -> progress row
        self._by_log: dict[Path, Any] = {}  # step log -> progress row, for its latest line
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._finished = False
        steplog.listeners.append(self._on_line)
        atexit.register(self.finish)

    # -- the display --------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        if not self.quiet and self.progress is None:
            self.console.file.write(text + "\n")
            self.console.file.flush()

    def _row(self, task_name: str, state: str) -> None:
        if self.progress is None:
            return
        stage, recipe = split_task(task_name) or (task_name, "")
        with self._lock:  # doit's thread runner reports from its worker threads
            if task_name not in self._rows:
                if not self.progress.live.is_started:
                    self.progress.start()
                self._rows[task_name] = self.progress.add_task(
                    "", total=1, recipe=recipe, stage=stage, state=state, line="")
            row = self._rows[task_name]
        if state == "running":
            self.progress.update(row, state=state)
        else:
            self.progress.update(row, state=state, completed=1, line="")

    def _on_line(self, log: Path, line: str) -> None:
        row = self._by_log.get(log)
        if row is not None and self.progress is not None:
            # a step's output is text to show, never markup or terminal control sequences
            shown = CONTROL.sub("", line).strip()[:70]
            self.progress.update(row, line=shown)

    # -- the build log ------------------------------------------------------------------------

    def _record(self, task_name: str, outcome: str, error: str = "") -> None:
        parsed = split_task(task_name)
        if parsed is None:
            return
        stage, recipe = parsed
        took = time.monotonic() - self._started.pop(task_name, time.monotonic())
        with self._lock:
            run = self.runs.setdefault(recipe, RecipeRun())
            run.events.append(Event(stage, outcome, took, error))
            if run.did_work:
                try:
                    write_build_log(recipe, run, self.layout)
                except OSError as e:  # the log is a help, never the reason a build fails
                    self.err.print(f"warning: cannot write the build log: {e}")

    # -- doit's reporter interface ------------------------------------------------------------

    def execute_task(self, task: Any) -> None:
        if task.actions and split_task(task.name):
            self._started[task.name] = time.monotonic()
            stage, recipe = split_task(task.name)  # type: ignore[misc]
            self._row(task.name, "running")
            if self.progress is not None and stage in LOGGED_STAGES:
                self._by_log[self.layout.log(recipe, stage)] = self._rows[task.name]
            self._say(f"  {task.name} ...")

    def add_success(self, task: Any) -> None:
        if task.name in self._started:
            took = time.monotonic() - self._started[task.name]
            self._record(task.name, "done")
            self._row(task.name, "done")
            self._say(f"  {task.name} done in {took:.1f}s")

    def skip_uptodate(self, task: Any) -> None:
        if task.actions and split_task(task.name):
            self._record(task.name, "up to date")
            self._row(task.name, "up to date")
            self._say(f"  {task.name} up to date")

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        if not fail.report:
            return
        self.failures.append({"task": task, "exception": fail})
        if isinstance(fail, TaskFailed):
            message = f"{task.name}: {fail.message}"
        elif getattr(fail, "exception", None) is not None:
            # an unexpected exception in our code: the traceback is for a bug report
            message = f"{task.name}: internal error, please report:\n{fail.get_msg()}"
        else:  # doit's own complaint (a missing dependency, a setup problem)
            message = f"{task.name}: {fail.message}"
        self._record(task.name, "failed", message)
        self._row(task.name, "failed")
        parsed = split_task(task.name)
        if parsed and parsed[1] in self.runs:
            message += f"\n  build log: {self.layout.build_log(parsed[1])}"
        if self.progress is not None and self.err.is_terminal:  # one terminal: above the lines
            self.progress.console.print(Text.assemble(("error: ", "bold red"), message),
                                        soft_wrap=True)
        else:  # stderr is a file or a pipe (2>err.log): the message goes there, plain
            self.err.file.write(f"error: {message}\n")
            self.err.file.flush()

    def complete_run(self) -> None:
        self.finish()
        if self.runtime_errors:
            self.err.print("error: " + "\n".join(self.runtime_errors), style="red")

    def finish(self) -> None:
        """Stop the live display (also on Ctrl-C, from atexit) and log stages cut short."""
        if self._finished:
            return
        self._finished = True
        for name in list(self._started):
            self._record(name, "interrupted")
            self._row(name, "interrupted")
        if self.progress is not None and self.progress.live.is_started:
            self.progress.stop()
        if self._on_line in steplog.listeners:
            steplog.listeners.remove(self._on_line)


def reporter_for(options: Options) -> type[Reporter]:
    """The reporter class for one run: doit instantiates it with its own arguments only."""
    class RunReporter(Reporter):
        build_options = options
    return RunReporter
