"""Every hook a plugin can implement, in the order the pipeline calls them.

Plugins register through the ``nspawnbuild`` entry-point group (built-ins too) and implement
any subset of these functions, decorated with ``nspawnbuild.hookimpl``.  All hook names share
the ``nspawnbuild_`` prefix so that ``PluginManager.check_pending()`` catches a misspelt one.

Arguments are passed by name; a hook implementation may accept only the arguments it needs.
``recipe`` is always a :class:`nspawnbuild.recipe.Recipe` (validated, ``extends`` applied) and
``distro`` a :class:`nspawnbuild.distro.Distro` for the recipe's base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .distro import Distro
    from .recipe import Recipe
    from .rootfs import RootfsContext
    from .settings import Setting

hookspec = pluggy.HookspecMarker("nspawnbuild")


@hookspec
def nspawnbuild_distro_names() -> list[str]:
    """Return the distro names this plugin can build (values of ``[base] distro``).

    Called while validating a recipe, to refuse an unknown distro with a suggestion, and by
    ``nspawnbuild plugins``.
    """


@hookspec(firstresult=True)
def nspawnbuild_make_distro(base: dict[str, Any]) -> Distro | None:
    """Return a :class:`~nspawnbuild.distro.Distro` for the recipe's ``[base]`` table.

    ``base`` is the raw ``[base]`` table. Return ``None`` when ``base["distro"]`` is not one
    of yours; the first plugin that returns an object wins. The object bootstraps a rootfs,
    installs packages, enables services, lists installed packages and cleans caches, so that
    feature plugins never need to ask which distro they are on.
    """


@hookspec
def nspawnbuild_feature_schemas() -> dict[str, dict[str, Any]]:
    """Return ``{feature name: JSON Schema}`` for each ``[features.<name>]`` table you own.

    The schema validates the table before any work starts (unknown keys, wrong types) and is
    part of ``nspawnbuild schema``. A feature is on when its table is present in the recipe.
    """


@hookspec
def nspawnbuild_validate(recipe: Recipe) -> None:
    """Check what a schema cannot express; raise :class:`nspawnbuild.errors.RecipeError`.

    Runs after schema validation and ``extends`` resolution, before any work is done.
    """


@hookspec
def nspawnbuild_packages(recipe: Recipe, distro: Distro) -> list[str]:
    """Return distro package names to install in the bootstrap run.

    Use ``distro.map_package()`` to translate generic names. These packages become part of
    the bootstrap cache key, so keep the list deterministic.
    """


@hookspec
def nspawnbuild_rootfs_digest(recipe: Recipe) -> Any:
    """Return JSON-serialisable data that shapes what you do in ``nspawnbuild_configure_rootfs``.

    Anything not derived from the recipe (a template shipped with the plugin, a data file)
    must appear here, or a change to it will not rebuild the rootfs. The recipe itself and
    the plugin's version are already part of the digest.
    """


@hookspec
def nspawnbuild_configure_rootfs(ctx: RootfsContext) -> None:
    """Change the bootstrapped tree before the recipe's ``[[files]]`` and ``[[post]]`` steps.

    Write through ``ctx.write_file()`` / ``ctx.path()`` (symlink-safe inside the image) and
    run commands inside the image with ``ctx.run()`` (systemd-nspawn). Never touch the host.
    """


@hookspec
def nspawnbuild_firstboot_commands(recipe: Recipe, distro: Distro) -> list[str]:
    """Return shell commands to run once, on each container's first boot, on the target host.

    For work that belongs to the host that runs the image rather than the build (a download
    that needs the host's network, a key made per container). Commands of all plugins and of
    ``[features.firstboot]`` run in one script, with ``sh -e``, in plugin load order.
    """


@hookspec
def nspawnbuild_nspawn_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    """Return :class:`~nspawnbuild.settings.Setting` items for the ``.nspawn`` file.

    Repeated keys (``Bind=``) are allowed. The recipe's own ``[nspawn.<Section>]`` table is
    rendered after all plugin settings, so a recipe can override a plugin's single-valued key.
    """


@hookspec
def nspawnbuild_unit_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    """Return settings for the ``systemd-nspawn@NAME.service`` drop-in (``DeviceAllow=`` ...)."""


@hookspec
def nspawnbuild_finalize_rootfs(ctx: RootfsContext) -> None:
    """Last chance to change the tree after post-steps, before host state is scrubbed.

    The core scrubbing (machine-id, ssh host keys, logs, caches, resolv.conf) runs after
    this hook, so a plugin cannot accidentally re-introduce host state.
    """
