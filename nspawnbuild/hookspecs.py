"""The two hooks a plugin implements: the distros it can build and the features it adds.

Plugins register through the ``nspawnbuild`` entry-point group (built-ins too) and implement
one or both of these functions, decorated with :data:`hookimpl`. Everything else a plugin does
is a method of the classes it returns (see :mod:`nspawnbuild.distro` and
:mod:`nspawnbuild.feature`), called by the core only for the recipes that use them.
"""

from __future__ import annotations

from typing import Any

import pluggy

from .distro import Distro
from .feature import Feature

PROJECT = "nspawnbuild"
hookspec = pluggy.HookspecMarker(PROJECT)
#: the marker for plugin hook functions: ``from nspawnbuild.hookspecs import hookimpl``
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def nspawnbuild_distros() -> list[type[Distro]]:
    """Return the :class:`~nspawnbuild.distro.Distro` classes this plugin provides.

    Each class's ``name`` is a value of ``[base] distro``; its ``base_schema`` the ``[base]``
    keys it accepts besides ``distro``, ``release`` and ``arch``.
    """


@hookspec
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    """Return the :class:`~nspawnbuild.feature.Feature` classes this plugin provides.

    Each class's ``name`` is a ``[features.<name>]`` table; a feature is on when its table is in
    the recipe (or always, for a class with ``always = True``).
    """
