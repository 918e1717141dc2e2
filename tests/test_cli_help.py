"""Every command is listed by ``nspawnbuild --help`` and shows examples in its own help."""

from __future__ import annotations

import argparse

from nspawnbuild.cli import make_parser


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
