"""The plugin registry: built-in and third-party plugins load through one entry-point group.

Loading asks every plugin once for its distro and feature classes; the :class:`Registry` then
answers by name. Built-in plugins are registered exactly like third-party ones (see
``pyproject.toml``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .distro import Distro
from .errors import BuildError
from .feature import AnyFeature, Feature

ENTRY_POINT_GROUP = "nspawnbuild"


@dataclass(frozen=True)
class Registry:
    """Every distro and feature class the loaded plugins provide, by name."""

    distros: dict[str, type[Distro]]
    features: dict[str, type[AnyFeature]]
    #: which plugin provided each distro and feature (for ``nspawnbuild plugins``, errors)
    provider: dict[str, str]
    manager: pluggy.PluginManager

    def feature_order(self) -> list[type[AnyFeature]]:
        """Feature classes in the order they run: by ``order``, then as registered."""
        ranked = list(self.features.values())
        return sorted(ranked, key=lambda cls: (cls.order, ranked.index(cls)))

    def plugin_versions(self) -> dict[str, str]:
        """``{plugin name: distribution version}`` so code changes invalidate cached steps."""
        pm = self.manager
        versions: dict[str, str] = {}
        known: dict[str, str] = {}  # each distribution's metadata is parsed once, not per plugin
        for plugin, dist in pm.list_plugin_distinfo():
            where = str(getattr(getattr(dist, "_dist", None), "_path", id(dist)))
            if where not in known:
                known[where] = f"{dist.project_name} {dist.version}"
            versions[pm.get_name(plugin) or repr(plugin)] = known[where]
        return dict(sorted(versions.items()))


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry, with every plugin of the entry-point group loaded."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    distros: dict[str, type[Distro]] = {}
    features: dict[str, type[AnyFeature]] = {}
    provider: dict[str, str] = {}
    # pluggy calls the last registered plugin first; the registry keeps load order
    for plugin in [p for _, p in pm.list_name_plugin()]:
        name = pm.get_name(plugin) or repr(plugin)
        hook = getattr(plugin, "nspawnbuild_distros", None)
        for cls in (hook() if hook else []) or []:
            _add(distros, provider, cls, name, "distro")
        hook = getattr(plugin, "nspawnbuild_features", None)
        for fcls in (hook() if hook else []) or []:
            _add(features, provider, fcls, name, "feature")
    return Registry(distros, features, provider, pm)


def _add(table: dict[str, Any], provider: dict[str, str], cls: Any, plugin: str, kind: str) -> None:
    """Register one class, refusing a name two plugins claim and a feature class whose schema
    and config do not agree (a plugin bug that would otherwise surface in a user's build)."""
    key = f"{kind}:{cls.name}"
    if cls.name in table:
        raise BuildError(f"plugins '{provider[key]}' and '{plugin}' both provide the {kind} "
                         f"'{cls.name}'; uninstall one of them")
    wrong = cls.check_class() if kind == "feature" else None
    if wrong:
        raise BuildError(f"plugin '{plugin}' provides a broken feature '{cls.name}': {wrong}; "
                         "report it to the plugin's authors")
    table[cls.name] = cls
    provider[key] = plugin


#: the Feature methods a feature may override, in the order a build calls them
FEATURE_METHODS = ("validate", "packages", "digest", "configure", "finalize", "nspawn_settings",
                   "unit_settings", "firstboot")


def feature_methods(cls: type[AnyFeature]) -> list[str]:
    """The methods of ``Feature`` that ``cls`` overrides: what the feature does."""
    return [m for m in FEATURE_METHODS if getattr(cls, m) is not getattr(Feature, m)]


def registered_entry_points() -> dict[str, str]:
    """Map entry-point name to module for the ``nspawnbuild`` group (for ``plugins`` and tests)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def describe_plugins() -> list[dict[str, Any]]:
    """Describe each loaded plugin: its name, distribution, hooks, distros and features."""
    reg = get_registry()
    pm = reg.manager
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        dist = dists.get(id(plugin))
        distros = sorted(d for d in reg.distros if reg.provider[f"distro:{d}"] == name)
        features = sorted(f for f in reg.features if reg.provider[f"feature:{f}"] == name)
        rows.append({
            "name": name,
            "module": getattr(plugin, "__name__", repr(plugin)),
            "distribution": f"{dist.project_name} {dist.version}" if dist else None,
            "hooks": hooks,
            "distros": distros,
            "features": features,
            # what each class does, which the two hooks alone do not say
            "methods": {f: feature_methods(reg.features[f]) for f in features},
            "traits": {d: sorted(reg.distros[d].traits) for d in distros},
        })
    return rows
