"""The small interface every distro plugin implements, so features never branch on the distro.

Modelled on mkosi's ``distribution/<distro>.py``: one class per distro; the field's own tools
(mmdebstrap, dnf, apk) do the work, the class only knows how to call them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .steplog import StepLog

if TYPE_CHECKING:
    from .rootfs import RootfsContext


@dataclass(frozen=True, order=True)
class Package:
    """An installed package as recorded in the manifest."""

    name: str
    version: str
    arch: str = ""
    installed_size_kib: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "arch": self.arch,
                "installed_size_kib": self.installed_size_kib}


class Distro(ABC):
    """One distro family's way of making and maintaining a root filesystem.

    An instance is made from a recipe's ``[base]`` table (see ``nspawnbuild_make_distro``).
    Methods that change a tree get the tree's path; methods that must run inside the image
    return an argv that the caller runs in the sandbox, so that the distro object never
    executes anything from the image on the host.
    """

    #: the ``[base] distro`` value
    name: ClassVar[str]
    #: JSON Schema properties this distro accepts in ``[base]`` besides the common ones
    base_schema: ClassVar[dict[str, Any]] = {}
    #: the init system the guest runs; anything but "systemd" gets ``KillSignal=SIGTERM``
    init: ClassVar[str] = "systemd"
    #: bump when the way ``bootstrap()`` calls its tool changes: it is part of the cache key
    bootstrap_revision: ClassVar[int] = 1

    def __init__(self, base: dict[str, Any]):
        self.base = dict(base)

    # -- identity -------------------------------------------------------------------------
    @property
    def release(self) -> str:
        return str(self.base["release"])

    @property
    def arch(self) -> str:
        return str(self.base["arch"])

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Values filled into ``[base]`` when the recipe leaves them out."""
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
    def bootstrap(self, dest: Path, packages: list[str], epoch: int, log: StepLog) -> None:
        """Create a root filesystem at ``dest`` (absent) with ``packages`` installed."""

    def base_packages(self) -> list[str]:
        """Packages every image of this distro needs to boot in systemd-nspawn."""
        return []

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

    def clean(self, root: Path) -> None:
        """Remove package manager caches and lists from the tree."""

    # -- what feature plugins ask, so that they never branch on the distro ----------------
    #: the ssh server's service name
    ssh_service: ClassVar[str] = "sshd"
    #: True when the distro's ssh service makes missing host keys itself on first start
    ssh_generates_host_keys: ClassVar[bool] = True
    #: how the guest configures ``host0``: "networkd" or "ifupdown"
    network_backend: ClassVar[str] = "networkd"
    #: packages for the ifupdown backend, and its service
    ifupdown_packages: ClassVar[list[str]] = ["ifupdown"]
    ifupdown_service: ClassVar[str] = "networking"
    #: the network backends the distro can run: "networkd", "ifupdown"
    network_backends: ClassVar[tuple[str, ...]] = ("networkd", "ifupdown")
    #: packages systemd-networkd needs besides systemd (Fedora ships it separately)
    networkd_packages: ClassVar[list[str]] = []
    #: packages that provide useradd/groupadd (Debian has them in an essential package)
    user_packages: ClassVar[list[str]] = []
    #: the archive component that must be enabled for NVIDIA's user-space, if any
    nonfree_component: ClassVar[str | None] = None

    def add_group_command(self, name: str, gid: int | None, system: bool) -> list[str]:
        """argv that creates a group unless it exists (run in the sandbox)."""
        argv = ["groupadd", "-f"]
        if gid is not None:
            argv += ["-g", str(gid)]
        if system:
            argv.append("-r")
        return [*argv, name]

    def add_user_command(self, name: str, *, uid: int | None, group: str | None,
                         groups: list[str], shell: str, home: str, system: bool) -> list[str]:
        """argv that creates a user with a home directory (run in the sandbox)."""
        argv = ["useradd", "-m", "-d", home, "-s", shell]
        if uid is not None:
            argv += ["-u", str(uid)]
        if group:
            argv += ["-g", group]
        if groups:
            argv += ["-G", ",".join(groups)]
        if system:
            argv.append("-r")
        return [*argv, name]

    def locale_packages(self, locales: list[str]) -> list[str]:
        """Packages that provide ``locales`` (``en_US.UTF-8``, ...)."""
        return []

    def configure_locales(self, ctx: RootfsContext, locales: list[str], lang: str) -> None:
        """Generate ``locales`` inside the image and make ``lang`` the default."""
        raise NotImplementedError(f"{self.name} does not support [features.locales] yet")

    def timezone_packages(self) -> list[str]:
        return ["tzdata"]

    def nvidia_packages(self, driver_version: str) -> list[str]:
        """NVIDIA user-space packages pinned to ``driver_version`` (the kernel module's)."""
        raise NotImplementedError(f"{self.name} has no NVIDIA user-space packages configured")

    def spec_name(self, spec: str) -> str:
        """The package name in an install spec with a pinned version (``name=1.2-*``)."""
        return spec.split("=")[0]

    def version_matches(self, installed: str, wanted: str) -> bool:
        """Whether an installed version (as ``list_packages`` gives it) is upstream ``wanted``."""
        return installed.split(":", 1)[-1].startswith(f"{wanted}-")

    def install_firstboot(self, ctx: RootfsContext, script: str) -> None:
        """Make ``script`` (a path in the image) run once, on the container's first boot.

        The default is a systemd oneshot unit guarded by a stamp file; it is ordered after the
        network is up, and a failed run is retried on the next boot.
        """
        ctx.write_file(f"/etc/systemd/system/{FIRSTBOOT_UNIT}", FIRSTBOOT_SERVICE.format(
            script=script, stamp=FIRSTBOOT_STAMP))
        ctx.enable_service(FIRSTBOOT_UNIT)


FIRSTBOOT_UNIT = "nspawnbuild-firstboot.service"
FIRSTBOOT_STAMP = "/var/lib/nspawnbuild/firstboot.done"
FIRSTBOOT_SERVICE = """\
# Generated by nspawnbuild: runs the image's first-boot commands once per container.
[Unit]
Description=nspawnbuild first-boot commands
Wants=network-online.target
After=network-online.target
ConditionPathExists=!{stamp}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={script}
ExecStartPost=/bin/mkdir -p /var/lib/nspawnbuild
ExecStartPost=/bin/touch {stamp}

[Install]
WantedBy=multi-user.target
"""


def distro_hooks(*classes: type[Distro]) -> tuple[Callable[[], list[str]],
                                                  Callable[[dict[str, Any]], Distro | None]]:
    """The two hooks of a distro plugin, for its classes::

        nspawnbuild_distro_names, nspawnbuild_make_distro = distro_hooks(Fedora)
    """
    from . import hookimpl

    known = {cls.name: cls for cls in classes}

    @hookimpl
    def nspawnbuild_distro_names() -> list[str]:
        return sorted(known)

    @hookimpl
    def nspawnbuild_make_distro(base: dict[str, Any]) -> Distro | None:
        cls = known.get(base.get("distro", ""))
        return cls(base) if cls else None

    return nspawnbuild_distro_names, nspawnbuild_make_distro
