"""Every command is listed by ``nspawnbuild --help`` and shows examples in its own help."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from nspawnbuild.cli import main, make_parser
from nspawnbuild.options import Options


def commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_is_in_the_main_help_and_has_examples() -> None:
    main_help = make_parser().format_help()
    found = commands()
    assert {"build", "list", "show", "validate", "plugins", "schema", "inspect", "diff",
            "install", "shell", "boot", "clean", "cache"} <= set(found)
    for name, parser in found.items():
        assert f"    {name}" in main_help, name
        assert "example" in parser.format_help(), f"'nspawnbuild {name} --help' has no example"
        assert f"nspawnbuild {name}" in parser.format_help(), name


def test_a_command_leaves_the_environment_as_it_found_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NSPAWNBUILD_QUIET", "NSPAWNBUILD_OUT", "NSPAWNBUILD_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["cache", "--cache-dir", str(tmp_path / "cache"), "list"]) == 0
    with pytest.raises(SystemExit) as bad:  # bad input: exit 2 before anything is built
        main(["build", "--quiet", "--out", str(tmp_path / "o"), "./missing.toml"])
    assert bad.value.code == 2
    for var in ("NSPAWNBUILD_QUIET", "NSPAWNBUILD_OUT", "NSPAWNBUILD_CACHE"):
        assert var not in os.environ, var


def test_directories_come_from_the_options_then_the_variables_then_the_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"NSPAWNBUILD_OUT": "o", "NSPAWNBUILD_CACHE": "", "XDG_CACHE_HOME": str(tmp_path / "x")}
    layout = Options.from_environment(env, work="w").layout
    assert layout.out == tmp_path / "o"  # the variable, made absolute
    assert layout.work == tmp_path / "w"  # the option wins
    assert layout.cache == tmp_path / "x" / "nspawnbuild"  # an empty variable is no variable
    assert Options.from_environment({}, out=tmp_path / "a").layout.out == tmp_path / "a"
    assert Options.from_environment({}).layout.work == tmp_path / ".nspawnbuild"
