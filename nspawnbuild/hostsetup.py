"""The features' host settings at install: the one place install reaches the plugin registry.

``install`` sits below the registry (it must not load every plugin to copy a tree), so the
command line hands it :func:`settings_for`, which finds the feature classes the manifest's
``host_needs`` names and asks each for its settings on this host (see :mod:`hostneeds`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import BuildError
from .hostneeds import HostContext, HostSettings
from .plugins import get_registry


def settings_for(manifest: Mapping[str, Any], host: HostContext) -> HostSettings:
    """What every feature the manifest names under ``host_needs`` asks of this host."""
    needs = manifest.get("host_needs") or {}
    if not isinstance(needs, Mapping):
        raise BuildError("manifest.json: 'host_needs' is not a table; rebuild the image")
    features = get_registry().features
    out = HostSettings()
    for name in sorted(needs):
        cls = features.get(name)
        if cls is None:
            raise BuildError(f"the image needs feature '{name}' at install, which no installed "
                             "plugin provides; install the plugin that built it")
        out.add(cls.host_settings(needs[name], host))
    return out
