"""The kernel interfaces the build's isolation rests on: a private mount namespace, a user
namespace file descriptor, and ID-mapped bind mounts.

Python 3.11 has no ``os.unshare`` and no wrappers for the new mount API, and util-linux 2.38
(Debian 12) ignores ``X-mount.idmap``; these are the few system calls, called through libc.
The mount-API system call numbers are the same on every architecture (they come after the
syscall-table unification at 403).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import threading
from pathlib import Path

from .errors import BuildError

CLONE_NEWNS = 0x00020000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_entered = False


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def enter_private_mount_namespace() -> bool:
    """Move this process into a mount namespace of its own, with private propagation.

    Every mount the build makes (the image's overlay, its ID-mapped layers) then exists only
    for this process and its children, and the kernel drops them all when the last of them
    exits, SIGKILL included: a killed build can leave no mount on the host. Must run before
    the process starts threads (unshare(CLONE_NEWNS) needs an unshared filesystem context).
    Returns False when it cannot be done (not root); the rootfs stage then refuses to run.
    """
    global _entered
    if _entered:
        return True
    if os.geteuid() != 0 or threading.active_count() > 1:
        return False
    if _libc.unshare(CLONE_NEWNS) != 0:
        return False
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    _entered = True
    return True


def in_private_mount_namespace() -> bool:
    return _entered


def require_private_mount_namespace() -> None:
    if not _entered and not enter_private_mount_namespace():
        raise BuildError("nspawnbuild builds need root (mount namespaces, overlayfs, user "
                         "namespaces); run the build as root")


class UserNamespace:
    """A user namespace that maps ``0..size-1`` to ``base..base+size-1``, kept by an fd.

    Made the way systemd-nspawn makes its own: a child process unshares a user namespace,
    the parent writes its maps and keeps a handle on the namespace; the child then exits.
    """

    def __init__(self, base: int, size: int = 65536):
        self.base, self.size = base, size
        child = subprocess.Popen(["unshare", "--user", "--", "sleep", "60"])
        try:
            ns_link = f"/proc/{child.pid}/ns/user"
            for _ in range(2000):  # until the child has unshared (its namespace differs from ours)
                if os.readlink(ns_link) != os.readlink("/proc/self/ns/user"):
                    break
                threading.Event().wait(0.001)
            else:
                raise BuildError("could not create a user namespace (unshare --user)")
            for kind in ("uid_map", "gid_map"):
                Path(f"/proc/{child.pid}/{kind}").write_text(f"0 {base} {size}\n")
            self.fd = os.open(ns_link, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            child.kill()
            child.wait()

    def close(self) -> None:
        os.close(self.fd)


def idmapped_bind(source: Path, target: Path, userns: UserNamespace, *, read_only: bool) -> None:
    """Bind ``source`` at ``target`` so that on-disk id N appears as ``userns.base + N``.

    A process in the container (uid 0 there is ``base`` on the host) then sees the image's
    files with the owners they have on disk, and what it creates is stored on disk with its
    in-container ids: uid 0 in the image stays uid 0 in the tarball.
    """
    fd = _check(_libc.syscall(
        SYS_OPEN_TREE, AT_FDCWD, os.fsencode(source), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC),
        f"open_tree {source}")
    try:
        attr = _MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV | (MOUNT_ATTR_RDONLY if read_only else 0),
                          0, 0, userns.fd)
        _check(_libc.syscall(
            SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
            f"ID-map {source} (needs Linux >= 5.12 and a filesystem that supports ID-mapped mounts)")
        _check(_libc.syscall(
            SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, os.fsencode(target), MOVE_MOUNT_F_EMPTY_PATH),
            f"mount {target}")
    finally:
        os.close(fd)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def mount_as(fsid: int, fstype: str, target: Path, options: str) -> None:
    """mount(2) with the filesystem ids ``fsid`` (all capabilities kept), in a forked child.

    overlayfs does its own work in its upper layer (the work dir, whiteouts, copy-up) with the
    credentials of whoever mounted it. On ID-mapped layers those must be the container's root
    (``base``): host uid 0 has no mapping there and every such operation would fail with
    EOVERFLOW. The child sets fsuid/fsgid, raises again the file capabilities that changing
    fsuid drops, and mounts; exec would reset the fsuid, so it calls mount(2) itself.
    """
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            _libc.setfsgid(fsid)
            _libc.setfsuid(fsid)
            header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
            data = (_CapData * 2)()
            if _libc.capget(ctypes.byref(header), data) == 0:
                for d in data:
                    d.effective = d.permitted
                _libc.capset(ctypes.byref(header), data)
            if _libc.mount(fstype.encode(), os.fsencode(target), fstype.encode(), 0,
                           options.encode()) != 0:
                code = ctypes.get_errno() or 1
        except BaseException:
            code = 255
        os.write(err_w, str(code).encode())
        os._exit(0)
    os.close(err_w)
    try:
        result = os.read(err_r, 16).decode() or "255"
    finally:
        os.close(err_r)
        os.waitpid(pid, 0)
    if result != "0":
        code = int(result)
        raise BuildError(f"could not mount {fstype} at {target}: "
                         f"{os.strerror(code) if code < 255 else 'internal error'}")
