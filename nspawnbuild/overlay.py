"""The image tree of a build: an overlay whose lower layer is the read-only cached bootstrap.

A build never writes into the cache: everything it does lands in its own upper layer
(``work/NAME/layer/upper``), the cached bootstrap is only ever an overlayfs lower layer. Two
builds on one base each have their own upper layer, so they cannot see each other's writes, and
a step that writes into a file in place copies it up first.

Mounts are made in the build process's private mount namespace
(:func:`nspawnbuild.namespaces.enter_private_mount_namespace`): nothing outside the build sees
them, and the kernel removes them when the build ends, however it ends.

Two ways to mount the same layers, never at once:

- *plain*, for nspawnbuild's own writes (features, ``[[files]]``, scrub) as host root;
- *ID-mapped*, for commands run in the container: both layers are bound through an ID-mapped
  mount (on-disk uid N appears as ``base + N``) before overlayfs stacks them, so the container's
  root (uid ``base`` on the host, in a user namespace) sees the image's own owners and what it
  creates is stored with the image's ids. overlayfs itself cannot be ID-mapped (the kernel
  refuses ``MOUNT_ATTR_IDMAP`` on it), its layers can.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError
from .host import run, succeeds
from .namespaces import UserNamespace, idmapped_bind, mount_as, require_private_mount_namespace

#: no metacopy (data stays in the lower layer), no index, no redirects: the upper layer is a
#: plain tree of what the build changed, and nothing in it depends on the lower layer's inodes
OVERLAY_OPTIONS = "index=off,metacopy=off,redirect_dir=off,xino=off"


def _mount(argv: list[str], what: str) -> None:
    run(argv, f"mount {what}")


def umount(path: Path) -> None:
    """Unmount ``path`` if something is mounted there (never lazily: a busy mount is an error)."""
    if _is_mountpoint(path):
        run(["umount", "--", str(path)], f"unmount {path}")


def _is_mountpoint(path: Path) -> bool:
    return succeeds(["mountpoint", "-q", "--", str(path)])


def _safe(path: Path) -> str:
    text = str(path)
    if any(c in text for c in ",:\\\n"):
        raise BuildError(f"{path}: overlayfs cannot use a path containing ',', ':' or '\\'; "
                         "use another --work-dir or --cache-dir")
    return text


@dataclass(frozen=True)
class ImageTree:
    """One build's overlay: ``lower`` (the cached base's tree), ``layer`` (upper + work dirs),
    ``merged`` (the mount point the build works on); ``above``: read-only layers between the
    base and the build's own (the cached package layer), top first."""

    lower: Path
    layer: Path
    merged: Path
    above: tuple[Path, ...] = ()

    @property
    def lowers(self) -> tuple[Path, ...]:
        """Every read-only layer, top first, as overlayfs's lowerdir lists them."""
        return (*self.above, self.lower)

    @property
    def upper(self) -> Path:
        return self.layer / "upper"

    @property
    def _work(self) -> Path:
        return self.layer / "work"

    @property
    def _maps(self) -> Path:
        return self.layer.parent / f".{self.layer.name}-maps"

    def create(self) -> None:
        for d in (self.upper, self._work, self.merged):
            d.mkdir(parents=True, exist_ok=True)
        # the upper layer's top directory is the image's "/": its mode and owner, never what the
        # caller's umask made of it
        st = self.lower.stat()
        os.chown(self.upper, st.st_uid, st.st_gid)
        os.chmod(self.upper, stat.S_IMODE(st.st_mode))

    def mount(self) -> None:
        """The plain read-write overlay at ``merged``."""
        require_private_mount_namespace()
        opts = (f"lowerdir={':'.join(_safe(p) for p in self.lowers)},upperdir={_safe(self.upper)},"
                f"workdir={_safe(self._work)},{OVERLAY_OPTIONS}")
        _mount(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.merged)],
               f"the image overlay at {self.merged}")

    def mount_read_only(self) -> None:
        """Both layers as read-only lower layers (for packing a finished tree)."""
        require_private_mount_namespace()
        self.merged.mkdir(parents=True, exist_ok=True)
        lowers = ":".join(_safe(p) for p in (self.upper, *self.lowers))
        opts = f"ro,lowerdir={lowers},{OVERLAY_OPTIONS}"
        _mount(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.merged)],
               f"the finished image at {self.merged}")

    def umount(self) -> None:
        umount(self.merged)
        for sub in ("upper", *self._lower_maps()):
            umount(self._maps / sub)

    def _lower_maps(self) -> list[str]:
        """The ID-mapped mount points of the read-only layers, top first."""
        return ["lower"] if not self.above else [f"lower{i}" for i in range(len(self.lowers))]

    @contextlib.contextmanager
    def idmapped(self, userns: UserNamespace) -> Iterator[Path]:
        """Swap the plain overlay for one on ID-mapped layers while a container runs in it."""
        umount(self.merged)
        lower_maps = [self._maps / sub for sub in self._lower_maps()]
        rw_map = self._maps / "upper"
        for d in (*lower_maps, rw_map):
            d.mkdir(parents=True, exist_ok=True)
        try:
            for layer, mapped in zip(self.lowers, lower_maps, strict=True):
                idmapped_bind(layer, mapped, userns, read_only=True)
            idmapped_bind(self.layer, rw_map, userns, read_only=False)
            lowers = ":".join(_safe(p) for p in lower_maps)
            opts = (f"lowerdir={lowers},upperdir={_safe(rw_map / 'upper')},"
                    f"workdir={_safe(rw_map / 'work')},{OVERLAY_OPTIONS}")
            mount_as(userns.base, "overlay", self.merged, opts)
            yield self.merged
        finally:
            try:
                self.umount()
            finally:
                self.mount()
