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
    # what each feature does and which features a distro gives facts to
    assert "ssh: validate, packages, digest, configure\n" in r.stdout, r.stdout
    assert "fedora: traits for gpu-nvidia, locales, network, ssh, users\n" in r.stdout, r.stdout


def test_every_distros_traits_name_a_feature_and_its_declared_traits() -> None:
    """A misspelt feature or trait in a distro's traits would leave a default in place."""
    reg = get_registry()
    for name, cls in reg.distros.items():
        distro = cls({"distro": name, "release": "x", "arch": "amd64"})
        for feature, traits in cls.traits.items():
            assert feature in reg.features, f"distro {name} gives traits to unknown feature {feature}"
            made = reg.features[feature].traits_for(distro)
            for key, value in traits.items():
                got = getattr(made, key)
                assert got == (tuple(value) if isinstance(value, list) else value), (name, feature, key)


def test_a_trait_the_feature_does_not_declare_is_a_clear_error() -> None:
    import pytest

    from nspawnbuild.errors import BuildError

    reg = get_registry()
    debian = reg.distros["debian"]

    class Misspelt(debian):  # type: ignore[valid-type,misc]
        name = "misspelt"
        traits = {"ssh": {"servcie": "ssh"}}

    with pytest.raises(BuildError, match=r"'misspelt' gives feature 'ssh' traits it does not "
                       r"declare: servcie \(it declares generates_host_keys, service\)"):
        reg.features["ssh"].traits_for(Misspelt({"release": "bookworm", "arch": "amd64"}))


def test_a_feature_whose_schema_and_config_disagree_is_refused_at_registration() -> None:
    import dataclasses

    import pytest

    from nspawnbuild.errors import BuildError
    from nspawnbuild.feature import Feature, NoTraits
    from nspawnbuild.plugins import _add

    @dataclasses.dataclass(frozen=True)
    class Config:
        key: str = "vm.swappiness"

    class Sysctl(Feature[Config, NoTraits]):
        name = "sysctl"
        config_class = Config
        properties = {"key": {"type": "string"}, "value": {"type": "string"}}

    with pytest.raises(BuildError, match="broken feature 'sysctl': its schema accepts value, "
                       "which config_class Config has no field for"):
        _add({}, {}, Sysctl, "sysctl-plugin", "feature")
    assert all(cls.check_class() is None for cls in get_registry().features.values())
