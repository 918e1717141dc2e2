"""The build log and the parsing of task names, without a build."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from nspawnbuild import steplog
from nspawnbuild.options import Options
from nspawnbuild.paths import Layout
from nspawnbuild.reporter import (
    Event,
    RecipeRun,
    Reporter,
    reporter_for,
    split_task,
    write_build_log,
)


def test_split_task() -> None:
    assert split_task("rootfs:web") == ("rootfs", "web")
    assert split_task("build") is None
    assert split_task("_private:web") is None


def test_build_log_has_each_stage_and_only_the_logs_of_stages_that_ran(tmp_path: Path) -> None:
    layout = Layout(out=tmp_path / "out", work=tmp_path / "work", cache=tmp_path / "cache")
    for stage, text in (("bootstrap", "old bootstrap output\n"), ("rootfs", "apt said hello\n")):
        layout.log("web", stage).parent.mkdir(parents=True, exist_ok=True)
        layout.log("web", stage).write_text(text)
    run = RecipeRun(events=[Event("bootstrap", "up to date"), Event("rootfs", "done", 2.5),
                            Event("pack", "failed", 1.0, "pack:web: disk full")])
    assert run.did_work
    log = write_build_log("web", run, layout).read_text()
    assert "== bootstrap: up to date\n" in log and "old bootstrap output" not in log
    assert "== rootfs: done in 2.5s\napt said hello\n" in log
    assert "== pack: failed in 1.0s\npack:web: disk full\n" in log
    assert [p.name for p in (layout.out / "web").iterdir()] == ["build.log"]  # no temp file left


def test_a_run_with_nothing_to_do_did_no_work() -> None:
    assert not RecipeRun(events=[Event("rootfs", "up to date")]).did_work


def test_a_steps_output_is_shown_as_text_never_as_markup_or_escapes(tmp_path: Path) -> None:
    layout = Layout(out=tmp_path / "out", work=tmp_path / "work", cache=tmp_path / "cache")
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    r = Reporter(io.StringIO(), {}, build=Options(layout), console=console, err=console)
    task = SimpleNamespace(name="rootfs:web", actions=[object()])
    r.execute_task(task)
    log = layout.log("web", "rootfs")
    for listener in steplog.listeners:
        listener(log, "Unpacking [/usr/share/foo] \x1b[31mred\x1b[0m [bold]x[/bold]\r")
    r.progress.refresh()  # type: ignore[union-attr]
    r.add_success(task)
    r.complete_run()
    text = screen.getvalue()
    assert "Unpacking [/usr/share/foo] red [bold]x[/bold]" in text
    assert "\x1b[31m" not in text
    assert r._on_line not in steplog.listeners  # the listener goes with the run


def test_a_runs_reporter_class_carries_the_runs_options(tmp_path: Path) -> None:
    """doit makes the reporter from a class: the class made for a run carries its options."""
    layout = Layout(out=tmp_path / "out", work=tmp_path / "work", cache=tmp_path / "cache")
    cls = reporter_for(Options(layout, quiet=True))
    screen = io.StringIO()
    r = cls(io.StringIO(), {}, console=Console(file=screen, force_terminal=True), err=None)
    assert r.quiet and r.progress is None and r.layout == layout
    task = SimpleNamespace(name="rootfs:web", actions=[object()])
    r.execute_task(task)
    r.add_success(task)
    r.complete_run()
    assert screen.getvalue() == ""  # quiet: errors only
    assert (layout.out / "web" / "build.log").is_file()  # the log is written all the same
