"""Audit an image tarball for secrets and host state that must never ship in an image.

Runs at the end of every build (a finding fails it, so nothing is published) and as
``nspawnbuild audit ARTIFACT`` on any tarball. Checks:

- ``ssh-host-key``: ``/etc/ssh/ssh_host_*`` (containers from one image would share them);
- ``machine-id``: a filled ``/etc/machine-id`` (every container would have the same id);
- ``resolv-conf``: an ``/etc/resolv.conf`` with the build host's content;
- ``hostname``: an ``/etc/hostname`` with the build host's name;
- ``private-key``: any file that starts like a PEM or OpenSSH private key;
- ``world-writable``: world-writable files outside tmp dirs, and world-writable directories
  without the sticky bit.

A recipe allows a finding with ``[audit] allow = ["CHECK:GLOB", ...]`` (or a bare ``GLOB``,
which allows every check for those paths), e.g. ``"private-key:/usr/share/doc/*"``.
"""

from __future__ import annotations

import fnmatch
import gzip
import lzma
import socket
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

CHECKS = ("ssh-host-key", "machine-id", "resolv-conf", "hostname", "private-key", "world-writable")
TMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/lock/", "/var/lock/")
PEM_MARKERS = (b"-----BEGIN OPENSSH PRIVATE KEY-----", b"PRIVATE KEY-----")
HEAD = 4096
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


@contextmanager
def open_tarball(path: Path) -> Iterator[IO[bytes]]:
    """The uncompressed tar stream of ``path``, whatever its compression (by magic bytes)."""
    with open(path, "rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        if magic.startswith(b"\x28\xb5\x2f\xfd"):
            with zstandard.ZstdDecompressor().stream_reader(raw) as stream:
                yield stream  # type: ignore[misc]
        elif magic.startswith(b"\xfd7zXZ"):
            with lzma.open(raw) as stream:
                yield stream  # type: ignore[misc]
        elif magic.startswith(b"\x1f\x8b"):
            with gzip.open(raw) as stream:
                yield stream  # type: ignore[misc]
        else:
            yield raw


def host_state() -> tuple[str | None, bytes | None]:
    """The build host's hostname and resolv.conf, to recognise them in an image."""
    try:
        resolv = Path("/etc/resolv.conf").read_bytes().strip() or None
    except OSError:
        resolv = None
    return socket.gethostname() or None, resolv


class Auditor:
    """Collects findings entry by entry: fed by the packer during a build (no second pass over
    the image), or by :func:`audit_tarball` from an existing tarball."""

    def __init__(self, machine: str | None = None):
        self.machine = machine
        self.hostname, self.resolv = host_state()
        self.findings: list[Finding] = []

    def add(self, member: tarfile.TarInfo, head: bytes) -> None:
        name = "/" + member.name.removeprefix("./").lstrip("/")
        mode = member.mode
        found = self.findings
        if name.startswith("/etc/ssh/ssh_host_") and not member.isdir():
            found.append(Finding("ssh-host-key", name, "made per container at first boot"))
        if member.isdir():
            if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
                found.append(Finding("world-writable", name,
                                     f"directory mode {mode:04o} without sticky bit"))
            return
        if not member.isfile():
            return
        if mode & stat.S_IWOTH and not name.startswith(TMP_DIRS):
            found.append(Finding("world-writable", name, f"mode {mode:04o}"))
        if name == "/etc/machine-id" and head.strip() not in (b"", b"uninitialized"):
            found.append(Finding("machine-id", name, "filled; must be empty"))
        elif name == "/etc/resolv.conf" and self.resolv and head.strip() == self.resolv:
            found.append(Finding("resolv-conf", name, "the build host's resolv.conf"))
        elif name == "/etc/hostname" and self.hostname:
            value = head.decode(errors="replace").strip()
            if value == self.hostname and value != self.machine:
                found.append(Finding("hostname", name, f"the build host's name '{value}'"))
        first_line = head.lstrip().split(b"\n", 1)[0]
        if first_line.startswith(b"-----BEGIN") and any(m in first_line for m in PEM_MARKERS):
            found.append(Finding("private-key", name, "a private key"))

    def result(self) -> list[Finding]:
        return sorted(set(self.findings))


def audit_tarball(path: Path, *, machine: str | None = None) -> list[Finding]:
    """Every finding in the tarball at ``path`` (allowed or not)."""
    from . import tarread  # bounded headers, every member systemd-import extracts, one error

    auditor = Auditor(machine)
    with tarread.open_tar(path) as tar:
        for member in tarread.members(tar):
            fh = tar.extractfile(member) if member.isfile() else None
            auditor.add(member, fh.read(HEAD) if fh else b"")
    return auditor.result()


def split(findings: list[Finding], allow: list[str]) -> tuple[list[Finding], list[Finding]]:
    """``(failing, allowed)``."""
    allowed = [f for f in findings if f.allowed_by(allow)]
    return [f for f in findings if f not in allowed], allowed
