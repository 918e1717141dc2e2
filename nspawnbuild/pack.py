"""Deterministic, streaming PAX tar of an image tree, compressed with zstd, xz, gzip or not.

The same tree gives the same bytes on any machine: entries sorted by name, numeric owners with
empty names, mtimes clamped to SOURCE_DATE_EPOCH, xattrs (file capabilities) kept as PAX
``SCHILY.xattr.*`` records, hardlinks kept, device nodes and sockets dropped, no absolute or
``..`` names. Files are streamed: memory use does not grow with the image.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from .atomic import replacing

SUFFIXES = {"zstd": ".tar.zst", "xz": ".tar.xz", "gzip": ".tar.gz", "none": ".tar"}
COPY_BUFSIZE = 1 << 20
MAX_ZSTD_WORKERS = 4


@dataclass
class PackResult:
    """What the manifest records about a packed image."""

    tar_sha256: str
    tar_size: int
    sha256: str
    size: int
    tree_bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"tar_sha256": self.tar_sha256, "tar_size": self.tar_size,
                "sha256": self.sha256, "size": self.size, "tree_bytes": self.tree_bytes,
                "counts": dict(sorted(self.counts.items())), "dropped": self.dropped}


class _HashingWriter:
    """A write-only file object that hashes and counts bytes before passing them on."""

    def __init__(self, inner: IO[bytes]):
        self.inner = inner
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.inner.write(data)
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


def walk_sorted(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield ``(archive name, path)`` depth-first, siblings sorted by their byte names.

    Names start with ``./`` like the tarballs of debootstrap and mmdebstrap. Like
    ``tar --one-file-system``, a directory on another filesystem (something mounted into the
    tree) is listed but not entered: a mount is never image content.
    """
    root_dev = root.lstat().st_dev

    def rec(rel: bytes, path: bytes) -> Iterator[tuple[str, Path]]:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = rel + b"/" + entry.name
            yield os.fsdecode(name), Path(os.fsdecode(entry.path))
            if entry.is_dir(follow_symlinks=False) and \
                    entry.stat(follow_symlinks=False).st_dev == root_dev:
                yield from rec(name, entry.path)
    yield from rec(b".", os.fsencode(root))


def _xattrs(path: Path) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in sorted(names):
        if name.startswith("system.posix_acl") or name.startswith("security.selinux"):
            # POSIX ACLs are not carried (package managers set none; a recipe that needs one
            # sets it in a first-boot command); SELinux labels are host policy, not image data.
            continue
        value = os.getxattr(path, name, follow_symlinks=False)
        out["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return out


class _TarInfo(tarfile.TarInfo):
    """A TarInfo whose PAX records hold raw bytes, without a ``hdrcharset=BINARY`` record.

    tarfile marks every header with a non-UTF-8 value (most binary file capabilities) with
    ``hdrcharset=BINARY``; GNU tar, which systemd-import runs, does not know that keyword and
    warns on each import. ``SCHILY.xattr.*`` values are raw bytes by convention (star, GNU tar,
    libarchive), and GNU tar writes names it cannot convert as raw bytes too, so every value is
    written as its original bytes and the record is left out.
    """

    @classmethod
    def _create_pax_generic_header(cls, pax_headers, type, encoding):  # type: ignore[no-untyped-def]
        records = b""
        for keyword, value in pax_headers.items():
            key = keyword.encode("utf-8")
            raw = value.encode(encoding, "surrogateescape")
            length = len(key) + len(raw) + 3  # ' ' + '=' + '\n'
            n = p = 0
            while True:  # the length field counts its own digits
                n = length + len(str(p))
                if n == p:
                    break
                p = n
            records += str(p).encode("ascii") + b" " + key + b"=" + raw + b"\n"
        info = {"name": "././@PaxHeader", "type": type, "size": len(records),
                "magic": tarfile.POSIX_MAGIC}
        return (cls._create_header(info, tarfile.USTAR_FORMAT, "ascii", "replace")  # type: ignore[attr-defined]
                + cls._create_payload(records))  # type: ignore[attr-defined]


def make_tarinfo(name: str, path: Path, st: os.stat_result, epoch: int) -> tarfile.TarInfo:
    info = _TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = min(int(st.st_mtime), epoch)
    info.pax_headers = _xattrs(path)
    return info


#: called for every archived entry (hardlinks and the top directory included) with its header
#: and, for files, the first INSPECT_BYTES of the content as written, so that a check (the
#: audit) needs no second pass over the image
Inspector = Callable[[tarfile.TarInfo, bytes], None]
INSPECT_BYTES = 4 << 20  # the audit's SCAN_BYTES


class _Tap:
    """Reads through to ``inner`` and keeps the first ``limit`` bytes read: the inspector sees
    exactly the bytes that go into the tar, without reading the file a second time."""

    def __init__(self, inner: IO[bytes], limit: int):
        self.inner = inner
        self.room = limit
        self.chunks: list[bytes] = []

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        if self.room > 0 and data:
            self.chunks.append(data[:self.room])
            self.room -= len(self.chunks[-1])
        return data

    def kept(self) -> bytes:
        return b"".join(self.chunks)


def write_tar(root: Path, fileobj: IO[bytes], epoch: int,
              inspect: Inspector | None = None) -> PackResult:
    """Write the deterministic tar of ``root`` to ``fileobj``; return digests and counts."""
    hashing = _HashingWriter(fileobj)
    counts: dict[str, int] = {}
    dropped: list[str] = []
    tree_bytes = 0
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      encoding="utf-8", errors="surrogateescape", bufsize=COPY_BUFSIZE) as tar:
        tar.copybufsize = COPY_BUFSIZE
        root_st = root.lstat()
        top = make_tarinfo(".", root, root_st, epoch)
        top.type = tarfile.DIRTYPE
        if inspect:
            inspect(top, b"")
        tar.addfile(top)
        for name, path in walk_sorted(root):
            st = path.lstat()
            info = make_tarinfo(name, path, st, epoch)
            mode = st.st_mode
            if stat.S_ISREG(mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    info.type = tarfile.LNKTYPE
                    info.linkname = links[key]
                    counts["hardlinks"] = counts.get("hardlinks", 0) + 1
                    if inspect:  # a second name is checked as the file it names
                        inspect(info, b"")
                    tar.addfile(info)
                    continue
                if st.st_nlink > 1:
                    links[key] = name
                info.type = tarfile.REGTYPE
                info.size = st.st_size
                tree_bytes += st.st_size
                counts["files"] = counts.get("files", 0) + 1
                with open(path, "rb") as fh:
                    if inspect:
                        tap = _Tap(fh, INSPECT_BYTES)
                        tar.addfile(info, tap)
                        inspect(info, tap.kept())
                    else:
                        tar.addfile(info, fh)
                continue
            if stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
                counts["dirs"] = counts.get("dirs", 0) + 1
            elif stat.S_ISLNK(mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                counts["symlinks"] = counts.get("symlinks", 0) + 1
            elif stat.S_ISFIFO(mode):
                info.type = tarfile.FIFOTYPE
                counts["fifos"] = counts.get("fifos", 0) + 1
            else:  # device nodes and sockets are not image content
                dropped.append(name)
                continue
            if inspect:
                inspect(info, b"")
            tar.addfile(info)
    return PackResult(hashing.hash.hexdigest(), hashing.size, "", 0, tree_bytes, counts, dropped)


def pack(root: Path, dest: Path, epoch: int, compression: str = "zstd", level: int = 9,
         threads: int | None = None, inspect: Inspector | None = None) -> PackResult:
    """Pack ``root`` into ``dest``, written under a temporary name and renamed when complete.

    zstd always runs in multi-threaded mode (``threads`` >= 1): its output is identical for any
    worker count but differs from single-threaded mode, so the bytes never depend on the
    number of CPU cores.
    """
    with replacing(dest) as tmp:
        with open(tmp, "wb") as raw:
            out = _HashingWriter(raw)
            if compression == "zstd":
                # zstd's memory grows with its workers (about 60 MiB each at level 12), so the
                # default is capped; the bytes are the same for any count >= 1
                workers = threads or min(MAX_ZSTD_WORKERS, len(os.sched_getaffinity(0)))
                cctx = zstandard.ZstdCompressor(level=level, threads=max(1, workers),
                                                write_checksum=True)
                with cctx.stream_writer(out, closefd=False) as comp:  # type: ignore[arg-type]
                    result = write_tar(root, comp, epoch, inspect)
            elif compression == "xz":
                with lzma.LZMAFile(out, "wb", preset=level) as comp:  # type: ignore[arg-type]
                    result = write_tar(root, comp, epoch, inspect)
            elif compression == "gzip":
                with gzip.GzipFile(filename="", mode="wb", fileobj=out,
                                   compresslevel=level, mtime=0) as comp:
                    result = write_tar(root, comp, epoch, inspect)  # type: ignore[arg-type]
            elif compression == "none":
                result = write_tar(root, out, epoch, inspect)  # type: ignore[arg-type]
            else:
                raise ValueError(f"unknown compression {compression!r}")
            raw.flush()
            os.fsync(raw.fileno())
        result.sha256 = out.hash.hexdigest()
        result.size = out.size
    return result
