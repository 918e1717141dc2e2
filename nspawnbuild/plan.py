"""What a recipe turns into: the specs that key each pipeline stage, and the settings to render.

Each stage of the pipeline depends on one small JSON document that holds exactly what shapes
its output, so that doit reruns a stage only when that document changes: an edit to
``[nspawn]`` changes the config spec and nothing else, a post-step edit changes the rootfs
spec but not the bootstrap spec (whose digest is the shared cache key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import __version__
from .digests import digest
from .errors import BuildError
from .feature import AnyFeature
from .netconf import NetSpec
from .plugins import Registry, get_registry
from .recipe.model import Recipe
from .settings import Setting, check_setting

PLAN_FORMAT = 1


def plain(value: Any) -> Any:
    """``value`` as plain JSON data (dicts and lists): a loaded recipe may hold read-only
    mappings and tuples, and the plan documents are written as JSON and compared as dicts."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def collect_packages(recipe: Recipe[AnyFeature]) -> list[str]:
    """Every package the image is built with: the distro's base, the recipe's, the features';
    sorted."""
    return sorted(set(recipe.distro.base_packages()) | set(layer_packages(recipe)))


def layer_packages(recipe: Recipe[AnyFeature]) -> list[str]:
    """The package layer's set: the recipe's and its features' packages that the base layer
    (the distro's base packages, shared by every recipe on that base) does not hold; sorted."""
    pkgs = set(recipe.packages)
    for feature in recipe.features:
        pkgs.update(feature.packages(recipe))
    return sorted(pkgs - set(recipe.distro.base_packages()))


def _checked(settings: Iterable[Setting], kind: str) -> list[Setting]:
    """A plugin's settings, refused when one is not on the allowlist: a plugin must not be
    able to give a container more than a recipe could."""
    out: list[Setting] = []
    for s in settings:
        why = check_setting(s)
        if why:
            raise BuildError(f"plugin '{s.origin}' produced an unsafe {kind} setting "
                             f"[{s.section}] {s.key}={s.value!r}: {why}; report it to the "
                             "plugin's authors")
        out.append(s)
    return out


def nspawn_settings(recipe: Recipe[AnyFeature]) -> list[Setting]:
    """Core defaults, then the features' settings (in their run order; the file groups them by
    section), then the recipe's own ``[nspawn]`` table."""
    plugins = _checked((s for f in recipe.features for s in f.nspawn_settings(recipe)), ".nspawn")
    recipe_settings = list(recipe.nspawn)
    own = {(s.section, s.key) for s in recipe_settings + plugins}
    core: list[Setting] = []
    if ("Exec", "PrivateUsers") not in own:
        core.append(Setting("Exec", "PrivateUsers", "pick", "core"))
    if recipe.distro.init != "systemd" and ("Exec", "KillSignal") not in own:
        # SIGRTMIN+3, nspawn's default, is understood by systemd only.
        core.append(Setting("Exec", "KillSignal", "SIGTERM", "core"))
    return core + plugins + recipe_settings


def unit_settings(recipe: Recipe[AnyFeature]) -> list[Setting]:
    """The features' drop-in settings, then the recipe's own ``[unit]`` table."""
    plugins = _checked((s for f in recipe.features for s in f.unit_settings(recipe)), "drop-in")
    return plugins + list(recipe.unit)


@dataclass
class Plan:
    """The per-stage specs of one recipe. Each is written to its own file by ``resolve``."""

    name: str
    bootstrap: dict[str, Any]
    layer: dict[str, Any]
    rootfs: dict[str, Any]
    pack: dict[str, Any]
    config: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def bootstrap_key(self) -> str:
        """The digest of the bootstrap spec: the cache entry every stage after it builds on."""
        return str(self.rootfs["bootstrap_key"])

    @property
    def layer_key(self) -> str:
        """The digest of the package layer's spec: the cached layer on that base."""
        return str(self.rootfs["layer_key"])

    def documents(self) -> dict[str, dict[str, Any]]:
        """``{stage: spec}``, as ``resolve`` writes them to ``plan/STAGE.json``."""
        return {"bootstrap": self.bootstrap, "layer": self.layer, "rootfs": self.rootfs,
                "pack": self.pack,
                "config": self.config, "manifest": self.manifest}


def _rows(settings: list[Setting]) -> list[list[str]]:
    return [[s.section, s.key, s.value] for s in settings]


def make_plan(recipe: Recipe[AnyFeature], registry: Registry | None = None) -> Plan:
    """The five stage specs of ``recipe``; asks the host for the bootstrapper's version."""
    registry = registry or get_registry()
    distro = recipe.distro
    tool, tool_version = distro.bootstrapper()
    bootstrap: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "base": plain(dict(sorted(recipe.base.items()))),
        "packages": sorted(set(distro.base_packages())),
        "bootstrapper": [tool, tool_version, distro.bootstrap_revision],
        "epoch": recipe.epoch,
    }
    extra = distro.bootstrap_inputs()
    if extra:  # inputs from outside the recipe (environment, host files): part of the key
        bootstrap["inputs"] = plain(extra)
    # the package layer: what the recipe and its features add to the shared base, installed
    # by the distro's package manager on top of it (keyed by the base and that set alone)
    layer = {
        "format": PLAN_FORMAT,
        "bootstrap_key": digest(bootstrap),
        "packages": layer_packages(recipe),
        "installer": [distro.name, distro.layer_revision],
        "epoch": recipe.epoch,
    }
    rootfs = {
        "format": PLAN_FORMAT,
        "bootstrap_key": digest(bootstrap),
        "layer_key": digest(layer),
        "name": recipe.name,
        "epoch": recipe.epoch,
        "features": plain(recipe.feature_tables),
        "files": [{"dest": f.dest, "mode": f.mode, "owner": f.owner, "sha256": f.sha256}
                  for f in recipe.files],
        "post": plain(recipe.data.get("post", [])),
        "nspawnbuild": __version__,
        "plugins": registry.plugin_versions(),
        "plugin_data": [d for d in (plain(f.digest(recipe)) for f in recipe.features)
                        if d is not None],
    }
    pack = {"format": PLAN_FORMAT, "epoch": recipe.epoch, **recipe.output.as_dict()}
    rdigest = recipe.digest()
    config = {
        "name": recipe.name,
        "digest": rdigest,
        "version": __version__,
        "nspawn": _rows(nspawn_settings(recipe)),
        "unit": _rows(unit_settings(recipe)),
    }
    manifest = {
        "name": recipe.name,
        "description": recipe.description,
        "recipe_digest": rdigest,
        "nspawnbuild": __version__,
        "source_date_epoch": recipe.epoch,
        "target_systemd": recipe.target_systemd,
        "base": {"distro": distro.name, "release": distro.release, "arch": distro.arch,
                 **{k: plain(v) for k, v in sorted(recipe.base.items())
                    if k not in ("distro", "release", "arch")}},
        "bootstrapper": {"name": tool, "version": tool_version},
        "compression": recipe.output.as_dict(),
        "audit_allow": list(recipe.audit_allow),
    }
    if recipe.data.get("state"):  # only when named: every other manifest stays as it was
        manifest["state"] = list(recipe.data["state"])
    if recipe.output.sbom != ("spdx",):  # the SBOMs beyond the SPDX one; only when asked for
        manifest["sbom"] = list(recipe.output.sbom)
    needs = {f.name: n for f in recipe.features if (n := plain(f.host_needs(recipe))) is not None}
    if needs:  # what install must ask of the target host (hostneeds.py); only when some
        manifest["host_needs"] = needs
    if "network" in recipe.feature_tables:  # what install needs to make instances of it
        manifest["network"] = NetSpec.from_table(plain(recipe.feature_tables["network"])).as_dict()
    return Plan(recipe.name, bootstrap, layer, rootfs, pack, config, manifest)
