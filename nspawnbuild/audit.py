"""Audit an image tarball for secrets and host state that must never ship in an image, and its
generated settings for ways out of the container.

Runs at the end of every build (a finding fails it, so nothing is published) and as
``nspawnbuild audit ARTIFACT`` on any tarball. Checks of the tarball:

- ``ssh-host-key``: ``/etc/ssh/ssh_host_*`` (containers from one image would share them);
- ``machine-id``: a filled ``/etc/machine-id`` or ``/var/lib/dbus/machine-id`` (every container
  would have the same id), also when the name is a symlink to a filled file; and the build
  host's machine-id at any path;
- ``resolv-conf``: an ``/etc/resolv.conf`` with the build host's content; and that content at any
  path when it is the host's own (a nameserver other than loopback, or a search domain);
- ``hostname``: an ``/etc/hostname`` (or what that symlink leads to) with the build host's name;
- ``private-key``: a PEM, OpenSSH or PGP private key anywhere in the first ``SCAN_BYTES`` of a
  file (a certificate bundle with its key, a key after a comment line); a DER key (PKCS#8,
  encrypted PKCS#8, PKCS#1 RSA or DSA, SEC1 EC) that a file starts with (a DER certificate or
  public key is not one); either of them inside a gzip, xz, zstd or bzip2 file of at most
  ``COMPRESSED_MAX`` bytes, of which at most ``INFLATE_MAX`` bytes are decompressed. A PEM key
  inside a loaded segment of an ELF program or library is a compiled-in constant, not a key
  file (libgnutls, in every Debian image, carries its self-test keys so);
- ``world-writable``: world-writable files outside tmp dirs, and world-writable directories
  without the sticky bit.

Checks of the generated ``.nspawn`` file and unit drop-in (:func:`settings_findings`):

- ``nspawn-bind``: ``Bind=``/``BindReadOnly=``/``Overlay=``/``OverlayReadOnly=`` of a host ``/``
  or of (something under) host ``/etc``, ``/root``, ``/home``, ``/run``, ``/var/run`` (the
  Docker socket), ``/proc``, ``/sys``; and ``BindUser=`` (a host user's home);
- ``nspawn-capability``: ``Capability=`` ``all``, ``CAP_SYS_ADMIN``, ``CAP_SYS_MODULE`` or
  ``CAP_SYS_RAWIO``;
- ``nspawn-private-users``: ``PrivateUsers=`` off (``no``, ``false``, ``0``...), ``identity``, or a
  range from UID 0: root in the container is root on the host;
- ``unit-devices``: ``DevicePolicy=auto`` in the drop-in, or ``DeviceAllow=`` of a block device.

Names are compared as they extract (``./etc//machine-id`` is ``/etc/machine-id``), and each
name of a file is checked as that file: a tar hardlink entry is checked with the content of the
entry it links to, and its findings are reported under its own name. A recipe allows a
finding with ``[audit] allow = ["CHECK:GLOB", ...]`` (or a bare ``GLOB``, which allows every
check for those paths), e.g. ``"private-key:/usr/share/doc/*"``; a key with two names needs
both allowed. The path of a settings finding is ``FILE:Key=value``, e.g.
``"nspawn-bind:NAME.nspawn:BindReadOnly=/etc/ssl/certs*"``.
"""

from __future__ import annotations

import bz2
import fnmatch
import io
import lzma
import posixpath
import re
import stat
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zstandard

from . import tarread  # bounded headers, every member systemd-import extracts, one error
from .host import host_machine_id, host_state

TARBALL_CHECKS = ("ssh-host-key", "machine-id", "resolv-conf", "hostname", "private-key",
                  "world-writable")
SETTINGS_CHECKS = ("nspawn-bind", "nspawn-capability", "nspawn-private-users", "unit-devices")
CHECKS = TARBALL_CHECKS + SETTINGS_CHECKS
TMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/lock/", "/var/lock/")
MACHINE_ID_PATHS = ("/etc/machine-id", "/var/lib/dbus/machine-id")
#: names whose content a check judges by the name: also judged through symlinks
NAMED_PATHS = (*MACHINE_ID_PATHS, "/etc/resolv.conf", "/etc/hostname")
#: how much of each file is searched for keys (a bound, so memory and time do not grow with a
#: file; the packer hands over this much of what it writes)
SCAN_BYTES = 4 << 20
#: compressed files up to this size are decompressed and searched ...
COMPRESSED_MAX = 1 << 20
#: ... up to this many decompressed bytes (a "zip bomb" stops here)
INFLATE_MAX = 4 << 20
#: memory a decompressor may take (xz dictionary, zstd window): more fails, unsearched
DECOMPRESSOR_MEMORY = 64 << 20
#: files up to this size are compared with the host's files
SMALL_BYTES = 64 << 10
#: symlinks followed to reach a file, as the kernel's limit
MAX_SYMLINKS = 40
#: what reading a damaged or foreign file as a tarball raises
UNREADABLE = (OSError, EOFError, ValueError, tarfile.TarError, zstandard.ZstdError,
              lzma.LZMAError)


@dataclass(frozen=True, order=True)
class Finding:
    check: str
    path: str
    detail: str

    def allowed_by(self, allow: list[str]) -> bool:
        for rule in allow:
            check, sep, pattern = rule.partition(":")
            if not sep:
                check, pattern = "", rule
            if (not check or check == self.check) and fnmatch.fnmatchcase(self.path, pattern):
                return True
        return False

    def __str__(self) -> str:
        return f"{self.check}: {self.path} ({self.detail})"


# -- private keys -----------------------------------------------------------------------------

#: a PEM (RFC 7468), OpenSSH or OpenPGP armoured private key: the BEGIN line, optional
#: RFC 1421/4880 headers (``Proc-Type:``, ``Comment:``) and the first base64 characters. A
#: bare marker string (in ssh-keygen's binary, in a parser's source) has no body and is not one.
PEM_KEY = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY(?: BLOCK)?-----[ \t]*\r?\n"
    rb"(?:[A-Za-z][A-Za-z0-9-]*: ?[^\r\n]*\r?\n)*(?:[ \t]*\r?\n)?"
    rb"[A-Za-z0-9+/]{4}")


def _oid(dotted: str) -> bytes:
    """The DER content octets of an OBJECT IDENTIFIER, so that the tables below stay readable."""
    first, second, *rest = (int(x) for x in dotted.split("."))
    out = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        while arc := arc >> 7:
            chunk.append(0x80 | arc & 0x7F)
        out += bytes(reversed(chunk))
    return bytes(out)


#: the AlgorithmIdentifier of a PKCS#8 PrivateKeyInfo, by key type
KEY_OIDS = {_oid(dotted): name for dotted, name in (
    ("1.2.840.113549.1.1.1", "RSA"), ("1.2.840.113549.1.1.10", "RSA-PSS"),
    ("1.2.840.10045.2.1", "EC"), ("1.2.840.10040.4.1", "DSA"), ("1.2.840.113549.1.3.1", "DH"),
    ("1.3.101.110", "X25519"), ("1.3.101.111", "X448"), ("1.3.101.112", "Ed25519"),
    ("1.3.101.113", "Ed448"))}
#: password-based encryption schemes of an EncryptedPrivateKeyInfo: PKCS#5 and PKCS#12 PBE
PBE_OID_PREFIXES = (_oid("1.2.840.113549.1.5"), _oid("1.2.840.113549.1.12.1"))


@dataclass(frozen=True)
class _TLV:
    tag: int
    start: int  # of the content
    end: int


def _tlv(data: bytes, pos: int, end: int) -> _TLV | None:
    """The DER element at ``pos`` if it lies wholly before ``end``, else None (not DER, or cut)."""
    if pos + 2 > end:
        return None
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > end:
            return None
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    return _TLV(tag, pos, pos + length) if pos + length <= end else None


def _children(data: bytes, seq: _TLV, limit: int = 10) -> list[_TLV]:
    """The first ``limit`` elements inside ``seq``, stopping at one that does not parse."""
    out: list[_TLV] = []
    pos = seq.start
    while len(out) < limit and (item := _tlv(data, pos, seq.end)):
        out.append(item)
        pos = item.end
    return out


SEQUENCE, INTEGER, OCTET_STRING, OID = 0x30, 0x02, 0x04, 0x06


def der_private_key(data: bytes) -> str | None:
    """The kind of DER private key that ``data`` starts with, or None.

    A certificate is SEQUENCE { SEQUENCE { [0] version ... } ... } and a public key
    SEQUENCE { SEQUENCE { OID, ... }, BIT STRING }: neither starts with INTEGER, and the
    SEQUENCE { SEQUENCE { OID ...} } shape is a key only with a PBE OID and an OCTET STRING.
    """
    outer = _tlv(data, 0, len(data))
    if outer is None or outer.tag != SEQUENCE:
        return None
    items = _children(data, outer)
    tags = [i.tag for i in items]
    value = [data[i.start:i.end] for i in items]
    if tags[:1] == [INTEGER] and value[0] in (b"\x00", b"\x01"):
        if tags[1:3] == [SEQUENCE, OCTET_STRING]:  # PKCS#8: version, algorithm, key
            alg = _children(data, items[1], 1)
            if alg and alg[0].tag == OID and data[alg[0].start:alg[0].end] in KEY_OIDS:
                return f"PKCS#8 {KEY_OIDS[data[alg[0].start:alg[0].end]]}"
        if value[0] == b"\x00" and tags[1:6] == [INTEGER] * 5 and len(value[1]) >= 64:
            return "PKCS#1 RSA" if tags[1:9] == [INTEGER] * 8 else "DSA"
        if value[0] == b"\x01" and tags[1:2] == [OCTET_STRING] and 16 <= len(value[1]) <= 66:
            return "SEC1 EC"
    if tags[:2] == [SEQUENCE, OCTET_STRING]:
        alg = _children(data, items[0], 1)
        if alg and alg[0].tag == OID and data[alg[0].start:alg[0].end].startswith(PBE_OID_PREFIXES):
            return "encrypted PKCS#8"
    return None


def elf_loaded_ranges(data: bytes) -> list[tuple[int, int]]:
    """The file ranges of the PT_LOAD segments (what a program maps into memory) when ``data``
    starts with a well-formed ELF header and program header table, else []."""
    if not data.startswith(b"\x7fELF") or len(data) < 64 or data[4] not in (1, 2) \
            or data[5] not in (1, 2) or data[6] != 1:
        return []
    order = "<" if data[5] == 1 else ">"
    if data[4] == 2:  # ELF64: e_phoff at 32, e_ehsize/e_phentsize/e_phnum at 52
        (phoff,), (ehsize, phentsize, phnum) = (struct.unpack_from(order + "Q", data, 32),
                                                struct.unpack_from(order + "HHH", data, 52))
        header, size, fields = 64, 56, order + "I4xQ8x8xQ"  # p_type, p_offset, p_filesz
    else:
        (phoff,), (ehsize, phentsize, phnum) = (struct.unpack_from(order + "I", data, 28),
                                                struct.unpack_from(order + "HHH", data, 40))
        header, size, fields = 52, 32, order + "II4x4xI"
    if ehsize != header or phentsize != size or phoff + phnum * size > len(data):
        return []
    segments = (struct.unpack_from(fields, data, phoff + i * size) for i in range(phnum))
    return [(offset, offset + filesz) for kind, offset, filesz in segments if kind == 1]


def _keys_in(data: bytes) -> list[str]:
    """What private keys ``data`` holds: a DER key it starts with, the first PEM-style key.

    A PEM key inside a loaded segment of an ELF program or library is a constant compiled into
    it (libgnutls carries its self-test keys, in every Debian and Fedora image), not a key
    file; one appended to a binary, after its segments, is still found."""
    found = []
    if der := der_private_key(data):
        found.append(f"a DER {der} private key")
    if b"PRIVATE KEY" not in data:  # a fast search first: most files have no marker at all
        return found
    loaded = elf_loaded_ranges(data)
    for m in PEM_KEY.finditer(data):
        if not any(start <= m.start() and m.end() <= end for start, end in loaded):
            kind = m.group(1).decode().strip()
            found.append(f"a {kind + ' ' if kind else ''}PEM private key at byte {m.start()}")
            break
    return found


class _Decompressor(Protocol):
    """What zlib, lzma and bz2 decompressor objects share."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


#: the decompressors of concatenable streams, by magic bytes
STREAMS: dict[bytes, tuple[str, Callable[[], _Decompressor]]] = {
    b"\x1f\x8b": ("gzip", lambda: zlib.decompressobj(wbits=31)),
    b"\xfd7zXZ\x00": ("xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ,
                                                           memlimit=DECOMPRESSOR_MEMORY)),
    b"BZh": ("bzip2", bz2.BZ2Decompressor),
}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _inflate_streams(new: Callable[[], _Decompressor], data: bytes, limit: int) -> bytes:
    """Decompress concatenated streams (as gunzip, xz and bunzip2 do) up to ``limit`` bytes,
    keeping what came before a damaged stream or trailing padding."""
    out = bytearray()
    while data and len(out) < limit:
        d = new()
        try:
            out += d.decompress(data, limit - len(out))
        except (zlib.error, lzma.LZMAError, OSError, ValueError, EOFError):
            break
        data = d.unused_data if d.eof else b""
    return bytes(out)


def _inflate_zstd(data: bytes, limit: int) -> bytes:
    """Decompress zstd frames up to ``limit`` bytes, with a bounded window."""
    out = bytearray()
    dctx = zstandard.ZstdDecompressor(max_window_size=DECOMPRESSOR_MEMORY)
    try:
        with dctx.stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
            while len(out) < limit and (chunk := reader.read(limit - len(out))):
                out += chunk
    except zstandard.ZstdError:
        pass
    return bytes(out)


def inflate(data: bytes, limit: int = INFLATE_MAX) -> tuple[str, bytes] | None:
    """``(format, first limit bytes decompressed)`` when ``data`` starts like gzip, xz, zstd or
    bzip2 data, else None. The output never exceeds ``limit`` whatever the data claims, and a
    decompressor never takes more than ``DECOMPRESSOR_MEMORY``."""
    if data.startswith(ZSTD_MAGIC):
        return "zstd", _inflate_zstd(data, limit)
    for magic, (kind, new) in STREAMS.items():
        if data.startswith(magic) and (kind != "bzip2" or data[3:4] in b"123456789"):
            return kind, _inflate_streams(new, data, limit)
    return None


def private_keys(content: bytes, size: int) -> list[str]:
    """Descriptions of the private keys in ``content``, the first bytes of a file of ``size``
    bytes; a small compressed file is searched decompressed (one level deep)."""
    found = _keys_in(content)
    if not found and 0 < size <= COMPRESSED_MAX and len(content) >= size:
        inner = inflate(content)
        if inner:
            found = [f"{key}, in {inner[0]} data" for key in _keys_in(inner[1])]
    return found


# -- host state -------------------------------------------------------------------------------

def resolv_is_host_specific(content: bytes) -> bool:
    """Whether a resolv.conf names this host's network (a nameserver other than loopback, or a
    search domain), rather than being one any machine has (systemd-resolved's stub file, which
    images ship as /usr/lib/systemd/resolv.conf)."""
    for line in content.decode(errors="replace").splitlines():
        words = line.split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver" and not words[1].startswith(("127.", "::1")):
            return True
        if words[0] in ("search", "domain") and any(w != "." for w in words[1:]):
            return True
    return False


# -- the tarball ------------------------------------------------------------------------------

def image_path(name: str) -> str:
    """A tar member name as the absolute path it extracts to: ``./etc//x/`` is ``/etc/x``."""
    return "/" + "/".join(p for p in name.split("/") if p not in ("", "."))


def resolve_image_path(path: str, symlinks: dict[str, str]) -> str | None:
    """Where ``path`` leads inside the image, following its symlinks (in any component) the way
    the kernel does with the image as root; None for a loop or a chain too long."""
    todo = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in (".", ".."):
            if part == ".." and done:
                done.pop()
            continue
        target = symlinks.get("/" + "/".join([*done, part]))
        if target is None:
            done.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            return None
        if target.startswith("/"):
            done = []
        todo = [p for p in target.split("/") if p] + todo
    return "/" + "/".join(done)


@dataclass(frozen=True)
class _Facts:
    """What the checks need to know of one file, kept for its other names: hardlink entries
    (later in the tar, with no content of their own) and symlinks (resolved at the end)."""

    mode: int
    filled: bool  # not empty and not "uninitialized": what a machine-id must not be
    host_hostname: bool
    host_resolv: bool
    content: tuple[tuple[str, str], ...]  # (check, detail) findings at any path


class Auditor:
    """Collects findings entry by entry: fed by the packer during a build (no second pass over
    the image), or by :func:`audit_tarball` from an existing tarball. ``add`` takes each entry
    with the first ``SCAN_BYTES`` of its content."""

    def __init__(self, machine: str | None = None):
        self.machine = machine
        self.hostname, self.resolv = host_state()
        self.machine_id = host_machine_id()
        self.resolv_anywhere = self.resolv is not None and resolv_is_host_specific(self.resolv)
        self.findings: list[Finding] = []
        self._files: dict[str, _Facts] = {}
        self._symlinks: dict[str, str] = {}

    def add(self, member: tarfile.TarInfo, content: bytes) -> None:
        name = image_path(member.name)
        mode = member.mode
        if name.startswith("/etc/ssh/ssh_host_") and not member.isdir():
            self.findings.append(Finding("ssh-host-key", name, "made per container at first boot"))
        if member.isdir():
            if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
                self.findings.append(Finding("world-writable", name,
                                             f"directory mode {mode:04o} without sticky bit"))
        elif member.issym():
            self._symlinks[name] = member.linkname
        elif member.islnk():
            self._add_hardlink(name, image_path(member.linkname))
        elif member.isfile():
            facts = self._facts(member, content)
            self._files[name] = facts
            self._report(name, facts, "")

    def _add_hardlink(self, name: str, target: str) -> None:
        """A second name of an earlier entry: checked as that file, reported under this name."""
        if target in self._symlinks:  # a hardlink to a symlink is the same symlink
            self._symlinks[name] = self._symlinks[target]
        elif (facts := self._files.get(target)) is not None:
            self._files[name] = facts
            self._report(name, facts, f"; a hardlink to {target}")

    def _facts(self, member: tarfile.TarInfo, content: bytes) -> _Facts:
        small = content.strip() if member.size <= SMALL_BYTES else None
        found = [("private-key", key) for key in private_keys(content, member.size)]
        if small and small == self.machine_id:
            found.append(("machine-id", "the build host's machine-id"))
        host_resolv = bool(self.resolv) and small == self.resolv
        if host_resolv and self.resolv_anywhere:
            found.append(("resolv-conf", "the build host's resolv.conf"))
        host_hostname = bool(self.hostname) and small == (self.hostname or "").encode()
        return _Facts(member.mode, small not in (b"", b"uninitialized"), host_hostname,
                      host_resolv, tuple(found))

    def _named(self, name: str, facts: _Facts) -> list[tuple[str, str]]:
        """The checks that judge the file at ``name`` by that name."""
        if name in MACHINE_ID_PATHS and facts.filled:
            return [("machine-id", "filled; must be empty")]
        if name == "/etc/resolv.conf" and facts.host_resolv:
            return [("resolv-conf", "the build host's resolv.conf")]
        if name == "/etc/hostname" and facts.host_hostname and self.hostname != self.machine:
            return [("hostname", f"the build host's name '{self.hostname}'")]
        return []

    def _report(self, name: str, facts: _Facts, via: str) -> None:
        found = [*facts.content, *self._named(name, facts)]
        if facts.mode & stat.S_IWOTH and not name.startswith(TMP_DIRS):
            found.append(("world-writable", f"mode {facts.mode:04o}"))
        self.findings += [Finding(check, name, detail + via) for check, detail in found]

    def _through_symlinks(self) -> Iterator[Finding]:
        """The named checks for names that reach a file through symlinks (``/etc/machine-id``
        -> ``/opt/id``, or a symlinked ``/etc``): the tar order does not matter."""
        for name in NAMED_PATHS:
            target = resolve_image_path(name, self._symlinks)
            facts = self._files.get(target or "")
            if target and target != name and facts is not None:
                for check, detail in self._named(name, facts):
                    yield Finding(check, name, f"{detail}; through symlinks, at {target}")

    def result(self) -> list[Finding]:
        return sorted({*self.findings, *self._through_symlinks()})


def audit_tarball(path: Path, *, machine: str | None = None) -> list[Finding]:
    """Every finding in the tarball at ``path`` (allowed or not)."""
    auditor = Auditor(machine)
    with tarread.open_tar(path) as tar:
        for member in tarread.members(tar):
            fh = tar.extractfile(member) if member.isfile() else None
            auditor.add(member, fh.read(SCAN_BYTES) if fh else b"")
    return auditor.result()


# -- the generated settings -------------------------------------------------------------------

#: host directories that a bind of, or of something under, hands the container host secrets,
#: host sockets (Docker's, systemd's, D-Bus) or kernel knobs; and "/" itself
RISKY_BIND_ROOTS = ("/etc", "/root", "/home", "/run", "/var/run", "/proc", "/sys")
RISKY_CAPABILITIES = frozenset({"ALL", "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_RAWIO"})
#: what systemd's parse_boolean() reads as false
FALSE = frozenset({"0", "no", "n", "false", "f", "off"})
#: DeviceAllow= specifiers of host block devices (disks, partitions, loops, device-mapper)
BLOCK_DEVICE = re.compile(r"^(block-|/sys/dev/block/|/dev/(sd|hd|vd|xvd|nvme|mmcblk|loop[0-9]|"
                          r"dm-|md|nbd|sr|zd|rbd|mapper/(?!control$)|disk/|block/))")


def ini_settings(text: str) -> list[tuple[str, str, str]]:
    """``(section, key, value)`` of each ``Key=value`` line of a systemd INI file, in order."""
    out, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            key, _, value = line.partition("=")
            out.append((section, key.strip(), value.strip()))
    return out


def _split_colons(value: str) -> list[str]:
    """Split at ``:`` as nspawn's extract_many_words() does: a backslash takes the next
    character literally (``\\:`` is a colon in a path)."""
    parts, current, escaped = [], "", False
    for ch in value:
        if escaped or ch not in "\\:":
            current, escaped = current + ch, False
        elif ch == "\\":
            escaped = True
        else:
            parts.append(current)
            current = ""
    return [*parts, current]


def _host_paths(key: str, value: str) -> list[str]:
    """The host paths of a Bind=/BindReadOnly= (the source) or Overlay= (all but the last)
    value; ``+path`` is inside the container and an empty source a new temporary directory."""
    parts = _split_colons(value)
    sources = parts[:1] if key.startswith("Bind") else parts[:-1]
    return ["/" + posixpath.normpath(p).lstrip("/") for p in sources if p.startswith("/")]


def _risky_bind(path: str) -> bool:
    return path == "/" or any(path == r or path.startswith(r + "/") for r in RISKY_BIND_ROOTS)


def nspawn_risks(key: str, value: str) -> list[tuple[str, str]]:
    """``(check, detail)`` for one setting of a .nspawn file."""
    if key in ("Bind", "BindReadOnly", "Overlay", "OverlayReadOnly"):
        return [("nspawn-bind", f"the host's {p} in the container")
                for p in _host_paths(key, value) if _risky_bind(p)]
    if key == "BindUser":
        return [("nspawn-bind", "a host user's home directory in the container")]
    if key == "Capability":
        caps = {c.upper() if c.upper().startswith("CAP_") or c.upper() == "ALL" else
                "CAP_" + c.upper() for c in value.replace(",", " ").split()}
        return [("nspawn-capability", f"{', '.join(sorted(caps & RISKY_CAPABILITIES))}: host "
                 "root's powers for the container")] if caps & RISKY_CAPABILITIES else []
    if key == "PrivateUsers":
        mode = value.lower()
        if mode in FALSE or mode == "identity" or mode.startswith("0:"):
            return [("nspawn-private-users", "root in the container is root on the host")]
    return []


def unit_risks(key: str, value: str) -> list[tuple[str, str]]:
    """``(check, detail)`` for one setting of the unit drop-in."""
    if key == "DevicePolicy" and value.lower() == "auto":
        return [("unit-devices", "every host device when no DeviceAllow= is set")]
    if key == "DeviceAllow" and BLOCK_DEVICE.match(value.split()[0] if value.split() else ""):
        return [("unit-devices", "a host block device (a disk holds the host's files)")]
    return []


def settings_findings(nspawn_text: str, dropin_text: str, nspawn_file: str,
                      dropin_file: str) -> list[Finding]:
    """The risky settings of a generated .nspawn file and unit drop-in, as findings that a
    recipe must allow like any other; each path is ``FILE:Key=value``."""
    found = [Finding(check, f"{nspawn_file}:{key}={value}", detail)
             for _section, key, value in ini_settings(nspawn_text)
             for check, detail in nspawn_risks(key, value)]
    found += [Finding(check, f"{dropin_file}:{key}={value}", detail)
              for _section, key, value in ini_settings(dropin_text)
              for check, detail in unit_risks(key, value)]
    return sorted(set(found))


def split(findings: list[Finding], allow: list[str]) -> tuple[list[Finding], list[Finding]]:
    """``(failing, allowed)``."""
    allowed = [f for f in findings if f.allowed_by(allow)]
    return [f for f in findings if f not in allowed], allowed
