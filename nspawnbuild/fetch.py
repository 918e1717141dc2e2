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

A recipe is untrusted input, so everything it names is bounded:

- a download stops at its size cap (``max_size``) and its deadline (``timeout``, the whole
  download, not one read); what was received is removed and nothing enters the cache;
- a ``file://`` source is a *local input*, like a ``[[files]]`` src: it must resolve, through
  every symbolic link, inside the directory of the recipe that names it (as a container build
  reads only its context), never under /proc, /sys or /dev, and be a regular file; and the
  digest of a local file that does not match is never printed, so that the tool is no oracle
  for the sha256 of files it may not read. :func:`confine` and :func:`open_confined` are the
  one implementation of that rule (``nspawnbuild.recipe`` uses them at load time too).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .atomic import remove_leftovers, replacing
from .digests import sha256_file
from .errors import BuildError
from .lock import exclusive
from .schema import SOURCE_TIMEOUT_DEFAULT
from .steplog import StepLog

#: what follows a download's digest in its temporary name (``.SHA256.part-XXXXXX``)
PART_MARK = ".part-"
SOURCES_DIR = "sources"
CHUNK = 1 << 20
#: seconds a connection attempt or a read may take before the download is given up
TIMEOUT = 60
#: a source's size cap unless its recipe sets ``max_size`` (the schema's default, "4G")
DEFAULT_MAX_SIZE = 4 << 30
#: seconds a whole download may take unless its recipe sets ``timeout``
DEFAULT_DEADLINE = SOURCE_TIMEOUT_DEFAULT
#: host pseudo-filesystems: never a recipe's input, wherever the recipe is
PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def cache_path(cache: Path, sha256: str) -> Path:
    """Where the file with this sha256 is kept: ``CACHE/sources/SHA256``."""
    return cache / SOURCES_DIR / sha256.lower()




# -- local inputs: confined to the recipe's directory -----------------------------------------

class Refused(Exception):
    """A local input the recipe may not read. ``str()`` says what is wrong, ``hint`` how to fix it."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def _copy_hint(root: Path) -> str:
    return (f"a recipe may read only files in its own directory {root} and below: copy the "
            "file into it and name it relative to the recipe")


def confine(root: Path, name: str) -> Path:
    """The real path of ``name`` (absolute, or relative to ``root``) once every symbolic link is
    followed; :class:`Refused` unless it is inside ``root`` and outside /proc, /sys and /dev.

    Checking the *final* target is what stops ``../``, absolute paths and links out alike; the
    pseudo-filesystems are refused even for a recipe kept under them (``/proc/self/environ``
    holds the build's secrets, ``/dev/zero`` never ends)."""
    if "\x00" in name:
        raise Refused(f"{name!r} contains a NUL byte", "remove it")
    base = Path(os.path.realpath(root))
    given = Path(name)
    lexical = Path(os.path.normpath(given if given.is_absolute() else base / given))
    real = Path(os.path.realpath(given if given.is_absolute() else base / given))
    for top in PSEUDO_FILESYSTEMS:
        if lexical.is_relative_to(top):
            raise Refused(f"'{name}' is under {top}, a host pseudo-filesystem; a recipe may "
                          "not read it", _copy_hint(base))
        if real.is_relative_to(top):
            raise Refused(f"'{name}' is a symbolic link (or goes through one) to {real}, under "
                          f"{top}, a host pseudo-filesystem; a recipe may not read it",
                          _copy_hint(base))
    if real.is_relative_to(base):
        return real
    if lexical.is_relative_to(base):
        raise Refused(f"'{name}' is a symbolic link (or goes through one) to {real}, outside "
                      f"the recipe's directory {base}",
                      "put the file itself in the recipe's directory instead of a link to it")
    what = "is outside" if given.is_absolute() else "leads (through '..') outside"
    raise Refused(f"'{name}' {what} the recipe's directory {base}", _copy_hint(base))


def _kind(mode: int) -> str:
    """What a non-regular file is, in words for a message."""
    for test, words in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device")):
        if test(mode):
            return words
    return "not a regular file"


def check_confined(root: Path, name: str) -> tuple[Path, os.stat_result]:
    """:func:`confine`, then ``stat`` the result: a regular file, or :class:`Refused`.

    The type is checked without opening the file, so that a device or a FIFO is never opened
    (opening some devices has effects, and a FIFO blocks). OSError (a missing file, ...) is
    left to the caller, whose message names the file as the recipe does."""
    real = confine(root, name)
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"'{name}' is {_kind(st.st_mode)}, not a regular file",
                      "a recipe's inputs must be regular files in its directory")
    return real, st


def open_confined(root: Path, name: str) -> tuple[int, Path, os.stat_result]:
    """Open ``name`` for reading as :func:`check_confined` allows it: (fd, real path, stat).

    ``O_NOFOLLOW | O_NONBLOCK`` and a check that the open file is the one that was checked
    (same device and inode, and, where /proc says, still inside ``root``) leave no window in
    which a link or FIFO swapped in could be read or could hang the build."""
    real, st = check_confined(root, name)
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        now = os.fstat(fd)
        inside = _fd_inside(fd, Path(os.path.realpath(root)))
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not inside:
            raise Refused(f"'{name}' changed while it was being opened",
                          "make sure nothing changes the recipe's directory during a build")
    except BaseException:
        os.close(fd)
        raise
    return fd, real, now


def _fd_inside(fd: int, base: Path) -> bool:
    """Whether the kernel's name for the open ``fd`` is inside ``base`` (True without /proc)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True
    return Path(target.removesuffix(" (deleted)")).is_relative_to(base)


def read_confined(root: Path, name: str, limit: int, limit_hint: str) -> tuple[bytes, Path]:
    """The content and real path of a local input (see :func:`open_confined`): at most
    ``limit`` bytes, else :class:`Refused` with ``limit_hint``."""
    fd, real, st = open_confined(root, name)
    try:
        if st.st_size > limit:
            raise Refused(f"'{name}' is {st.st_size} bytes, more than the {limit} it may have",
                          limit_hint)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(CHUNK, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew since stat
                raise Refused(f"'{name}' grew past {limit} bytes while it was read", limit_hint)
    finally:
        os.close(fd)
    return b"".join(chunks), real


def local_path(url: str) -> str:
    """The file a ``file://`` URL names (percent-decoded); :class:`Refused` when it names a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise Refused(f"the file:// URL names the host '{parts.netloc}'",
                      "a file:// URL names a file on the build host: file:///PATH")
    return urllib.parse.unquote(parts.path)


def is_local(url: str) -> bool:
    return url[:7].lower() == "file://"


# -- fetching ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """What one source may cost: at most ``max_size`` bytes, within ``deadline`` seconds."""

    max_size: int = DEFAULT_MAX_SIZE
    deadline: float = DEFAULT_DEADLINE


class LimitExceeded(BuildError):
    """A source passed its ``max_size`` or ``timeout``: one line naming the setting to raise."""


def _size(n: int) -> str:
    """``n`` bytes as a recipe writes max_size where it can ("1M"), with the exact number."""
    for power, unit in ((4, "T"), (3, "G"), (2, "M"), (1, "K")):
        if n >= 1024 ** power and n % 1024 ** power == 0:
            return f"{n // 1024 ** power}{unit} ({n} bytes)"
    return f"{n} bytes"


def _too_large(url: str, limits: Limits, what: str) -> LimitExceeded:
    """``what``: how the source was found too large ("is larger than", "announces N bytes, more than")."""
    return LimitExceeded(
        f"{url} {what} its max_size of {_size(limits.max_size)}; nothing was kept. If the file "
        "really is that large, raise max_size in its [[sources]] entry (e.g. max_size = \"8G\")")


def _too_slow(url: str, limits: Limits, size: int) -> LimitExceeded:
    return LimitExceeded(
        f"{url} did not finish within its timeout of {limits.deadline:g} s ({size} bytes "
        "received); nothing was kept. On a slow link, raise timeout (seconds) in its "
        "[[sources]] entry")


def fetch(url: str, sha256: str, cache: Path, *, root: Path | None = None,
          limits: Limits | None = None, timeout: float = TIMEOUT,
          log: StepLog | None = None) -> Path:
    """Return the path of the cached file with ``sha256``, downloading it from ``url`` first
    unless the cache already holds it. Raise :class:`BuildError` (without a traceback) when
    the download fails, passes ``limits``, or its digest is not ``sha256``.

    A ``file://`` URL is read only inside ``root``, the directory of the recipe that names it
    (see :func:`confine`); without ``root`` it is refused."""
    expected = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ValueError(f"not a sha256: {sha256!r}")
    try:
        return _fetch(url, expected, cache, root, limits or Limits(), timeout, log)
    except OSError as e:  # the cache itself: not writable, full, ...
        raise BuildError(f"cannot keep the download of {url} in the cache "
                         f"{cache / SOURCES_DIR}: {e.strerror or e}") from None


def _fetch(url: str, expected: str, cache: Path, root: Path | None, limits: Limits,
           timeout: float, log: StepLog | None) -> Path:
    dest = cache_path(cache, expected)
    note = log.note if log else (lambda _text: None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(dest.parent / f".{expected}.lock", wait=True, what=f"download of {url}"):
        # any partial download of this digest is stale: its writer would hold the lock
        remove_leftovers(dest.parent, expected, PART_MARK)
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
            actual = sha256_file(dest)
            if actual == expected:
                note(f"source {url}: using {dest} (sha256 checked)")
                return dest
            note(f"source {url}: {dest} has sha256 {actual}, not {expected}; removed, "
                 "downloading again")
            removed = (f"\n  a file at {dest} had sha256 {actual}, not {expected}, and was "
                       "removed")
            dest.unlink()
        note(f"source {url}: {'copying' if is_local(url) else 'downloading'} to {dest}")
        # 0644 whatever the umask: the file is bound read-only into the build's container, whose
        # root is an unprivileged host uid (a user namespace) and reads it as "other"
        with replacing(dest, mode=0o644, mark=PART_MARK) as tmp:
            try:
                actual, size = (_copy_local(url, root, tmp, limits) if is_local(url)
                                else _download(url, tmp, timeout, limits))
            except _DownloadFailed as e:
                raise BuildError(
                    f"cannot download {url}: {e}\n"
                    "  where the build host cannot reach it, download the file elsewhere, check "
                    f"it with `sha256sum`, and copy it to {dest} (pre-seeding the cache: a file "
                    f"there whose sha256 matches is used without any download){removed}") from None
            if actual != expected:
                raise BuildError(_mismatch(url, expected, actual, size))
        note(f"source {url}: {size} bytes, sha256 {actual}")
        return dest


def _mismatch(url: str, expected: str, actual: str, size: int) -> str:
    """The message for a digest mismatch. A download's actual digest is printed (pinning a new
    version is copying it); a local file's is not: that would tell a recipe the sha256 of any
    file it can name, one guess at a time."""
    if is_local(url):
        return (f"sha256 mismatch for {url}\n"
                f"  expected: {expected} (the recipe's sha256)\n"
                "  the local file has another sha256, which is not printed for local files; "
                "compute it yourself with `sha256sum FILE` and put it in the recipe")
    return (f"sha256 mismatch for {url}\n"
            f"  expected: {expected} (the recipe's sha256)\n"
            f"  actual:   {actual} (the {size} bytes downloaded)\n"
            "  the download was discarded. If this file is the right one (check it, "
            "e.g. against its publisher's checksums), put its sha256 in the recipe; "
            "otherwise fix the URL")


class _DownloadFailed(Exception):
    """The server or the network failed; the message says how, in a few words."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        #: the HTTP status the server answered, when it answered one
        self.status = status


class DownloadFailed(BuildError):
    """A download by :func:`download` failed: ``str()`` says what and how, ``status`` is the
    HTTP status when the server answered one (404: the file is not there)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def download(url: str, dest: Path, limits: Limits, timeout: float = TIMEOUT) -> tuple[str, int]:
    """Download ``url`` (http or https) into ``dest`` whole or not at all, within ``limits``
    (the same downloader, watchdog and bounds as a recipe's sources, without the cache): its
    (sha256, size). A download that fails or passes a limit leaves nothing at ``dest`` and
    raises :class:`DownloadFailed` (or :class:`LimitExceeded`)."""
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise DownloadFailed(f"cannot download {url}: only http:// and https:// are fetched")
    with replacing(dest, mode=0o600) as tmp:
        try:
            return _download(url, tmp, timeout, limits)
        except _DownloadFailed as e:
            raise DownloadFailed(f"cannot download {url}: {e}", e.status) from None


def _new_part(tmp: Path) -> int:
    """The descriptor of the download's temporary file, which ``atomic.replacing`` has just
    created for this download alone (never through a link)."""
    return os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)


def _copy_local(url: str, root: Path | None, tmp: Path, limits: Limits) -> tuple[str, int]:
    """Copy a ``file://`` source, confined to ``root``, into ``tmp``: (sha256, size)."""
    if root is None:
        raise BuildError(f"{url}: a file:// source is read only inside the directory of the "
                         "recipe that names it, and none was given")
    try:
        src, _real, st = open_confined(root, local_path(url))
    except Refused as e:
        raise BuildError(f"{url}: {e} ({e.hint})") from None
    except OSError as e:
        raise BuildError(f"cannot read {url}: {e.strerror}") from None
    try:
        if st.st_size > limits.max_size:
            raise _too_large(url, limits, f"is {st.st_size} bytes, more than")
        deadline = time.monotonic() + limits.deadline
        h = hashlib.sha256()
        size = 0
        fd = _new_part(tmp)
        try:
            while True:
                try:
                    chunk = os.read(src, CHUNK)
                except OSError as e:
                    raise BuildError(f"cannot read {url}: {e.strerror}") from None
                if not chunk:
                    break
                size += len(chunk)
                if size > limits.max_size:
                    raise _too_large(url, limits, "grew while it was copied, past")
                h.update(chunk)
                _write_all(fd, chunk, url, tmp)
                if time.monotonic() > deadline:
                    raise _too_slow(url, limits, size)
        finally:
            os.close(fd)
    finally:
        os.close(src)
    return h.hexdigest(), size


class _Watchdog:
    """Shuts a download's connection down at its deadline, wherever http.client waits in it.

    A socket timeout bounds one read only: a server sending a byte now and then (or headers
    one at a time) would hold the build forever without this."""

    def __init__(self, seconds: float):
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def watch(self, sock: socket.socket | None) -> None:
        """Called with each connection's socket (a redirect opens another one)."""
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shutdown()

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._sock = None

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):  # closed meanwhile: nothing to stop
                self._sock.shutdown(socket.SHUT_RDWR)


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """An opener for http and https only (redirects included), whose connections ``watchdog``
    can shut down. Proxies from the environment are honoured as by urlopen."""

    class Http(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    class Https(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    class HttpHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(Http, req)

    class HttpsHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(Https, req)

    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), HttpHandler(), HttpsHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPRedirectHandler(),
                    urllib.request.HTTPErrorProcessor(), urllib.request.UnknownHandler()):
        opener.add_handler(handler)
    return opener


def _download(url: str, tmp: Path, timeout: float, limits: Limits) -> tuple[str, int]:
    """Stream ``url`` into a new file ``tmp``, hashing as it goes; return (sha256, size).

    ``limits`` hold for the whole download: more than ``max_size`` bytes, or still running at
    the deadline, is :class:`LimitExceeded` (the caller removes ``tmp``)."""
    request = urllib.request.Request(url, headers={"User-Agent": f"nspawnbuild/{__version__}"})
    watchdog = _Watchdog(limits.deadline)
    received = [0]
    fd = _new_part(tmp)
    try:
        watchdog.start()
        try:
            with _opener(watchdog).open(request, timeout=min(timeout, limits.deadline)) as response:
                try:
                    result = _receive(response, fd, url, tmp, limits, watchdog, received)
                finally:
                    watchdog.stop()
        except urllib.error.HTTPError as e:
            raise _DownloadFailed(f"the server answered HTTP {e.code} {e.reason}",
                                  e.code) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            if watchdog.fired:
                raise _too_slow(url, limits, received[0]) from None
            raise _DownloadFailed(_network_failure(e, timeout)) from None
        try:
            os.fsync(fd)
        except OSError as e:
            raise BuildError(f"cannot write the download of {url} to {tmp}: {e.strerror}") from None
    finally:
        watchdog.stop()
        os.close(fd)
    return result


def _network_failure(e: Exception, timeout: float) -> str:
    """A failed connection or read, in a few words."""
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(e, urllib.error.URLError):
        return getattr(reason, "strerror", None) or str(reason)
    # a connection reset or a body shorter than its Content-Length, mid-download
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _receive(response: http.client.HTTPResponse, fd: int, url: str, tmp: Path, limits: Limits,
             watchdog: _Watchdog, received: list[int]) -> tuple[str, int]:
    """Read the body into ``fd`` one socket read at a time, within ``limits``."""
    length = response.headers.get("Content-Length") if response.headers else None
    announced = int(length) if length and length.isdigit() else None
    if announced is not None and announced > limits.max_size:
        raise _too_large(url, limits, f"announces {announced} bytes, more than")
    h = hashlib.sha256()
    size = 0
    while chunk := response.read1(CHUNK):
        size += len(chunk)
        received[0] = size
        if size > limits.max_size:
            raise _too_large(url, limits, "sent more than")
        h.update(chunk)
        _write_all(fd, chunk, url, tmp)
    if watchdog.fired and size != announced:
        raise _too_slow(url, limits, size)
    # read1 of a body cut short ends quietly, without IncompleteRead
    if announced is not None and size != announced:
        raise _DownloadFailed(f"the connection ended after {size} of {announced} bytes")
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
