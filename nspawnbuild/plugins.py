"""The plugin manager: built-in and third-party plugins load through one entry-point group."""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "nspawnbuild"
hookimpl = pluggy.HookimplMarker("nspawnbuild")


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide manager with every plugin of the entry-point group loaded."""
    pm = pluggy.PluginManager("nspawnbuild")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def registered_entry_points() -> dict[str, str]:
    """Map entry-point name to module for the ``nspawnbuild`` group (for ``plugins`` and tests)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def plugin_versions() -> dict[str, str]:
    """Return ``{plugin name: distribution version}`` so code changes invalidate cached steps."""
    pm = get_plugin_manager()
    versions: dict[str, str] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        versions[pm.get_name(plugin) or repr(plugin)] = f"{dist.project_name} {dist.version}"
    return dict(sorted(versions.items()))


def describe_plugins() -> list[dict[str, Any]]:
    """Describe each loaded plugin: its name, distribution, hooks, distros and features."""
    pm = get_plugin_manager()
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        dist = dists.get(id(plugin))
        distros = plugin.nspawnbuild_distro_names() if hasattr(
            plugin, "nspawnbuild_distro_names") else []
        features = sorted(plugin.nspawnbuild_feature_schemas()) if hasattr(
            plugin, "nspawnbuild_feature_schemas") else []
        rows.append({
            "name": name,
            "module": getattr(plugin, "__name__", repr(plugin)),
            "distribution": f"{dist.project_name} {dist.version}" if dist else None,
            "hooks": hooks,
            "distros": distros,
            "features": features,
        })
    return rows
