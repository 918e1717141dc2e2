"""Where things go: artifacts (out/), work trees and doit state (.nspawnbuild/), the cache.

Defaults are relative to the current directory, like mkosi's; each can be moved with an
environment variable (the CLI's --out/--work-dir/--cache-dir set them) so that ``doit`` from
the project root and ``nspawnbuild`` from anywhere agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .pack import SUFFIXES
from .render import DROPIN_NAME

#: the log of the last build that did work, beside its artifacts (not in SHA256SUMS)
BUILD_LOG = "build.log"


def tarball_name(name: str, compression: str) -> str:
    return f"{name}{SUFFIXES[compression]}"


def nspawn_name(name: str) -> str:
    return f"{name}.nspawn"


def dropin_name(name: str) -> str:
    return f"systemd-nspawn@{name}.service.d/{DROPIN_NAME}"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nspawnbuild"


@dataclass(frozen=True)
class Layout:
    out: Path
    work: Path
    cache: Path

    @classmethod
    def from_env(cls) -> Layout:
        env = os.environ
        return cls(
            out=Path(env.get("NSPAWNBUILD_OUT", "out")).absolute(),
            work=Path(env.get("NSPAWNBUILD_WORK", ".nspawnbuild")).absolute(),
            cache=Path(env.get("NSPAWNBUILD_CACHE") or default_cache()).absolute(),
        )

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
        return self.cache / "bootstrap" / key

    def log(self, name: str, task: str) -> Path:
        return self.work_dir(name) / "logs" / f"{task}.log"
