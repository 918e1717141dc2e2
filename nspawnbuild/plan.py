"""What a recipe turns into: the specs that key each pipeline stage, and the settings to render.

Each stage of the pipeline depends on one small JSON document that holds exactly what shapes
its output, so that doit reruns a stage only when that document changes: an edit to
``[nspawn]`` changes the config spec and nothing else, a post-step edit changes the rootfs
spec but not the bootstrap spec (whose digest is the shared cache key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import __version__
from .digests import digest
from .distro import Distro
from .errors import BuildError
from .plugins import get_plugin_manager, plugin_versions
from .recipe import Recipe
from .settings import Setting, check_setting, table_to_settings

PLAN_FORMAT = 1


def make_distro(recipe: Recipe) -> Distro:
    distro = get_plugin_manager().hook.nspawnbuild_make_distro(base=dict(recipe.base))
    assert distro is not None, "validated recipes always have a known distro"
    return distro


def collect_packages(recipe: Recipe, distro: Distro) -> list[str]:
    """The bootstrap package set: the distro's base, the features', the recipe's; sorted."""
    pkgs = set(distro.base_packages()) | set(recipe.packages)
    for extra in get_plugin_manager().hook.nspawnbuild_packages(recipe=recipe, distro=distro):
        pkgs.update(extra or [])
    return sorted(pkgs)


def _plugin_settings(hook_results: list[list[Setting] | None], kind: str) -> list[Setting]:
    out: list[Setting] = []
    for batch in reversed(hook_results):  # pluggy calls last-registered first; keep load order
        for s in batch or []:
            why = check_setting(s)
            if why:
                raise BuildError(f"plugin '{s.origin}' produced an unsafe {kind} setting "
                                 f"[{s.section}] {s.key}={s.value!r}: {why}; report it to the "
                                 "plugin's authors")
            out.append(s)
    return out


def nspawn_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    """Core defaults, then plugin fragments, then the recipe's own ``[nspawn]`` table."""
    pm = get_plugin_manager()
    recipe_settings, _ = table_to_settings("nspawn", recipe.data.get("nspawn", {}))
    plugins = _plugin_settings(pm.hook.nspawnbuild_nspawn_settings(recipe=recipe, distro=distro),
                               ".nspawn")
    own = {(s.section, s.key) for s in recipe_settings + plugins}
    core: list[Setting] = []
    if ("Exec", "PrivateUsers") not in own:
        core.append(Setting("Exec", "PrivateUsers", "pick", "core"))
    if distro.init != "systemd" and ("Exec", "KillSignal") not in own:
        # SIGRTMIN+3, nspawn's default, is understood by systemd only.
        core.append(Setting("Exec", "KillSignal", "SIGTERM", "core"))
    return core + plugins + recipe_settings


def unit_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    pm = get_plugin_manager()
    recipe_settings, _ = table_to_settings("unit", recipe.data.get("unit", {}))
    plugins = _plugin_settings(pm.hook.nspawnbuild_unit_settings(recipe=recipe, distro=distro),
                               "drop-in")
    return plugins + recipe_settings


@dataclass
class Plan:
    """The per-stage specs of one recipe. Each is written to its own file by ``resolve``."""

    name: str
    bootstrap: dict[str, Any]
    rootfs: dict[str, Any]
    pack: dict[str, Any]
    config: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def bootstrap_key(self) -> str:
        return self.rootfs["bootstrap_key"]

    def documents(self) -> dict[str, dict[str, Any]]:
        return {"bootstrap": self.bootstrap, "rootfs": self.rootfs, "pack": self.pack,
                "config": self.config, "manifest": self.manifest}


def make_plan(recipe: Recipe) -> Plan:
    distro = make_distro(recipe)
    tool, tool_version = distro.bootstrapper()
    bootstrap = {
        "format": PLAN_FORMAT,
        "base": dict(sorted(recipe.base.items())),
        "packages": collect_packages(recipe, distro),
        "bootstrapper": [tool, tool_version, distro.bootstrap_revision],
        "epoch": recipe.epoch,
    }
    extra = distro.bootstrap_inputs()
    if extra:  # inputs from outside the recipe (environment, host files): part of the key
        bootstrap["inputs"] = extra
    pm = get_plugin_manager()
    rootfs = {
        "format": PLAN_FORMAT,
        "bootstrap_key": digest(bootstrap),
        "name": recipe.name,
        "epoch": recipe.epoch,
        "features": recipe.features,
        "files": [{"dest": f.dest, "mode": f.mode, "owner": f.owner, "sha256": f.sha256}
                  for f in recipe.files],
        "post": recipe.post,
        "nspawnbuild": __version__,
        "plugins": plugin_versions(),
        "plugin_data": [d for d in pm.hook.nspawnbuild_rootfs_digest(recipe=recipe)
                        if d is not None],
    }
    pack = {"format": PLAN_FORMAT, "epoch": recipe.epoch, **recipe.output}
    rdigest = recipe.digest()
    config = {
        "name": recipe.name,
        "digest": rdigest,
        "version": __version__,
        "nspawn": [[s.section, s.key, s.value] for s in nspawn_settings(recipe, distro)],
        "unit": [[s.section, s.key, s.value] for s in unit_settings(recipe, distro)],
    }
    manifest = {
        "name": recipe.name,
        "description": recipe.data.get("description", ""),
        "recipe_digest": rdigest,
        "nspawnbuild": __version__,
        "source_date_epoch": recipe.epoch,
        "target_systemd": recipe.target_systemd,
        "base": {"distro": distro.name, "release": distro.release, "arch": distro.arch,
                 **{k: v for k, v in sorted(recipe.base.items())
                    if k not in ("distro", "release", "arch")}},
        "bootstrapper": {"name": tool, "version": tool_version},
        "compression": recipe.output,
        "audit_allow": list(recipe.data.get("audit", {}).get("allow", [])),
    }
    return Plan(recipe.name, bootstrap, rootfs, pack, config, manifest)
