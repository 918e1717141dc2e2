"""The rootfs stage's own work on an image: what feature plugins get to change it (a
:class:`RootfsContext`), and scrubbing host state out of it afterwards.

File operations inside the image are :mod:`nspawnbuild.imagefs`'s (symlink-safe); commands run
inside it through the :class:`~nspawnbuild.sandbox.Sandbox`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .distro import Distro
from .errors import BuildError
from .host import host_state
from .imagefs import (
    copy_file,
    empty_dir,
    make_dirs,
    parse_owner,
    remove_in_root,
    resolve_in_root,
    write_file,
)
from .recipe.model import Recipe
from .sandbox import Sandbox
from .steplog import StepLog

# -- scrubbing --------------------------------------------------------------------------------

#: files that carry host state, secrets or run-to-run noise; removed from every image
SCRUB_FILES = (
    "/etc/resolv.conf",  # unless a symlink (to resolved's stub) or the recipe's own, see scrub()
    "/var/lib/dbus/machine-id",
    "/var/lib/systemd/random-seed",
    "/var/lib/systemd/credential.secret",
    "/var/cache/ldconfig/aux-cache",
    "/root/.bash_history",
    "/root/.lesshst",
    "/root/.viminfo",
)
#: directories emptied but kept; /dev too: systemd-nspawn mounts its own, and what a
#: bootstrapper leaves there depends on the build host (mmdebstrap makes device nodes, /dev/fd
#: and /dev/pts only where the cache's file system allows mknod: not on a nodev mount)
SCRUB_DIRS_CONTENT = ("/tmp", "/var/tmp", "/run", "/dev")


def drop_resolv_conf(root: Path) -> None:
    """Remove a regular /etc/resolv.conf: what a bootstrapper left is never the recipe's.

    Run before the features and steps, so that a resolv.conf in the finished image is one the
    recipe wrote on purpose ([features.network] dns, a [[files]] entry); a symlink (to
    resolved's stub) stays.
    """
    resolv = resolve_in_root(root, "/etc/resolv.conf", follow_final=False)
    if resolv.is_file() and not resolv.is_symlink():
        resolv.unlink()


def _is_host_resolv_conf(path: Path) -> bool:
    """An empty resolv.conf (nspawn's mount point) or the build host's: host state, not the
    recipe's. A resolv.conf with other content was written by the recipe and stays."""
    content = path.read_bytes().strip()
    return not content or content == host_state()[1]


def scrub(root: Path, hostname: str) -> None:
    """Remove host state and per-machine secrets; leave what first boot must create empty.

    - ``/etc/machine-id`` empty: systemd makes one on each container's first boot;
    - no ``/etc/ssh/ssh_host_*``: each container makes its own keys;
    - ``/etc/hostname`` is the machine name, never the build host's;
    - non-empty logs are removed (empty ones stay: packages create them with their modes).
    """
    machine_id = resolve_in_root(root, "/etc/machine-id", follow_final=False)
    if machine_id.is_symlink():
        machine_id.unlink()
    if machine_id.parent.is_dir():
        write_file(root, "/etc/machine-id", b"", mode=0o444)
    write_file(root, "/etc/hostname", f"{hostname}\n".encode())

    resolv = resolve_in_root(root, "/etc/resolv.conf", follow_final=False)
    if resolv.is_file() and not resolv.is_symlink() and _is_host_resolv_conf(resolv):
        resolv.unlink()
    for path in SCRUB_FILES[1:]:
        target = resolve_in_root(root, path, follow_final=False)
        if path == "/var/lib/dbus/machine-id" and target.is_symlink():
            continue  # Debian's symlink to /etc/machine-id is fine
        remove_in_root(root, path)

    ssh = resolve_in_root(root, "/etc/ssh")
    if ssh.is_dir() and not ssh.is_symlink():
        for key in ssh.glob("ssh_host_*"):
            key.unlink()

    for path in SCRUB_DIRS_CONTENT:
        empty_dir(root, path)

    log = resolve_in_root(root, "/var/log")
    if log.is_dir() and not log.is_symlink():
        for dirpath, _dirs, files in os.walk(log):
            for f in files:
                p = Path(dirpath) / f
                st = p.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                    p.unlink()


@dataclass
class RootfsContext:
    """What a feature plugin gets to change an image: the tree, the recipe, the distro, a log."""

    root: Path
    recipe: Recipe[Any]
    distro: Distro
    log: StepLog
    #: nspawnbuild's cache directory (downloads are kept under it by digest)
    cache: Path | None = None
    #: runs commands in the image (user namespace, own cgroup, ID-mapped overlay)
    sandbox: Sandbox | None = None

    def path(self, image_path: str) -> Path:
        """The host path of ``image_path``, resolved inside the image."""
        return resolve_in_root(self.root, image_path)

    def write_file(self, dest: str, data: bytes | str, *, mode: int = 0o644,
                   owner: str | None = None) -> Path:
        """Write a file into the image (symlink-safe, atomic)."""
        uid, gid = parse_owner(self.root, owner)
        raw = data.encode() if isinstance(data, str) else data
        return write_file(self.root, dest, raw, mode=mode, uid=uid, gid=gid)

    def copy_file(self, dest: str, src: Path, *, mode: int = 0o644,
                  owner: str | None = None) -> Path:
        """Copy a host file into the image (symlink-safe, atomic, streamed)."""
        uid, gid = parse_owner(self.root, owner)
        return copy_file(self.root, dest, src, mode=mode, uid=uid, gid=gid)

    def make_dir(self, path: str, *, mode: int = 0o755, owner: str | None = None) -> Path:
        """``mkdir -p`` inside the image; the last directory gets ``mode`` and ``owner``."""
        host = make_dirs(self.root, path)
        uid, gid = parse_owner(self.root, owner)
        os.chown(host, uid, gid, follow_symlinks=False)
        os.chmod(host, mode)
        return host

    def symlink(self, path: str, target: str) -> None:
        """Create (or replace) the symlink ``path`` -> ``target`` inside the image."""
        parent = make_dirs(self.root, str(PurePosixPath(path).parent))
        link = parent / PurePosixPath(path).name
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.exists():
            raise BuildError(f"cannot create symlink {path} in the image: a directory is there")
        os.symlink(target, link)

    def run(self, command: list[str], *, step: str, network: bool = True,
            binds_ro: Sequence[tuple[Path, str]] = ()) -> None:
        """Run a command inside the image with systemd-nspawn.

        ``binds_ro``: ``(host path, path in the container)`` pairs bound read-only for this
        command only (an input file, never a host directory the image should not see).
        """
        if self.sandbox is None:
            raise BuildError(f"{step}: no sandbox to run commands in (a RootfsContext made "
                             "outside a build)")
        self.sandbox.run(self.log, command, step=step, network=network,
                         env={"SOURCE_DATE_EPOCH": str(self.recipe.epoch)}, binds_ro=binds_ro)

    def enable_service(self, unit: str) -> None:
        """Enable a service the distro's way (systemctl or rc-update), inside the image."""
        self.run(self.distro.enable_service_command(unit), step=f"enable {unit}", network=False)
