"""Built-in plugins go through the same entry-point door as third-party ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pluggy

from conftest import BIN, ROOT
from nspawnbuild import hookspecs
from nspawnbuild.plugins import get_registry, registered_entry_points


def test_every_module_under_plugins_is_registered() -> None:
    modules = {p.stem for p in (ROOT / "plugins").glob("*.py") if p.stem != "__init__"}
    registered = {v.removeprefix("nspawnbuild_plugins.") for v in registered_entry_points().values()}
    assert modules and modules <= registered, modules - registered


def test_every_hook_has_a_docstring_and_the_prefix() -> None:
    for name in dir(hookspecs):
        fn = getattr(hookspecs, name)
        if callable(fn) and hasattr(fn, "nspawnbuild_spec"):
            assert name.startswith("nspawnbuild_"), name
            assert fn.__doc__ and len(fn.__doc__) > 40, name


def test_a_misspelt_hook_is_caught() -> None:
    pm = pluggy.PluginManager("nspawnbuild")
    pm.add_hookspecs(hookspecs)
    impl = pluggy.HookimplMarker("nspawnbuild")

    class Typo:
        @impl
        def nspawnbuild_feature(self):  # noqa: ANN201
            return []

    pm.register(Typo())
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        assert "nspawnbuild_feature" in str(e)
    else:
        raise AssertionError("check_pending accepted an unknown hook")


def test_distro_hook_answers_for_its_distros_only() -> None:
    distros = get_registry().distros
    assert distros["debian"].name == "debian"
    assert distros["ubuntu"].name == "ubuntu"
    assert "plan9" not in distros


def test_plugins_command_lists_builtins(tmp_path: Path) -> None:
    r = subprocess.run([str(BIN / "nspawnbuild"), "plugins"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0
    assert "nspawnbuild_plugins.debian" in r.stdout and "distros: debian, ubuntu" in r.stdout
