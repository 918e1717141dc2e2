"""sources: files downloaded by URL (``[[sources]]``), pinned by sha256, copied or unpacked.

Downloads happen on the build host, into the cache (``nspawnbuild.fetch``); nothing of the
image runs until the file's digest is checked. A plain file is copied into the image through
the symlink-safe resolver; an archive is unpacked *inside* the image, by the image's own tar
running in systemd-nspawn, with the cached file bound read-only into the container: a hostile
archive (``../`` names, absolute names, symlinks out of the tree) can only reach the image.

Each download is bounded by its entry's ``max_size`` and ``timeout``; a ``file://`` source is
read only inside the directory of the recipe that names it (``nspawnbuild.fetch``).
"""

from __future__ import annotations

import os
from typing import Any

from nspawnbuild.errors import BuildError
from nspawnbuild.feature import AnyFeature, Feature, NoConfig, NoTraits
from nspawnbuild.fetch import Limits, fetch
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.recipe.model import Recipe, SourceEntry
from nspawnbuild.rootfs import RootfsContext

#: where the archive being unpacked is bound, inside the container
GUEST_PATH = "/run/nspawnbuild-source"
#: ``mkdir -p DEST && tar ...`` with DEST as ``$1``, so that no path is ever quoted into a script
EXTRACT_SCRIPT = 'mkdir -p -- "$1" && shift && exec tar "$@"'


def extract_command(entry: SourceEntry) -> list[str]:
    """The command run inside the image to unpack the bound archive into ``entry.dest``."""
    tar = ["-xf", GUEST_PATH, "-C", entry.dest, "--no-same-owner"]
    if entry.strip_components:
        tar.append(f"--strip-components={entry.strip_components}")
    return ["/bin/sh", "-e", "-c", EXTRACT_SCRIPT, "sh", entry.dest, *tar]


class Sources(Feature[NoConfig, NoTraits]):
    """The recipe's ``[[sources]]``: it has no ``[features.sources]`` table of its own, so it is
    always on and does nothing for a recipe without sources."""

    name = "sources"
    order = 30
    always = True
    #: no [features.sources] table: the entries are the recipe's top-level [[sources]]
    table = False

    def digest(self, recipe: Recipe[AnyFeature]) -> Any:
        # recipe.data["sources"] is not otherwise part of the rootfs spec
        if not recipe.source_entries:
            return None
        return {"sources": [s.as_dict() for s in recipe.source_entries]}

    def configure(self, ctx: RootfsContext) -> None:
        for entry in ctx.recipe.source_entries:
            install(ctx, entry)


def install(ctx: RootfsContext, entry: SourceEntry) -> None:
    """Download (or take from the cache) one entry and copy or unpack it into the image."""
    where = f"{entry.key} in {entry.declared_in}"
    if ctx.cache is None:
        raise BuildError(f"{where}: no cache directory to download {entry.url} into (a "
                         "RootfsContext made outside a build)")
    try:
        cached = fetch(entry.url, entry.sha256, ctx.cache, root=entry.declared_in.parent,
                       limits=Limits(entry.max_size, entry.timeout), log=ctx.log)
    except BuildError as e:
        raise BuildError(f"{where}: {e}") from None
    if entry.extract:
        ctx.log.note(f"source {entry.url}: unpacking into {entry.dest} inside the image")
        # the container's root is an unprivileged host uid: it reads the bound file as other
        # (a file copied into the cache by hand may be 0600)
        os.chmod(cached, 0o644)
        ctx.run(extract_command(entry), step=f"unpacking {where} ({entry.url}) into "
                f"{entry.dest}", network=False, binds_ro=[(cached, GUEST_PATH)])
    else:
        ctx.log.note(f"source {entry.url}: copying to {entry.dest}")
        ctx.copy_file(entry.dest, cached, mode=entry.mode)


@hookimpl
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    return [Sources]
