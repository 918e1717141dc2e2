"""Read image tarballs that may be hostile: bounded headers, and one error naming the file.

``audit``, ``inspect``, ``diff`` and ``install`` read tarballs that may come from anywhere (CI
artifacts, a download). Python's tarfile trusts the size field of an extended header: it reads
a PAX header, a GNU long name or long link, or a sparse map into memory whole, so a 33 KiB
zstd file that decompresses to a 1 GiB PAX header makes it allocate 2 GB. Here every member's
headers are bounded before they are read:

- one extended header (PAX, GNU long name/link) at most :data:`MAX_HEADER_BYTES`;
- all the header blocks of one member (extended headers, sparse maps) at most
  :data:`MAX_MEMBER_HEADER_BYTES`, and at most :data:`MAX_EXTENDED_HEADERS` of them in a row;
- global PAX records, which tarfile keeps for the rest of the archive, at most
  :data:`MAX_HEADER_BYTES` together;
- names and link targets at most ``PATH_MAX`` bytes (no file system can hold a longer one).

The reader sees what ``systemd-import`` (GNU tar ``--ignore-zeros``) extracts: it reads on
past zero blocks, and refuses a damaged header in the middle of the archive instead of
stopping there as tarfile does (GNU tar skips it and fails the import; an audit that stopped
there would miss what follows). Every failure, whatever layer raises it (decompressor, tarfile,
a bound), becomes one :class:`TarballError` naming the file.
"""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import zstandard

from .errors import Problem, RecipeError

MAX_HEADER_BYTES = 1 << 20
MAX_MEMBER_HEADER_BYTES = 4 << 20
MAX_EXTENDED_HEADERS = 8  # a real member has at most a PAX header, a long name and a long link
MAX_NAME_BYTES = 4096  # PATH_MAX
_EXTENDED = {tarfile.XHDTYPE: "PAX extended", tarfile.SOLARIS_XHDTYPE: "PAX extended",
             tarfile.XGLTYPE: "PAX global", tarfile.GNUTYPE_LONGNAME: "GNU long name",
             tarfile.GNUTYPE_LONGLINK: "GNU long link"}
#: what reading a damaged, foreign or hostile file as a tarball raises
_UNREADABLE = (OSError, EOFError, ValueError, tarfile.TarError, zstandard.ZstdError,
               lzma.LZMAError, zlib.error)
HINT = "it is damaged or was not written as an image tarball; rebuild it or fetch it again"


class TarballError(RecipeError):
    """A tarball cannot be read (damaged, foreign, or beyond a bound). Exit code 2, as for any
    input the user has to replace."""

    def __init__(self, path: Path, why: str):
        self.path, self.why = path, why
        super().__init__(Problem(path, None, f"cannot read it as a tarball: {why}", HINT))


class _Refused(Exception):
    """A bound was hit. Not a tarfile error, so that tarfile's reader does not take it for the
    end of the archive; :func:`reading` turns it into a :class:`TarballError`."""


class _Budget(io.RawIOBase):
    """The decompressed stream, counting what is read so that one member's headers (read by
    tarfile in one go, beyond the reach of a size check: sparse maps, chains of headers)
    cannot pull more than a bound into memory."""

    def __init__(self, inner: IO[bytes]):
        self.inner = inner
        self.pos = 0
        self.limit: int | None = None  # set while a member's headers are read
        self.depth = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self.limit is not None and self.pos > self.limit:
            raise _Refused(f"the headers of one member take more than {MAX_MEMBER_HEADER_BYTES} "
                           "bytes")
        data = self.inner.read(len(buf))
        buf[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _budget_of(tar: tarfile.TarFile) -> _Budget:
    """The :class:`_Budget` under ``tar`` (stream mode wraps it in tarfile's own ``_Stream``)."""
    obj = tar.fileobj
    while not isinstance(obj, _Budget):
        obj = obj.fileobj  # type: ignore[attr-defined]
    return obj


class BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that checks the size of an extended header before tarfile reads it, and whose
    header errors in mid-archive are errors (tarfile would end the archive there)."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> BoundedTarInfo:
        budget = _budget_of(tarfile_)
        outer = budget.depth == 0
        if outer:
            budget.limit = budget.pos + MAX_MEMBER_HEADER_BYTES
        elif budget.depth >= MAX_EXTENDED_HEADERS:
            raise _Refused(f"more than {MAX_EXTENDED_HEADERS} extended headers in a row")
        budget.depth += 1
        start = tarfile_.fileobj.tell()
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.InvalidHeaderError,  # type: ignore[attr-defined]
                tarfile.TruncatedHeaderError) as e:  # type: ignore[attr-defined]
            where = "not a tar archive" if start == 0 else "damaged header"
            raise _Refused(f"{where} ({e} at byte {start})") from None
        except IndexError:  # tarfile's GNU sparse reader indexes a block cut short by the end
            raise _Refused(f"damaged header (cut short, at byte {start})") from None
        finally:
            budget.depth -= 1
            if outer:
                budget.limit = None

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        kind = _EXTENDED.get(self.type)
        if kind and self.size > MAX_HEADER_BYTES:
            raise _Refused(f"a {kind} header of {self.size} bytes at byte {self.offset}; at most "
                           f"{MAX_HEADER_BYTES} are accepted")
        if self.type == tarfile.XGLTYPE:
            kept = sum(len(k) + len(v) for k, v in tarfile_.pax_headers.items())
            if kept + self.size > MAX_HEADER_BYTES:
                raise _Refused(f"PAX global headers of more than {MAX_HEADER_BYTES} bytes "
                               f"together (at byte {self.offset})")
        member: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        for what, value in (("name", member.name), ("link target", member.linkname)):
            if len(value.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise _Refused(f"a member {what} of more than {MAX_NAME_BYTES} bytes "
                               f"(at byte {member.offset})")
        return member


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn every failure to read ``path`` as a tarball into one :class:`TarballError`."""
    try:
        yield
    except TarballError:
        raise
    except _Refused as e:
        raise TarballError(path, str(e)) from None
    except _UNREADABLE as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise TarballError(path, why) from None


@contextmanager
def open_stream(path: Path) -> Iterator[IO[bytes]]:
    """The uncompressed tar stream of ``path``, whatever its compression (by magic bytes).

    Decompression errors surface on read; wrap the reading in :func:`reading`."""
    with open(path, "rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        if magic.startswith(b"\x28\xb5\x2f\xfd"):
            with zstandard.ZstdDecompressor().stream_reader(raw) as stream:
                yield stream
        elif magic.startswith(b"\xfd7zXZ"):
            with lzma.open(raw) as stream:
                yield stream
        elif magic.startswith(b"\x1f\x8b"):
            with gzip.open(raw) as stream:
                yield stream  # type: ignore[misc]
        else:
            yield raw


@contextmanager
def open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """``path`` as a streamed TarFile with bounded headers; read members with :func:`members`.

    Any failure inside the ``with`` block that comes from reading (the caller's reads of member
    data included) becomes a :class:`TarballError` naming ``path``."""
    with reading(path), open_stream(path) as stream:
        budget = _Budget(stream)
        with tarfile.open(fileobj=budget, mode="r|", tarinfo=BoundedTarInfo,
                          ignore_zeros=True) as tar:
            yield tar


def members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of a TarFile from :func:`open_tar`, one at a time. tarfile keeps every
    TarInfo it has read (names, PAX records) for the whole archive; a stream needs none of
    them afterwards, so they are dropped and memory stays flat however many members there are.
    """
    while (member := tar.next()) is not None:
        tar.members.clear()  # type: ignore[attr-defined]
        yield member


def check(path: Path) -> int:
    """Read every header of ``path`` (a full pass, data skipped); return the member count.
    For readers that hand the stream to another program (install: systemd-import) and must
    know first that it is readable within the bounds."""
    count = 0
    with open_tar(path) as tar:
        for _member in members(tar):
            count += 1
    return count
