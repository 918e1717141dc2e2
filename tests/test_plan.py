"""Each pipeline stage is keyed by exactly what shapes it."""

from __future__ import annotations

from pathlib import Path

from nspawnbuild.plan import make_plan
from nspawnbuild.recipe.load import load_recipe

BASE = '[base]\ndistro = "debian"\n'


def plan_for(tmp_path: Path, text: str, name: str = "p"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return make_plan(load_recipe(path))


def test_nspawn_change_touches_only_config_and_manifest(tmp_path: Path) -> None:
    a = plan_for(tmp_path, BASE)
    b = plan_for(tmp_path, BASE + "[nspawn.Exec]\nLimitNOFILE = 10\n")
    assert a.bootstrap == b.bootstrap and a.rootfs == b.rootfs and a.pack == b.pack
    assert a.config != b.config


def test_post_step_change_keeps_the_bootstrap_key(tmp_path: Path) -> None:
    a = plan_for(tmp_path, BASE + '[[post]]\nrun = "true"\n')
    b = plan_for(tmp_path, BASE + '[[post]]\nrun = "false"\n')
    assert a.bootstrap_key == b.bootstrap_key
    assert a.rootfs != b.rootfs


def test_recipes_on_the_same_base_share_the_bootstrap(tmp_path: Path) -> None:
    a = plan_for(tmp_path, 'description = "one"\n' + BASE, "one")
    b = plan_for(tmp_path, BASE + '[[post]]\nrun = "true"\n', "two")
    assert a.bootstrap_key == b.bootstrap_key


def test_packages_change_the_layer_and_release_the_base(tmp_path: Path) -> None:
    """The base is keyed by what shapes it; the recipe's packages key only the layer on it,
    so two recipes on one base share it and a package edit does not re-bootstrap."""
    a = plan_for(tmp_path, BASE)
    curl = plan_for(tmp_path, 'packages = ["curl"]\n' + BASE)
    assert a.bootstrap_key == curl.bootstrap_key and a.layer_key != curl.layer_key
    assert curl.layer["bootstrap_key"] == curl.bootstrap_key  # the layer is of that base
    for other in (plan_for(tmp_path, BASE + 'release = "bookworm"\n'),
                  plan_for(tmp_path, 'epoch = 1700000000\n' + BASE)):
        assert a.bootstrap_key != other.bootstrap_key and a.layer_key != other.layer_key


def test_the_base_holds_the_init_system_and_the_layer_the_rest(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, 'packages = ["curl", "dbus"]\n' + BASE)
    assert plan.bootstrap["packages"] == ["apt", "dbus", "systemd-sysv"]
    assert plan.layer["packages"] == ["curl"]  # dbus is the base's already


def test_output_change_touches_only_pack(tmp_path: Path) -> None:
    a = plan_for(tmp_path, BASE)
    b = plan_for(tmp_path, BASE + '[output]\ncompression = "xz"\n')
    assert a.rootfs == b.rootfs and a.pack != b.pack
