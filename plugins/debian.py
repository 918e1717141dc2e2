"""Debian and Ubuntu: mmdebstrap (or debootstrap when mmdebstrap is missing), dpkg, apt.

No mirror is ever written here: when a recipe names none, the bootstrapper uses its own
default for the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from nspawnbuild import hookimpl
from nspawnbuild.distro import Distro, Package, distro_hooks
from nspawnbuild.errors import BuildError, HostToolMissing
from nspawnbuild.features import fail
from nspawnbuild.host import require_tool
from nspawnbuild.imagefs import read_text_in_root, resolve_in_root
from nspawnbuild.recipe import Recipe
from nspawnbuild.rootfs import RootfsContext
from nspawnbuild.sandbox import isolated
from nspawnbuild.steplog import StepLog
from nspawnbuild.tree import remove_tree

DEBOOTSTRAP_VARIANTS = {"minbase", "buildd", "fakechroot"}


def host_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        import platform

        return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _tool_version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    m = re.search(r"(\d+(?:\.\d+)+\S*)", out)
    return m.group(1) if m else out.strip() or "unknown"


def parse_dpkg_status(text: str) -> list[Package]:
    """Installed packages from /var/lib/dpkg/status (read, never executed)."""
    packages = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append(Package(fields["Package"], fields.get("Version", ""),
                                    fields.get("Architecture", ""),
                                    int(fields.get("Installed-Size", "0") or 0)))
    return sorted(packages)


class Debian(Distro):
    name = "debian"
    base_schema: ClassVar[dict[str, Any]] = {
        "snapshot": {"type": "string", "pattern": r"^\d{8}T\d{6}Z$",
                     "x-hint": "a time such as 20240101T000000Z (UTC)",
                     "description": "pin the archive to this point in time (Debian's snapshot "
                                    "archive)"},
        "snapshot_url": {"type": "string", "pattern": r"^(https?|file)://[^\s,]+$",
                         "x-hint": "the snapshot archive's base URL, http://HOST",
                         "description": "base URL of the snapshot archive (or set "
                                        "NSPAWNBUILD_SNAPSHOT_URL)"},
    }
    default_release: ClassVar[str] = "bookworm"
    default_components: ClassVar[list[str]] = ["main"]
    keyring_package: ClassVar[str] = "debian-archive-keyring"
    #: the archive's keyring on the build host, given to the bootstrapper explicitly when set
    #: (mmdebstrap and debootstrap find Debian's own)
    keyring: ClassVar[str | None] = None
    bootstrap_revision = 2  # 2: apt lists kept in the bootstrap for post-steps
    ssh_service = "ssh"
    ssh_generates_host_keys = False  # openssh-server makes keys in postinst, not at boot
    nonfree_component: ClassVar[str | None] = "non-free"
    #: NVIDIA user-space pinned to the kernel module's version (``apt`` version globs)
    nvidia_userspace: ClassVar[list[str]] = ["nvidia-smi", "libcuda1", "libnvidia-ml1"]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {"release": cls.default_release, "arch": host_arch(),
                "components": list(cls.default_components), "variant": "minbase"}

    def __init__(self, base: dict[str, Any]):
        super().__init__({**self.defaults(), **base})

    def bootstrapper(self) -> tuple[str, str]:
        if shutil.which("mmdebstrap"):
            return "mmdebstrap", _tool_version(["mmdebstrap", "--version"])
        if shutil.which("debootstrap"):
            return "debootstrap", _tool_version(["debootstrap", "--version"])
        raise HostToolMissing("mmdebstrap", "mmdebstrap",
                              f"to bootstrap {self.name} (debootstrap would do as well)")

    def base_packages(self) -> list[str]:
        # minbase has no init: systemd-sysv makes the image bootable with machinectl start,
        # dbus lets machinectl login/shell talk to it.
        return ["systemd-sysv", "dbus"]

    def snapshot_url(self) -> str | None:
        return self.base.get("snapshot_url") or os.environ.get("NSPAWNBUILD_SNAPSHOT_URL")

    def snapshot_sources(self) -> list[str]:
        """apt source lines pinning the archive to ``[base] snapshot`` (a point in time).

        Debian's snapshot archive serves every past state of the archive under
        ``/archive/<archive>/<YYYYMMDDTHHMMSSZ>/``; its Release files are old, so their
        Valid-Until is not checked.
        """
        url, stamp = (self.snapshot_url() or "").rstrip("/"), self.base["snapshot"]
        comps, rel = " ".join(self.base["components"]), self.base["release"]
        opts = "[check-valid-until=no]"
        return [f"deb {opts} {url}/archive/debian/{stamp} {rel} {comps}",
                f"deb {opts} {url}/archive/debian/{stamp} {rel}-updates {comps}",
                f"deb {opts} {url}/archive/debian-security/{stamp} {rel}-security {comps}"]

    def bootstrap(self, dest: Path, packages: list[str], epoch: int, log: StepLog) -> None:
        tool, _ = self.bootstrapper()
        base = self.base
        env = {"SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"}
        mirror = [base["mirror"]] if base.get("mirror") else []
        if base.get("snapshot"):
            if tool != "mmdebstrap":
                raise BuildError("[base] snapshot needs mmdebstrap (debootstrap takes a single "
                                 "mirror); install it with: apt-get install mmdebstrap")
            mirror = self.snapshot_sources()
        if tool == "mmdebstrap":
            argv = [
                "mmdebstrap", "--mode=root", f"--variant={base['variant']}",
                f"--architectures={base['arch']}",
                f"--components={','.join(base['components'])}",
                "--skip=output/dev",
                # keep the package lists, so that post-steps can `apt-get install` from the
                # same archive state as the bootstrap; the rootfs stage removes them
                "--skip=cleanup/apt/lists",
            ]
            if self.keyring:
                argv.append(f"--keyring={self.keyring}")
            if base.get("snapshot"):
                argv.append('--aptopt=Acquire::Check-Valid-Until "false"')
            if packages:
                argv.append(f"--include={','.join(packages)}")
            argv += [base["release"], str(dest), *mirror]
        else:
            if base["variant"] not in DEBOOTSTRAP_VARIANTS:
                raise BuildError(f"debootstrap has no variant '{base['variant']}' (it knows "
                                 f"{', '.join(sorted(DEBOOTSTRAP_VARIANTS))}); install mmdebstrap "
                                 "or change [base] variant")
            argv = ["debootstrap", f"--variant={base['variant']}", f"--arch={base['arch']}",
                    f"--components={','.join(base['components'])}"]
            if self.keyring:
                argv.append(f"--keyring={self.keyring}")
            if packages:
                argv.append(f"--include={','.join(packages)}")
            argv += [base["release"], str(dest), *mirror]
        log.run(isolated(argv), step=f"bootstrap ({tool})", env=env, shown_command=" ".join(argv))

    def locale_packages(self, locales: list[str]) -> list[str]:
        return ["locales"]

    def configure_locales(self, ctx: RootfsContext, locales: list[str], lang: str) -> None:
        # /etc/locale.gen lists "NAME CHARSET"; locale-gen compiles exactly those
        wanted = [loc for loc in locales if not loc.startswith("C.")]
        ctx.write_file("/etc/locale.gen",
                       "".join(f"{loc} {loc.partition('.')[2]}\n" for loc in wanted))
        if wanted:
            ctx.run(["locale-gen"], step="locale-gen", network=False)
        ctx.write_file("/etc/default/locale", f"LANG={lang}\n")
        ctx.write_file("/etc/locale.conf", f"LANG={lang}\n")

    def nvidia_packages(self, driver_version: str) -> list[str]:
        return [f"{pkg}={driver_version}-*" for pkg in self.nvidia_userspace]

    def install_command(self, packages: list[str]) -> list[str]:
        return ["sh", "-ec", "apt-get update && apt-get install -y --no-install-recommends "
                + " ".join(packages)]

    def list_packages(self, root: Path) -> list[Package]:
        return parse_dpkg_status(read_text_in_root(root, "/var/lib/dpkg/status") or "")

    def clean(self, root: Path) -> None:
        for pattern_dir, pattern in (("/var/lib/apt/lists", "*"), ("/var/cache/apt", "*.bin"),
                                     ("/var/cache/apt/archives", "*.deb"),
                                     ("/var/cache/debconf", "*-old"), ("/var/lib/dpkg", "*-old")):
            d = resolve_in_root(root, pattern_dir)
            if not d.is_dir() or d.is_symlink():
                continue
            for p in d.glob(pattern):
                if p.name in ("lock", "partial"):
                    continue
                if p.is_dir() and not p.is_symlink():
                    remove_tree(p)
                else:
                    p.unlink()


class Ubuntu(Debian):
    name = "ubuntu"
    base_schema: ClassVar[dict[str, Any]] = {}
    default_release = "noble"
    default_components = ["main", "universe"]
    keyring_package = "ubuntu-keyring"
    nonfree_component = "restricted"

    def nvidia_packages(self, driver_version: str) -> list[str]:
        branch = driver_version.split(".")[0]
        return [f"nvidia-utils-{branch}={driver_version}-*",
                f"libnvidia-compute-{branch}={driver_version}-*"]

    keyring: ClassVar[str | None] = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"

    def bootstrap(self, dest: Path, packages: list[str], epoch: int, log: StepLog) -> None:
        if self.keyring and not Path(self.keyring).exists():
            raise BuildError(
                f"{self.keyring} is missing on this host but is needed to verify Ubuntu's "
                "archive; on Ubuntu install it with: apt-get install ubuntu-keyring (Debian has "
                "no package for it: copy the file from an Ubuntu system or its ubuntu-keyring "
                ".deb)")
        super().bootstrap(dest, packages, epoch, log)


@hookimpl
def nspawnbuild_validate(recipe: Recipe) -> None:
    base = recipe.base
    if base.get("distro") != "debian" or not base.get("snapshot"):
        return
    if base.get("mirror"):
        fail(recipe, "base.mirror", "mirror and snapshot exclude each other",
             "the snapshot archive is the mirror; remove one of them")
    if not (base.get("snapshot_url") or os.environ.get("NSPAWNBUILD_SNAPSHOT_URL")):
        fail(recipe, "base.snapshot", "snapshot needs the snapshot archive's base URL",
             "set [base] snapshot_url = \"http://HOST\" or the environment variable "
             "NSPAWNBUILD_SNAPSHOT_URL (nspawnbuild writes no archive host name of its own)")


nspawnbuild_distro_names, nspawnbuild_make_distro = distro_hooks(Debian, Ubuntu)


__all__ = ["Debian", "Ubuntu", "require_tool"]
