"""Downloads pinned by sha256 and cached by digest (``[[sources]]``).

``CACHE/sources/SHA256`` is a file whose content has that sha256, or nothing: a download goes
to a temporary name beside it, is hashed while it streams, and is renamed into place only when
its digest is the expected one. A lock per digest keeps two builds from downloading the same
file at once (the second waits, then finds it in the cache).

A file put at that path by hand (pre-seeding, for a build host without network) is used
without any request once its digest is checked. A file there whose content has another digest
(a wrong or truncated copy) is removed and downloaded again; if that download fails too, the
error says so. Every use of a cached file checks its digest again, so a file damaged in the
cache is never installed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import stat
import urllib.error
import urllib.request
from pathlib import Path

from . import __version__
from .errors import BuildError
from .lock import exclusive
from .pack import sha256_file
from .steplog import StepLog

SOURCES_DIR = "sources"
CHUNK = 1 << 20
#: seconds a connection attempt or a read may take before the download is given up
TIMEOUT = 60


def cache_path(cache: Path, sha256: str) -> Path:
    """Where the file with this sha256 is kept: ``CACHE/sources/SHA256``."""
    return cache / SOURCES_DIR / sha256.lower()


file_sha256 = sha256_file  # the one streaming file digest of the project


def fetch(url: str, sha256: str, cache: Path, *, timeout: float = TIMEOUT,
          log: StepLog | None = None) -> Path:
    """Return the path of the cached file with ``sha256``, downloading it from ``url`` first
    unless the cache already holds it. Raise :class:`BuildError` (without a traceback) when
    the download fails or its digest is not ``sha256``."""
    expected = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ValueError(f"not a sha256: {sha256!r}")
    try:
        return _fetch(url, expected, cache, timeout, log)
    except OSError as e:  # the cache itself: not writable, full, ...
        raise BuildError(f"cannot keep the download of {url} in the cache "
                         f"{cache / SOURCES_DIR}: {e.strerror or e}") from None


def _fetch(url: str, expected: str, cache: Path, timeout: float, log: StepLog | None) -> Path:
    dest = cache_path(cache, expected)
    note = log.note if log else (lambda _text: None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(dest.parent / f".{expected}.lock", wait=True, what=f"download of {url}"):
        # any partial download of this digest is stale: its writer would hold the lock
        for stale in dest.parent.glob(f".{expected}.part-*"):
            stale.unlink(missing_ok=True)
        removed = ""
        if os.path.lexists(dest):
            try:
                st = dest.stat()
            except OSError as e:
                raise BuildError(f"cannot use the cached file {dest}: {e.strerror}; remove it "
                                 "and build again") from None
            if not stat.S_ISREG(st.st_mode):
                raise BuildError(f"{dest} is not a regular file; remove it (it is where the "
                                 f"download of {url} is kept) and build again")
            actual = file_sha256(dest)
            if actual == expected:
                note(f"source {url}: using {dest} (sha256 checked)")
                return dest
            note(f"source {url}: {dest} has sha256 {actual}, not {expected}; removed, "
                 "downloading again")
            removed = (f"\n  a file at {dest} had sha256 {actual}, not {expected}, and was "
                       "removed")
            dest.unlink()
        tmp = dest.parent / f".{expected}.part-{os.getpid()}"
        note(f"source {url}: downloading to {dest}")
        try:
            try:
                actual, size = _download(url, tmp, timeout)
            except _DownloadFailed as e:
                raise BuildError(
                    f"cannot download {url}: {e}\n"
                    "  where the build host cannot reach it, download the file elsewhere, check "
                    f"it with `sha256sum`, and copy it to {dest} (pre-seeding the cache: a file "
                    f"there whose sha256 matches is used without any download){removed}") from None
            if actual != expected:
                raise BuildError(
                    f"sha256 mismatch for {url}\n"
                    f"  expected: {expected} (the recipe's sha256)\n"
                    f"  actual:   {actual} (the {size} bytes downloaded)\n"
                    "  the download was discarded. If this file is the right one (check it, "
                    "e.g. against its publisher's checksums), put its sha256 in the recipe; "
                    "otherwise fix the URL")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        note(f"source {url}: {size} bytes, sha256 {actual}")
        return dest


class _DownloadFailed(Exception):
    """The server or the network failed; the message says how, in a few words."""


def _download(url: str, tmp: Path, timeout: float) -> tuple[str, int]:
    """Stream ``url`` into a new file ``tmp``, hashing as it goes; return (sha256, size)."""
    h = hashlib.sha256()
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": f"nspawnbuild/{__version__}"})
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length") if response.headers else None
                while chunk := response.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    _write_all(fd, chunk, url, tmp)
                # read(n) of a body cut short ends quietly, without IncompleteRead
                if length and length.isdigit() and size != int(length):
                    raise _DownloadFailed(f"the connection ended after {size} of {length} bytes")
        except urllib.error.HTTPError as e:
            raise _DownloadFailed(f"the server answered HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            reason = e.reason
            raise _DownloadFailed(
                f"timed out after {timeout:g} s" if isinstance(reason, TimeoutError)
                else getattr(reason, "strerror", None) or str(reason)) from None
        except TimeoutError:
            raise _DownloadFailed(f"timed out after {timeout:g} s") from None
        except (http.client.HTTPException, OSError, ValueError) as e:
            # a connection reset or a body shorter than its Content-Length, mid-download
            raise _DownloadFailed(f"{type(e).__name__}: {e}" if str(e)
                                  else type(e).__name__) from None
        try:
            os.fsync(fd)
        except OSError as e:
            raise BuildError(f"cannot write the download of {url} to {tmp}: {e.strerror}") from None
    finally:
        os.close(fd)
    return h.hexdigest(), size


def _write_all(fd: int, data: bytes, url: str, tmp: Path) -> None:
    """Write all of ``data``; a full disk is a BuildError, not a failed download."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError as e:
            raise BuildError(f"cannot write the download of {url} to {tmp}: "
                             f"{e.strerror}") from None
        view = view[n:]
