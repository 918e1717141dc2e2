"""Files inside an image tree, resolved as if the image were ``/``: read, write, create, remove.

Every path inside an image is resolved as if the image were ``/``: an absolute symlink in the
image points into the image, and ``..`` stops at its root. A hostile or merely unlucky image
(``/etc/motd -> /etc/shadow``) can therefore never make the build write on the host.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import BuildError
from .tree import remove_tree

MAX_SYMLINKS = 40
#: the biggest image file nspawnbuild reads into memory (a package database, passwd): a step
#: could leave a sparse 100 GiB /var/lib/dpkg/status
MAX_READ = 256 << 20
COPY_CHUNK = 1 << 20


def resolve_in_root(root: Path, path: str, *, follow_final: bool = True) -> Path:
    """Map an absolute path inside the image to a host path below ``root``.

    Symlinks are followed the way the kernel would inside a chroot at ``root`` (``RESOLVE_IN_ROOT``
    semantics): absolute targets restart at ``root``, ``..`` never climbs above it.
    """
    if not path.startswith("/"):
        raise ValueError(f"path inside the image must be absolute: {path!r}")
    todo = list(reversed(PurePosixPath(path).parts[1:]))
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if (todo or follow_final) and candidate.is_symlink():
            hops += 1
            if hops > MAX_SYMLINKS:
                raise BuildError(f"too many levels of symbolic links resolving {path} in the image")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo.extend(reversed([p for p in PurePosixPath(target).parts if p != "/"]))
            continue
        done.append(part)
    return root.joinpath(*done)


def read_text_in_root(root: Path, path: str) -> str | None:
    """The text of a file inside the image (a package database), or None when it is absent."""
    host = resolve_in_root(root, path)
    if not host.is_file():
        return None
    if host.stat().st_size > MAX_READ:
        raise BuildError(f"{path} in the image is {host.stat().st_size} bytes, more than the "
                         f"{MAX_READ >> 20} MiB nspawnbuild reads; a step made it so")
    return host.read_text(encoding="utf-8", errors="replace")


def make_dirs(root: Path, path: str, mode: int = 0o755) -> Path:
    """``mkdir -p`` inside the image; every component is resolved inside ``root``."""
    if not path.startswith("/"):
        raise ValueError(f"path inside the image must be absolute: {path!r}")
    current = "/"
    host = root
    for part in PurePosixPath(path).parts[1:]:
        current = str(PurePosixPath(current) / part)
        host = resolve_in_root(root, current)
        if host.is_symlink() or (host.exists() and not host.is_dir()):
            raise BuildError(f"cannot create directory {current} in the image: a non-directory "
                             "is in the way")
        if not host.exists():
            if not host.parent.exists():  # a dangling symlink to a deeper path: make its parents
                make_dirs(root, str(PurePosixPath("/") / host.parent.relative_to(root)), mode)
            os.mkdir(host, mode)
            os.chmod(host, mode)
    return host


def _lookup_id(root: Path, table: str, name: str) -> int:
    if name.isdigit():
        return int(name)
    db = resolve_in_root(root, f"/etc/{table}")
    if db.is_file():
        for line in db.read_text(encoding="utf-8", errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[0] == name:
                return int(fields[2])
    raise BuildError(f"no {'user' if table == 'passwd' else 'group'} named '{name}' in the "
                     f"image's /etc/{table}; create it first (a post-step or the users feature)")


def parse_owner(root: Path, owner: str | None) -> tuple[int, int]:
    """Resolve ``USER[:GROUP]`` against the image's own passwd and group files."""
    if not owner:
        return 0, 0
    user, _, group = owner.partition(":")
    uid = _lookup_id(root, "passwd", user)
    if group:
        gid = _lookup_id(root, "group", group)
    elif user.isdigit():
        gid = uid
    else:
        passwd = resolve_in_root(root, "/etc/passwd").read_text(errors="replace").splitlines()
        gid = next(int(f[3]) for f in (line.split(":") for line in passwd) if f[0] == user)
    return uid, gid


def write_file(root: Path, dest: str, data: bytes, *, mode: int = 0o644,
               uid: int = 0, gid: int = 0) -> Path:
    """Write ``data`` at ``dest`` inside the image, atomically, without leaving the image."""
    return _install_file(root, dest, lambda fh: fh.write(data), mode=mode, uid=uid, gid=gid)


def copy_file(root: Path, dest: str, src: Path, *, mode: int = 0o644,
              uid: int = 0, gid: int = 0) -> Path:
    """Copy the host file ``src`` to ``dest`` inside the image like :func:`write_file`, streaming.

    The content is copied in chunks, never read into memory as a whole.
    """
    with open(src, "rb") as source:
        return _install_file(root, dest, lambda fh: shutil.copyfileobj(source, fh, COPY_CHUNK),
                             mode=mode, uid=uid, gid=gid)


def _install_file(root: Path, dest: str, fill: Callable[[BinaryIO], object], *, mode: int,
                  uid: int, gid: int) -> Path:
    """Create ``dest`` in the image through a fresh temporary file that ``fill`` writes."""
    parent = make_dirs(root, str(PurePosixPath(dest).parent))
    target = resolve_in_root(root, dest)  # always below root, by construction
    if target.is_dir():  # first: the image root itself (a symlink to /) has no parent inside
        raise BuildError(f"cannot write {dest} in the image: it is a directory")
    if target.parent != parent:
        make_dirs(root, str(PurePosixPath("/") / target.parent.relative_to(root)))
    tmp = target.parent / f".{target.name}.nspawnbuild-tmp"
    # a leftover (or planted) temporary name is removed, never opened: a FIFO there would block
    # the build, a hardlink there would be truncated
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            os.fchown(fh.fileno(), uid, gid)
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def remove_in_root(root: Path, path: str) -> None:
    """Remove a file or symlink inside the image (not following a final symlink)."""
    target = resolve_in_root(root, path, follow_final=False)
    if target.is_symlink() or target.is_file():
        target.unlink()



def empty_dir(root: Path, path: str) -> None:
    """Remove what is in the image's directory ``path`` (a cache), keeping the directory.

    Nothing happens when it is missing or a symlink: emptying never reaches out of the image.
    """
    d = resolve_in_root(root, path)
    if d.is_dir() and not d.is_symlink():
        for child in d.iterdir():
            remove_tree(child)
