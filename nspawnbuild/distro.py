"""The small interface every distro plugin implements, so features never branch on the distro.

Modelled on mkosi's ``distribution/<distro>.py``: one class per distro; the field's own tools
(mmdebstrap, dnf, apk) do the work, the class only knows how to call them.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from .errors import Problem
from .pkgcache import Use
from .recipe.sourcemap import SourceMap
from .steplog import StepLog


class ImageRunner(Protocol):
    """What runs a command inside the image being built (the build's
    :class:`~nspawnbuild.sandbox.Sandbox`): named here so that the distro interface does not
    depend on the sandbox's machinery."""

    def run(self, log: StepLog, command: Sequence[str], *, step: str, network: bool = True,
            env: Mapping[str, str] | None = None) -> None: ...


@dataclass(frozen=True, order=True)
class Package:
    """An installed package as recorded in the manifest."""

    name: str
    version: str
    arch: str = ""
    installed_size_kib: int = 0
    #: the source package it was built from (Debian's Source, rpm's SOURCERPM name, apk's
    #: origin); empty when the database does not say
    source: str = ""
    #: the license as the package database or the package's copyright file declares it, in
    #: the distro's own words (the SBOM maps it to an SPDX expression); empty when unknown
    license: str = ""
    #: an identity of the package file as the package manager gives it (``sha256:HEX`` of a
    #: .deb from the archive's Packages file), recorded in a lock file; empty when unknown
    digest: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The manifest's entry: source, license and digest only when known."""
        extra = {k: v for k, v in (("source", self.source), ("license", self.license),
                                   ("digest", self.digest)) if v}
        return {"name": self.name, "version": self.version, "arch": self.arch,
                "installed_size_kib": self.installed_size_kib, **extra}


class Distro(ABC):
    """One distro family's way of making and maintaining a root filesystem.

    An instance is made once per recipe, from its ``[base]`` table, when the recipe is loaded
    (a plugin returns its classes from ``nspawnbuild_distros``). It knows bootstrapping and
    package-manager work only; what a feature needs to know of a distro is in ``traits``.
    Methods that change a tree get the tree's path; methods that must run inside the image
    return an argv that the caller runs in the sandbox, so that the distro object never
    executes anything from the image on the host.
    """

    #: the ``[base] distro`` value
    name: ClassVar[str]
    #: JSON Schema properties this distro accepts in ``[base]`` besides distro, release, arch
    base_schema: ClassVar[dict[str, Any]] = {}
    #: ``[base]`` keys other distros take that this one refuses, with a hint each: the loader
    #: reports "NAME does not use KEY (HINT)" instead of a bare unknown key
    unused_keys: ClassVar[Mapping[str, str]] = {}
    #: the package-URL type of its packages (``deb``, ``rpm``, ``apk``), for the SBOM; the
    #: purl's namespace is the distro's name
    purl_type: ClassVar[str] = "generic"
    #: the init system the guest runs; anything but "systemd" gets ``KillSignal=SIGTERM``
    init: ClassVar[str] = "systemd"
    #: bump when the way ``bootstrap()`` calls its tool changes: it is part of the cache key
    bootstrap_revision: ClassVar[int] = 1
    #: the systemd version each release ships, by ``[base] release``: the default of
    #: ``target_systemd`` (the hosts an image is for run its own release); a release missing
    #: here (sid, a new one) gets the oldest supported host's, DEFAULT_TARGET_SYSTEMD
    systemd_by_release: ClassVar[Mapping[str, int]] = {}
    #: ``[base] arch`` values that differ from the kernel's machine name (``uname -m``), which
    #: is what binfmt_misc and the host report: Debian's arm64 is the kernel's aarch64
    machine_names: ClassVar[Mapping[str, str]] = {}

    def __init__(self, base: Mapping[str, Any]):
        # the recipe's [base] wins over the distro's defaults; the loader fills the same
        # defaults into the recipe's data, so both see one table
        self.base: dict[str, Any] = {**self.defaults(), **base}
        #: ``{package: version}`` from the recipe's lock file (:mod:`nspawnbuild.lockfile`),
        #: set before the plan is made; a distro that can pins its package manager to them
        #: (and makes them part of :meth:`bootstrap_inputs`), every build checks them
        self.pins: dict[str, str] = {}

    def pins_digest(self) -> str:
        """The lock's versions as one digest, for :meth:`bootstrap_inputs`: another lock,
        another base."""
        return hashlib.sha256(json.dumps(self.pins, sort_keys=True).encode()).hexdigest()

    # -- identity -------------------------------------------------------------------------
    @property
    def release(self) -> str:
        return str(self.base["release"])

    @property
    def arch(self) -> str:
        return str(self.base["arch"])

    @property
    def machine(self) -> str:
        """The kernel's name (``uname -m``) of the architecture the image is built for."""
        return self.machine_names.get(self.arch, self.arch)

    def release_systemd(self) -> int | None:
        """The systemd version the recipe's release ships, when the distro knows it."""
        return self.systemd_by_release.get(self.release)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Values filled into ``[base]`` when the recipe leaves them out.

        They become part of the recipe's data (and so of its digest and the bootstrap's cache
        key): keep them deterministic for a given build host.
        """
        return {}

    # -- bootstrap ------------------------------------------------------------------------
    @abstractmethod
    def bootstrapper(self) -> tuple[str, str]:
        """Return ``(tool, version)`` of the host program that will bootstrap the tree.

        Raises :class:`HostToolMissing` when no suitable program is installed. The result is
        part of the bootstrap cache key.
        """

    def bootstrap_inputs(self) -> dict[str, Any]:
        """What the bootstrap depends on besides the recipe's ``[base]`` and packages.

        A mirror from the environment or repository files of the build host change what is
        bootstrapped; whatever is returned here becomes part of the bootstrap cache key.
        """
        return {}

    @abstractmethod
    def bootstrap(self, dest: Path, packages: list[str], epoch: int, log: StepLog,
                  cache: Path) -> Use | None:
        """Create a root filesystem at ``dest`` (absent) with ``packages`` installed; returns
        how the package cache was used, or None when the bootstrapper is not offered it.

        Every process is run through ``log`` (the build log, the sandbox's limits); ``epoch``
        is the recipe's SOURCE_DATE_EPOCH. ``cache`` is the build's download cache, for a
        bootstrapper that must be fetched first (Alpine's static apk): it is passed in, so
        that no distro reads the cache location from the environment.
        """

    def base_packages(self) -> list[str]:
        """Packages every image of this distro needs to boot in systemd-nspawn: the base layer
        (bootstrapped once, shared by every recipe on it) holds these and nothing else."""
        return []

    #: bump when the way ``install_layer()`` installs changes: part of the package layer's key
    layer_revision: ClassVar[int] = 1

    def install_layer(self, root: Path, packages: list[str], epoch: int, log: StepLog,
                      cache: Path, sandbox: ImageRunner) -> Use:
        """Install ``packages`` on the base at ``root`` (the mounted overlay whose upper layer
        becomes the cached package layer); returns how the package cache was used.

        The default runs :meth:`install_command` in the sandbox, as a post-step would, and
        counts nothing; a distro whose package manager can be offered cached packages does so.
        """
        sandbox.run(log, self.install_command(packages), step="package layer", network=True,
                    env={"SOURCE_DATE_EPOCH": str(epoch)})
        return Use()

    def components(self) -> tuple[str, ...]:
        """The archive components (areas) the recipe enabled, for distros whose archive has them
        (Debian's main, contrib, non-free); empty for the others."""
        return ()

    def map_package(self, generic: str) -> str:
        """Translate a generic package name (``openssh-server``) to this distro's name."""
        return generic

    # -- inside the image ------------------------------------------------------------------
    @abstractmethod
    def install_command(self, packages: list[str]) -> list[str]:
        """argv that installs ``packages`` inside the image (run in the sandbox)."""

    def enable_service_command(self, unit: str) -> list[str]:
        """argv that enables a service inside the image (run in the sandbox)."""
        return ["systemctl", "enable", unit]

    @abstractmethod
    def list_packages(self, root: Path) -> list[Package]:
        """Installed packages with versions, read from the tree without running it."""

    def archive_state(self, root: Path) -> list[dict[str, Any]]:
        """What identifies the archive state the tree was installed from (Debian: each
        Release file's suite, date and sha256), read before :meth:`clean`; for lock files."""
        return []

    def clean(self, root: Path) -> None:
        """Remove package manager caches and lists from the tree."""

    # -- checks and facts for features -----------------------------------------------------
    #: facts feature plugins need, as plain data: ``{feature name: {trait: value}}``; each
    #: feature declares its traits (with defaults) in its own module, see nspawnbuild.feature
    traits: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def validate(self, sources: SourceMap) -> list[Problem]:
        """Problems with ``[base]`` that the distro's schema cannot express (keys that exclude
        each other), made with ``sources.problem("base.KEY", message, hint)``."""
        return []
