"""What one run of the build was asked to do: where things go, and how it should behave.

The command line (``nspawnbuild build --out ... --keep-rootfs``) and ``doit build recipe=NAME
keep_rootfs=1`` both end in one frozen :class:`Options` that is handed to the tasks, the
pipeline and the reporter as an argument, so that no stage reads a setting from anywhere else.

The documented variables ``NSPAWNBUILD_OUT``, ``NSPAWNBUILD_WORK`` and ``NSPAWNBUILD_CACHE``
(and ``XDG_CACHE_HOME`` for the cache's default) are read here and nowhere else: an option
given on the command line wins over the variable, the variable over the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .paths import Layout

#: the user variables that move the three directories
OUT_VARIABLE = "NSPAWNBUILD_OUT"
WORK_VARIABLE = "NSPAWNBUILD_WORK"
CACHE_VARIABLE = "NSPAWNBUILD_CACHE"


def default_cache(environ: Mapping[str, str] | None = None) -> Path:
    """The cache when nothing moves it: ``$XDG_CACHE_HOME/nspawnbuild`` or ``~/.cache/...``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nspawnbuild"


def layout_from_environment(environ: Mapping[str, str] | None = None, *,
                            out: str | Path | None = None, work: str | Path | None = None,
                            cache: str | Path | None = None) -> Layout:
    """The directories: each from its option when given, else its variable, else the default
    (out/ and .nspawnbuild/ in the current directory, the user's cache). Always absolute, so
    that a later change of directory does not move them."""
    env = os.environ if environ is None else environ
    return Layout(
        out=Path(out or env.get(OUT_VARIABLE, "out")).absolute(),
        work=Path(work or env.get(WORK_VARIABLE, ".nspawnbuild")).absolute(),
        cache=Path(cache or env.get(CACHE_VARIABLE) or default_cache(env)).absolute(),
    )


@dataclass(frozen=True)
class Options:
    """Everything a build needs to know besides its recipes; made once per run, never changed."""

    layout: Layout
    #: keep the tree of a failed rootfs step (``--keep-rootfs``, ``keep_rootfs=1``)
    keep_rootfs: bool = False
    #: print errors only (``--quiet``, ``--json``): the reporter shows no stage lines
    quiet: bool = False
    #: how many tasks may run at once (``-j N``: several recipes in parallel)
    jobs: int = 1

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, *,
                         out: str | Path | None = None, work: str | Path | None = None,
                         cache: str | Path | None = None, keep_rootfs: bool = False,
                         quiet: bool = False, jobs: int = 1) -> Options:
        """Options from the given values, with the directories that are not given taken from
        the user variables (``environ``, default ``os.environ``) or their defaults."""
        layout = layout_from_environment(environ, out=out, work=work, cache=cache)
        return cls(layout, keep_rootfs=keep_rootfs, quiet=quiet, jobs=jobs)
