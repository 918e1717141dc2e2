"""Where things go: artifacts (out/), work trees and doit state (.nspawnbuild/), the cache.

A :class:`Layout` holds the three directories and names every path below them, so that the
stages, the reporter and the commands agree on where a file is. Which directories a run uses
(options, user variables, defaults) is decided once, in :mod:`nspawnbuild.options`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .pack import SUFFIXES
from .render import DROPIN_NAME

#: the log of the last build that did work, beside its artifacts (not in SHA256SUMS)
BUILD_LOG = "build.log"


def tarball_name(name: str, compression: str) -> str:
    """The tarball's file name in out/NAME (its suffix says the compression)."""
    return f"{name}{SUFFIXES[compression]}"


def nspawn_name(name: str) -> str:
    """The .nspawn file's name in out/NAME (also its name on a host)."""
    return f"{name}.nspawn"


def dropin_name(name: str) -> str:
    """The unit drop-in's path relative to out/NAME (and to /etc/systemd/system on a host)."""
    return f"systemd-nspawn@{name}.service.d/{DROPIN_NAME}"


@dataclass(frozen=True)
class Layout:
    """The artifact directory, the work directory and the cache, and the paths below them."""

    out: Path
    work: Path
    cache: Path

    @property
    def state_db(self) -> Path:
        return self.work / "doit-state.sqlite3"

    def work_dir(self, name: str) -> Path:
        return self.work / "recipes" / name

    def out_dir(self, name: str) -> Path:
        return self.out / name

    def build_log(self, name: str) -> Path:
        return self.out / name / BUILD_LOG

    def plan_file(self, name: str, stage: str) -> Path:
        return self.work_dir(name) / "plan" / f"{stage}.json"

    def rootfs(self, name: str) -> Path:
        return self.work_dir(name) / "rootfs"

    def stage_dir(self, name: str) -> Path:
        """Artifacts are made here, then published into out/NAME together."""
        return self.work_dir(name) / "stage"

    def tarball(self, name: str, compression: str) -> Path:
        return self.stage_dir(name) / tarball_name(name, compression)

    def nspawn_file(self, name: str) -> Path:
        return self.stage_dir(name) / nspawn_name(name)

    def dropin(self, name: str) -> Path:
        return self.stage_dir(name) / dropin_name(name)

    def bootstrap_entry(self, key: str) -> Path:
        """The cached base layer ``key`` (shared by every recipe on that base)."""
        return self.cache / "bootstrap" / key

    def layer_entry(self, key: str) -> Path:
        """The cached package layer ``key`` (a base and a package set)."""
        return self.cache / "layers" / key

    def cache_use(self, name: str) -> Path:
        """How this run's bootstrap and package layer of ``name`` used the package cache."""
        return self.work_dir(name) / "cache-use.json"

    def log(self, name: str, task: str) -> Path:
        return self.work_dir(name) / "logs" / f"{task}.log"
