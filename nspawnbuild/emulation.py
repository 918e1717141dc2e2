"""Whether this host can run programs of an image's architecture, natively or through an
emulator that the kernel starts by itself (binfmt_misc), and what to do when it cannot.

An image for another architecture is bootstrapped and changed by running its own programs
(dpkg's maintainer scripts, the features' commands, ``[[post]]`` steps), so a build of an arm64
image on an x86-64 host works only when the kernel hands every aarch64 ELF file to qemu-user.
Without that the user gets an exec-format error deep inside mmdebstrap; :func:`check` says
before any work what is missing and how to get it (exit 2: the host's setup is the input to
fix, nothing was built).

The handler must have the F flag ("fix binary"): the kernel then opens the interpreter when the
handler is registered and uses that open file in every mount namespace and chroot. Without F it
looks the interpreter's path up when a program starts, i.e. inside the image, where no qemu is.

Names are the kernel's (``uname -m``: aarch64, armv7l, riscv64), as :attr:`Distro.machine`
gives them for ``[base] arch``. Only the kernel's interface is read (``/proc/sys/fs/binfmt_misc``),
never a distribution's registry of handlers, so handlers registered by other tools count too.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EXIT_BAD_INPUT, NspawnbuildError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
MOUNT_BINFMT = "mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc"
INSTALL_QEMU = "apt-get install qemu-user-static binfmt-support"
#: a machine name as it may appear in a manifest (which may come from anywhere): it is used in
#: a handler's file name, so it must not be able to name another path
MACHINE_PATTERN = re.compile(r"[a-z0-9_]{1,32}")

#: the ELF identity of each machine: (ELFCLASS 1=32/2=64 bit, data 1=little/2=big endian,
#: e_machine); a handler serves a machine when its magic and mask match such a header
ELF_IDENTITY: dict[str, tuple[int, int, int]] = {
    "x86_64": (2, 1, 62),
    "i686": (1, 1, 3), "i586": (1, 1, 3), "i486": (1, 1, 3), "i386": (1, 1, 3),
    "aarch64": (2, 1, 183),
    "armv7l": (1, 1, 40), "armv6l": (1, 1, 40), "armv5tel": (1, 1, 40),
    "riscv64": (2, 1, 243),
    "ppc64le": (2, 1, 21), "ppc64": (2, 2, 21), "ppc": (1, 2, 20),
    "s390x": (2, 2, 22),
    # uname -m says mips64 for both byte orders; Debian's only 64-bit MIPS port is mips64el
    "mips64": (2, 1, 8), "mips64el": (2, 1, 8),
    "loongarch64": (2, 1, 258),
}

#: qemu's name for each machine: its handler is qemu-NAME (for the messages, and to find a
#: handler when the machine's ELF identity is not known here)
QEMU_NAMES: dict[str, str] = {
    "i686": "i386", "i586": "i386", "i486": "i386",
    "armv7l": "arm", "armv6l": "arm", "armv5tel": "arm",
    "mips64": "mips64el",
}

#: machines a host runs without an emulator besides its own (conservative: an aarch64 CPU may
#: or may not run 32-bit ARM code, so armv7l on aarch64 needs a handler like any other)
NATIVE_ALSO: dict[str, frozenset[str]] = {
    "x86_64": frozenset({"i686", "i586", "i486", "i386"}),
}


class EmulatorMissing(NspawnbuildError):
    """This host cannot run the image's programs: the setup to fix is the host's (exit 2)."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Handler:
    """One binfmt_misc entry, as the kernel shows it in ``/proc/sys/fs/binfmt_misc/NAME``."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int = 0
    magic: bytes = b""
    mask: bytes = b""
    #: an extension handler (``E``) matches file names, never a header
    extension: bool = False

    @classmethod
    def parse(cls, name: str, text: str) -> Handler:
        enabled, interpreter, flags, offset, magic, mask, extension = False, "", "", 0, b"", b"", False
        for line in text.splitlines():
            word, _, rest = line.strip().partition(" ")
            rest = rest.strip()
            if word == "enabled":
                enabled = True
            elif word == "interpreter":
                interpreter = rest
            elif word == "flags:":
                flags = rest
            elif word == "offset":
                offset = int(rest) if rest.isdigit() else 0
            elif word == "magic":
                magic = _hex(rest)
            elif word == "mask":
                mask = _hex(rest)
            elif word == "extension":
                extension = True
        return cls(name, enabled, interpreter, flags, offset, magic, mask, extension)

    def matches(self, header: bytes) -> bool:
        """Whether the kernel would hand a program starting with ``header`` to this handler."""
        if self.extension or not self.magic:
            return False
        mask = self.mask or b"\xff" * len(self.magic)
        part = header[self.offset:self.offset + len(self.magic)]
        if len(part) < len(self.magic):
            return False
        return all((h & m) == (g & m) for h, g, m in zip(part, self.magic, mask, strict=False))


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def elf_header(machine: str) -> bytes | None:
    """The first 20 bytes of an executable ELF file for ``machine`` (ident, e_type, e_machine),
    or None when its identity is not known here."""
    ident = ELF_IDENTITY.get(machine)
    if ident is None:
        return None
    bits, order, e_machine = ident
    fmt = "<HH" if order == 1 else ">HH"
    return b"\x7fELF" + bytes([bits, order, 1]) + bytes(9) + struct.pack(fmt, 2, e_machine)


def qemu_handler_name(machine: str) -> str:
    """The name Debian's qemu-user-static gives the handler of ``machine`` (qemu-aarch64)."""
    return "qemu-" + QEMU_NAMES.get(machine, machine)


def runs_natively(machine: str, host: str) -> bool:
    """Whether a ``host`` CPU runs ``machine`` programs itself (same machine, or i686 on
    x86-64); anything else needs an emulator."""
    return machine == host or machine in NATIVE_ALSO.get(host, frozenset())


@dataclass(frozen=True)
class Runner:
    """How this host runs the image's programs: natively, or by the binfmt_misc ``handler``."""

    machine: str
    host: str
    handler: str | None = None
    interpreter: str | None = None
    #: things worth telling the user that do not stop the build
    notes: tuple[str, ...] = field(default=())

    @property
    def native(self) -> bool:
        return self.handler is None

    def describe(self) -> str:
        if self.native:
            return f"{self.machine} programs run natively on this {self.host} host"
        return (f"{self.machine} programs run under emulation: binfmt_misc handler "
                f"{self.handler} ({self.interpreter})")


def read_handlers(binfmt_dir: Path) -> list[Handler]:
    """Every handler registered in ``binfmt_dir`` (``register`` and ``status`` are not ones)."""
    found = []
    for entry in sorted(binfmt_dir.iterdir()):
        if entry.name in ("register", "status"):
            continue
        try:
            found.append(Handler.parse(entry.name, entry.read_text(errors="replace")))
        except OSError:
            continue
    return found


def _handler_for(machine: str, handlers: list[Handler]) -> list[Handler]:
    """The handlers that would serve ``machine``: by its ELF header when known, else by
    qemu's name; best first (enabled with F before the rest)."""
    header = elf_header(machine)
    if header is not None:
        serving = [h for h in handlers if h.matches(header)]
    else:
        serving = [h for h in handlers if h.name == qemu_handler_name(machine)]
    return sorted(serving, key=lambda h: (not h.enabled, "F" not in h.flags, h.name))


def check(machine: str, host: str, *, binfmt_dir: Path | None = None,
          purpose: str = "build") -> Runner:
    """How this ``host`` runs ``machine`` programs, or :class:`EmulatorMissing` saying what
    to install and run. ``purpose`` words the message: "build" or "run"; ``binfmt_dir`` is
    the kernel's (:data:`BINFMT_DIR`, looked up when called) unless given."""
    binfmt_dir = binfmt_dir or BINFMT_DIR
    if not MACHINE_PATTERN.fullmatch(machine):
        raise EmulatorMissing(f"{machine[:40]!r} is not a machine name (uname -m) this tool knows")
    if runs_natively(machine, host):
        return Runner(machine, host)
    qemu = qemu_handler_name(machine)
    what = (f"to {purpose} an image for {machine} on this {host} host, the kernel must hand "
            f"{machine} programs to an emulator (qemu-user, through binfmt_misc)")
    enable = f"update-binfmts --enable {qemu}"
    if not (binfmt_dir / "status").is_file():
        raise EmulatorMissing(f"{what}, but binfmt_misc is not mounted at {binfmt_dir}; mount "
                              f"it with: {MOUNT_BINFMT}; then, if qemu is not installed yet: "
                              f"{INSTALL_QEMU}; and: {enable}")
    try:
        status = (binfmt_dir / "status").read_text().strip()
    except OSError as e:
        raise EmulatorMissing(f"{what}, but {binfmt_dir / 'status'} cannot be read "
                              f"({e.strerror})") from None
    if status != "enabled":
        raise EmulatorMissing(f"{what}, but binfmt_misc is {status or 'off'} on this host; "
                              f"turn it on with: echo 1 > {binfmt_dir / 'status'}")
    serving = _handler_for(machine, read_handlers(binfmt_dir))
    if not serving:
        raise EmulatorMissing(f"{what}, but no binfmt_misc handler for {machine} is registered; "
                              f"install qemu-user with: {INSTALL_QEMU}; then: {enable}")
    best = serving[0]
    if not best.enabled:
        raise EmulatorMissing(f"{what}, but its binfmt_misc handler {best.name} is disabled; "
                              f"enable it with: update-binfmts --enable {best.name}")
    if "F" not in best.flags:
        raise EmulatorMissing(
            f"{what}, but its binfmt_misc handler {best.name} is registered without the F flag "
            f"(flags: {best.flags or 'none'}), so the kernel would look for its interpreter "
            f"{best.interpreter} inside the image, where there is none; register it with F: "
            f"{INSTALL_QEMU} (Debian's qemu-user-static registers its handlers with F), then: "
            f"update-binfmts --disable {best.name} && update-binfmts --enable {best.name}")
    notes: tuple[str, ...] = ()
    if not Path(best.interpreter).exists():
        # with F the kernel holds the interpreter open since it was registered, so programs
        # still start (a container sharing the host's kernel sees the host's handlers but not
        # its files); a removed qemu is gone after the next reboot, though
        notes = (f"the interpreter {best.interpreter} of binfmt_misc handler {best.name} does "
                 "not exist on this file system; the kernel still holds it open (F flag), so "
                 f"{machine} programs run, but reinstall it to keep it so: apt-get install "
                 "--reinstall qemu-user-static",)
    return Runner(machine, host, best.name, best.interpreter, notes)
