"""Debian and Ubuntu: mmdebstrap (or debootstrap when mmdebstrap is missing), dpkg, apt.

No mirror is ever written here: when a recipe names none, the bootstrapper uses its own
default for the suite.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import os
import platform
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from nspawnbuild import host, pkgcache
from nspawnbuild.distro import Distro, ImageRunner, Package
from nspawnbuild.errors import BuildError, HostToolMissing, Problem
from nspawnbuild.fetch import Refused, read_confined
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.imagefs import read_text_in_root, remove_in_root, resolve_in_root
from nspawnbuild.recipe.sourcemap import SourceMap
from nspawnbuild.sandbox import isolated
from nspawnbuild.steplog import StepLog
from nspawnbuild.tree import remove_tree

DEBOOTSTRAP_VARIANTS = {"minbase", "buildd", "fakechroot"}
#: apt tells a keyring's format by its name: binary .gpg or armored .asc
KEYRING_PATH = r"^[^\x00-\x1f\x7f,\"]+\.(gpg|asc)$"
MAX_KEYRING_BYTES = 1 << 20

#: the ``[base]`` keys of Debian's archive layout, shared by Debian and Ubuntu (the core
#: schema held them before distros had schemas of their own; the entries are unchanged)
ARCHIVE_SCHEMA: dict[str, Any] = {
    "mirror": {"type": "string", "pattern": r"^(https?|file)://[^\s,]+$",
               "x-hint": "a URL such as http://HOST/debian, without spaces"},
    "components": {"type": "array", "minItems": 1, "uniqueItems": True,
                   "items": {"type": "string", "pattern": r"^[a-z0-9-]+$"}},
    "variant": {"type": "string", "pattern": r"^[a-z-]+$"},
}
#: where a keyring named by an absolute path may be: the system's keyring directories (a
#: recipe reads no other host file; a relative path is a file beside the recipe)
SYSTEM_KEYRING_DIRS = ("/usr/share/keyrings", "/etc/apt/keyrings", "/etc/apt/trusted.gpg.d")
MAX_KEYRINGS = 16
KEYRING_SCHEMA: dict[str, Any] = {
    "keyring": {
        "anyOf": [{"type": "string", "pattern": KEYRING_PATH},
                  {"type": "array", "minItems": 1, "maxItems": MAX_KEYRINGS, "uniqueItems": True,
                   "items": {"type": "string", "pattern": KEYRING_PATH}}],
        "x-hint": "an OpenPGP keyring file (.gpg or .asc) beside the recipe, or in "
                  + ", ".join(SYSTEM_KEYRING_DIRS) + "; or a list of them",
        "description": "the keyrings that verify the archive (default: the distro's own); for "
                       "Ubuntu from a Debian host, or a third-party archive"},
}
#: apt's own name for the check it weakens: a Release file past its Valid-Until
VALID_UNTIL_SCHEMA: dict[str, Any] = {
    "check_valid_until": {
        "type": "boolean",
        "description": "false: accept the archive's Release file after its Valid-Until date "
                       "(a stale mirror of testing/unstable); weakens apt's protection against "
                       "replayed old archives, in the build and in the image's own apt"},
}
#: Debian's snapshot archive (its /archive/NAME/TIME/ layout); Ubuntu has no such archive
SNAPSHOT_SCHEMA: dict[str, Any] = {
    "snapshot": {"type": "string", "pattern": r"^\d{8}T\d{6}Z$",
                 "x-hint": "a time such as 20240101T000000Z (UTC)",
                 "description": "pin the archive to this point in time (Debian's snapshot "
                                "archive)"},
    "snapshot_url": {"type": "string", "pattern": r"^(https?|file)://[^\s,]+$",
                     "x-hint": "the snapshot archive's base URL, http://HOST",
                     "description": "base URL of the snapshot archive (or set "
                                    "NSPAWNBUILD_SNAPSHOT_URL)"},
}


@functools.cache
def host_arch() -> str:
    """The build host's Debian architecture, the default of ``[base] arch``.

    Asked of dpkg once per process: it is part of every Debian recipe's defaults, and the
    answer cannot change while nspawnbuild runs.
    """
    try:
        return host.run(["dpkg", "--print-architecture"], "ask dpkg for the architecture").strip()
    except (BuildError, OSError):  # no dpkg (a Fedora host): the kernel's name, in Debian's words
        return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


#: apt's message for a pin it cannot satisfy: E: Version '535.309.01-*' for 'nvidia-smi' was not found
MISSING_VERSION = re.compile(r"Version '([^']+)' for '([^']+)' was not found")


def archive_versions(lists: Path, names: set[str]) -> dict[str, list[str]]:
    """``{package: [versions]}`` for ``names`` from apt's downloaded Packages files (text,
    Debian's control format), each list sorted and without repeats."""
    found: dict[str, set[str]] = {}
    for packages in sorted(lists.glob("*_Packages")):
        for stanza in packages.read_text(errors="replace").split("\n\n"):
            fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                          if ": " in line and not line[0].isspace())
            if fields.get("Package") in names and "Version" in fields:
                found.setdefault(fields["Package"], set()).add(fields["Version"])
    return {name: sorted(versions) for name, versions in found.items()}


def deb_file_key(name: str) -> tuple[str, str, str] | None:
    """``(package, version, arch)`` of a .deb by the name apt gives its downloads
    (NAME_VERSION_ARCH.deb, the epoch's colon escaped as %3a); None for any other name."""
    parts = name.removesuffix(".deb").split("_")
    if not name.endswith(".deb") or len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1].replace("%3a", ":"), parts[2]


def parse_dpkg_status(text: str) -> list[Package]:
    """Installed packages from /var/lib/dpkg/status (read, never executed); ``Source:`` (with
    its version in parentheses when it differs) names the source package, else the package's
    own name is its source's."""
    packages = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            source = fields.get("Source", "").split(" ")[0] or fields["Package"]
            packages.append(Package(fields["Package"], fields.get("Version", ""),
                                    fields.get("Architecture", ""),
                                    int(fields.get("Installed-Size", "0") or 0), source=source))
    return sorted(packages)


#: a package name as dpkg allows it: it becomes a path below /usr/share/doc
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")
#: the most of a copyright file that is read (the largest in Debian are a few MiB)
MAX_COPYRIGHT = 8 << 20
#: bounds on what one copyright file declares (libc6's, the most in debian-base, names 37)
MAX_LICENSES = 256
MAX_LICENSE_NAME = 200


def copyright_licenses(text: str) -> str:
    """The licenses a machine-readable (DEP-5) copyright file declares, in its own words:
    the first line of each ``License:`` field of its header and ``Files:`` paragraphs, each
    once, in the order they appear, joined with `` AND `` (a compound one in parentheses);
    empty when the file is not machine-readable (free-form text declares nothing a tool can
    read)."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text.strip()) if p.strip()]
    if not paragraphs or not re.search(r"^Format:.*copyright-format/1\.0", paragraphs[0],
                                       re.MULTILINE | re.IGNORECASE):
        return ""
    found: list[str] = []
    for i, paragraph in enumerate(paragraphs):
        fields = {m.group(1).lower(): m.group(2).strip()
                  for m in re.finditer(r"^([A-Za-z-]+):[ \t]*(.*)$", paragraph, re.MULTILINE)}
        if "license" not in fields or not (i == 0 or "files" in fields):
            continue
        name = fields["license"]
        if name and len(name) <= MAX_LICENSE_NAME and name not in found:
            found.append(name)
        if len(found) > MAX_LICENSES:  # not a copyright file a package ships: declares nothing
            return ""
    return " AND ".join(f"({n})" if re.search(r"\s(and|or)\s", n, re.IGNORECASE) else n
                        for n in found)


def read_copyright(root: Path, package: str) -> str:
    """The declared licenses of ``package`` from /usr/share/doc/PACKAGE/copyright in the image,
    resolved inside the image (a symlink there cannot lead out of it); empty when the file is
    absent (docs excluded), too large or not machine-readable."""
    if not PACKAGE_NAME.match(package):
        return ""
    path = resolve_in_root(root, f"/usr/share/doc/{package}/copyright")
    try:
        with open(path, "rb", opener=_no_follow) as fh:
            if not os.path.isfile(f"/proc/self/fd/{fh.fileno()}"):
                return ""
            data = fh.read(MAX_COPYRIGHT + 1)
    except OSError:
        return ""
    if len(data) > MAX_COPYRIGHT:
        return ""
    return copyright_licenses(data.decode("utf-8", errors="replace"))


def _no_follow(path: str, flags: int) -> int:
    """Open a file of the image: never through a final symlink, and without blocking on a
    FIFO a step left in its place (the caller then sees it is not a regular file)."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def _packages_digests(fh: BinaryIO, wanted: set[tuple[str, str, str]],
                      found: dict[tuple[str, str, str], str]) -> None:
    """Read one Packages file's stanzas into ``found`` (the first digest of a key wins)."""
    fields: dict[str, str] = {}
    for raw in itertools.chain(fh, [b"\n"]):
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        if not line.strip():
            key = (fields.get("Package", ""), fields.get("Version", ""),
                   fields.get("Architecture", ""))
            if key in wanted and "SHA256" in fields:
                found.setdefault(key, fields["SHA256"])
            fields = {}
        elif line[0] not in " \t" and ": " in line:
            k, _, v = line.partition(": ")
            if k in ("Package", "Version", "Architecture", "SHA256"):
                fields[k] = v.strip()


#: where a lock file's pins are while the image is built (removed before it is packed)
PINS_FILE = "/etc/apt/preferences.d/nspawnbuild-lock.pref"


def pin_preferences(pins: Mapping[str, str]) -> str:
    """apt preferences that make each pinned version the one apt installs (priority 1001:
    also over a newer one, and when a post-step installs the package later)."""
    return "".join(f"Package: {name}\nPin: version {version}\nPin-Priority: 1001\n\n"
                   for name, version in sorted(pins.items()))


def release_files(lists: Path) -> list[dict[str, Any]]:
    """The archive's state from apt's lists: each (In)Release file's origin, suite, codename,
    date and sha256 (not its file name, which holds the mirror's host)."""
    found: list[dict[str, Any]] = []
    if not lists.is_dir() or lists.is_symlink():
        return found
    for path in sorted(lists.iterdir()):
        if not path.name.endswith(("_InRelease", "_Release")):
            continue
        try:
            with open(path, "rb", opener=_no_follow) as fh:
                if not os.path.isfile(f"/proc/self/fd/{fh.fileno()}"):
                    continue
                data = fh.read(MAX_COPYRIGHT + 1)
        except OSError:
            continue
        fields = {m.group(1): m.group(2) for m in re.finditer(
            r"^(Origin|Suite|Codename|Date|Valid-Until): *(.*)$",
            data.decode("utf-8", errors="replace"), re.MULTILINE)}
        found.append({**{k.lower(): v.strip() for k, v in sorted(fields.items())},
                      "sha256": hashlib.sha256(data).hexdigest()})
    return found


def archive_digests(lists: Path, wanted: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """``{(package, version, arch): sha256}`` of the .deb files apt's Packages lists give for
    ``wanted``; the lists are read line by line (a release's main is tens of MiB), only
    regular files, never through a symlink."""
    found: dict[tuple[str, str, str], str] = {}
    if not lists.is_dir() or lists.is_symlink():
        return found
    for path in sorted(lists.glob("*_Packages")):
        try:
            with open(path, "rb", opener=_no_follow) as fh:
                if os.path.isfile(f"/proc/self/fd/{fh.fileno()}"):
                    _packages_digests(fh, wanted, found)
        except OSError:
            continue
    return found


class Debian(Distro):
    """Debian: mmdebstrap (or debootstrap) from the archive or a snapshot of it, dpkg, apt."""

    name = "debian"
    purl_type = "deb"
    base_schema: ClassVar[dict[str, Any]] = {**ARCHIVE_SCHEMA, **KEYRING_SCHEMA, **VALID_UNTIL_SCHEMA,
                                             **SNAPSHOT_SCHEMA}
    default_release: ClassVar[str] = "trixie"
    #: each release's systemd (its package in the archive at release time)
    systemd_by_release: ClassVar[Mapping[str, int]] = {"bullseye": 247, "bookworm": 252,
                                                       "trixie": 257}
    machine_names: ClassVar[Mapping[str, str]] = {
        "amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l", "armel": "armv5tel",
        "i386": "i686", "ppc64el": "ppc64le", "mips64el": "mips64", "loong64": "loongarch64"}
    default_components: ClassVar[list[str]] = ["main"]
    keyring_package: ClassVar[str] = "debian-archive-keyring"
    #: the archive's keyring on the build host, given to the bootstrapper explicitly when set
    #: (mmdebstrap and debootstrap find Debian's own)
    keyring: ClassVar[str | None] = None
    bootstrap_revision = 2  # 2: apt lists kept in the bootstrap for post-steps
    traits: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        # openssh-server makes host keys in its postinst, not at boot: the image would ship
        # the build's keys, so the ssh feature makes them on each container's first start
        "ssh": {"service": "ssh", "generates_host_keys": False},
        # /etc/locale.gen and locale-gen, from the "locales" package
        "locales": {"style": "locale-gen"},
        # NVIDIA's user-space pinned to the kernel module's version (apt version globs); it is
        # in the archive's non-free component
        "gpu-nvidia": {"packages": ["nvidia-smi={version}-*", "libcuda1={version}-*",
                                    "libnvidia-ml1={version}-*"],
                       "nonfree_component": "non-free"},
    }

    def __init__(self, base: Mapping[str, Any]):
        super().__init__(base)
        #: the recipe's ``[base] keyring`` files as ``(name suffix, content)``, read once by
        #: ``validate`` (empty: the distro's default); the cache key and the bootstrap use these
        #: bytes, so a file swapped after the check changes neither
        self.keyrings: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {"release": cls.default_release, "arch": host_arch(),
                "components": list(cls.default_components), "variant": "minbase"}

    def bootstrapper(self) -> tuple[str, str]:
        if shutil.which("mmdebstrap"):
            if self.arch != host_arch() and not shutil.which("arch-test"):
                # mmdebstrap refuses a foreign architecture without it (exit 25, deep in the
                # bootstrap): said before any work, with the package (a Recommends of
                # mmdebstrap, so missing where it was installed without recommends)
                raise HostToolMissing("arch-test", "arch-test",
                                      f"by mmdebstrap to bootstrap a {self.arch} image on this "
                                      f"{host_arch()} host")
            return "mmdebstrap", host.tool_version(["mmdebstrap", "--version"])
        if shutil.which("debootstrap"):
            return "debootstrap", host.tool_version(["debootstrap", "--version"])
        raise HostToolMissing("mmdebstrap", "mmdebstrap",
                              f"to bootstrap {self.name} (debootstrap would do as well)")

    def components(self) -> tuple[str, ...]:
        return tuple(self.base["components"])

    def base_packages(self) -> list[str]:
        # minbase has no init: systemd-sysv makes the image bootable with machinectl start,
        # dbus lets machinectl login/shell talk to it; apt installs the package layer (Ubuntu's
        # minbase comes without it, as does any variant below minbase)
        return ["apt", "systemd-sysv", "dbus"]

    def snapshot_url(self) -> str | None:
        """The snapshot archive's base URL: the recipe's, else the environment's (a site's
        archive host is the user's to name, never written here)."""
        return self.base.get("snapshot_url") or os.environ.get("NSPAWNBUILD_SNAPSHOT_URL")

    def snapshot_sources(self) -> list[str]:
        """apt source lines pinning the archive to ``[base] snapshot`` (a point in time).

        Debian's snapshot archive serves every past state of the archive under
        ``/archive/<archive>/<YYYYMMDDTHHMMSSZ>/``; its Release files are old, so their
        Valid-Until is not checked.
        """
        url, stamp = (self.snapshot_url() or "").rstrip("/"), self.base["snapshot"]
        comps, rel = " ".join(self.base["components"]), self.base["release"]
        opts = "[check-valid-until=no]"
        return [f"deb {opts} {url}/archive/debian/{stamp} {rel} {comps}",
                f"deb {opts} {url}/archive/debian/{stamp} {rel}-updates {comps}",
                f"deb {opts} {url}/archive/debian-security/{stamp} {rel}-security {comps}"]

    def validate(self, sources: SourceMap) -> list[Problem]:
        """The keyring files, found and confined; a snapshot replaces the mirror and needs the
        snapshot archive's URL: ``[base]`` keys that the schema checks one at a time."""
        problems = self._find_keyrings(sources)
        if not self.base.get("snapshot"):
            return problems
        if self.base.get("mirror"):
            problems.append(sources.problem(
                "base.mirror", "mirror and snapshot exclude each other",
                "the snapshot archive is the mirror; remove one of them"))
        if not self.snapshot_url():
            problems.append(sources.problem(
                "base.snapshot", "snapshot needs the snapshot archive's base URL",
                "set [base] snapshot_url = \"http://HOST\" or the environment variable "
                "NSPAWNBUILD_SNAPSHOT_URL (nspawnbuild writes no archive host name of its own)"))
        return problems

    def _find_keyrings(self, sources: SourceMap) -> list[Problem]:
        """Read ``[base] keyring`` once: a relative name inside the directory of the recipe
        that names it, an absolute one inside the system's keyring directories; regular files
        of at most MAX_KEYRING_BYTES, opened without following a link swapped in."""
        given = self.base.get("keyring")
        names = [given] if isinstance(given, str) else list(given or [])
        found: list[tuple[str, bytes]] = []
        problems: list[Problem] = []
        limit_hint = f"a keyring has at most {MAX_KEYRING_BYTES} bytes"
        for name in names:
            try:
                if name.startswith("/"):
                    real = Path(os.path.realpath(name))
                    home = next((Path(d) for d in SYSTEM_KEYRING_DIRS if real.is_relative_to(d)),
                                None)
                    if home is None:
                        raise Refused(f"{name} is not in a keyring directory of this host",
                                      "put the keyring beside the recipe, or in "
                                      + ", ".join(SYSTEM_KEYRING_DIRS))
                    data, _ = read_confined(home, str(real.relative_to(home)), MAX_KEYRING_BYTES,
                                            limit_hint)
                else:
                    data, _ = read_confined(sources.declaring_file("base.keyring").parent, name,
                                            MAX_KEYRING_BYTES, limit_hint)
            except Refused as e:
                problems.append(sources.problem("base.keyring", str(e), e.hint))
            except FileNotFoundError:
                problems.append(sources.problem("base.keyring", f"keyring {name} does not exist",
                                                self.keyring_hint()))
            except OSError as e:
                problems.append(sources.problem("base.keyring",
                                                f"cannot read keyring {name}: {e.strerror}"))
            else:
                found.append((Path(name).suffix, data))
        self.keyrings = tuple(found)
        return problems

    def keyring_hint(self) -> str:
        return (f"the archive's keyring is in the {self.keyring_package} package; a relative "
                "path is beside the recipe")

    def bootstrap_inputs(self) -> dict[str, Any]:
        # the keys that verify the archive shape what is bootstrapped: their content is part
        # of the cache key (nothing is added when the recipe names none, as before); so do a
        # lock file's pins
        inputs: dict[str, Any] = {}
        if self.keyrings:
            inputs["keyrings"] = [hashlib.sha256(data).hexdigest() for _, data in self.keyrings]
        if self.pins:
            inputs["pins"] = hashlib.sha256(pin_preferences(self.pins).encode()).hexdigest()
        return inputs

    def keyring_args(self, private: Path, tool: str = "mmdebstrap") -> list[str]:
        """The ``--keyring=`` argument: the recipe's keyrings written into ``private`` (a new
        directory of the build's own), else the distro's default file, else none.

        mmdebstrap takes one ``--keyring``: a directory, which becomes apt's only trusted
        keys (the host's are not added). debootstrap takes one file."""
        if not self.keyrings:
            return [f"--keyring={self.keyring}"] if self.keyring else []
        if tool != "mmdebstrap" and len(self.keyrings) > 1:
            raise BuildError("debootstrap takes one keyring; install mmdebstrap for [base] "
                             "keyring with several files")
        private.mkdir(mode=0o700)
        files = []
        for i, (suffix, data) in enumerate(self.keyrings):
            path = private / f"{i:02d}-recipe{suffix}"
            path.write_bytes(data)
            files.append(path)
        return [f"--keyring={private if tool == 'mmdebstrap' else files[0]}"]

    def bootstrap(self, dest: Path, packages: list[str], epoch: int, log: StepLog,
                  cache: Path) -> pkgcache.Use | None:
        tool, _ = self.bootstrapper()
        base = self.base
        env = {"SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"}
        mirror = [base["mirror"]] if base.get("mirror") else []
        if base.get("snapshot"):
            if tool != "mmdebstrap":
                raise BuildError("[base] snapshot needs mmdebstrap (debootstrap takes a single "
                                 "mirror); install it with: apt-get install mmdebstrap")
            mirror = self.snapshot_sources()
        expired_ok = bool(base.get("snapshot")) or base.get("check_valid_until") is False
        if base.get("check_valid_until") is False and tool != "mmdebstrap":
            raise BuildError("[base] check_valid_until = false needs mmdebstrap (it passes apt "
                             "the option); install it with: apt-get install mmdebstrap")
        # the recipe's keyrings, written for this bootstrap alone, beside its tree (the entry's
        # private temporary directory), and removed with it or right after it
        private = dest.parent / f".keyrings-{dest.name}"
        remove_tree(private)
        pins = dest.parent / f".pins-{dest.name}"
        pins.unlink(missing_ok=True)
        if self.pins and tool != "mmdebstrap":
            raise BuildError("a lock file's versions need mmdebstrap (it puts apt's pins in "
                             "place before apt resolves); install it with: apt-get install "
                             "mmdebstrap")
        debs = dest.parent / f".debs-{dest.name}"
        remove_tree(debs)
        offered: dict[str, str] = {}
        if tool == "mmdebstrap":
            hooks = []
            if self.pins:  # in place before apt's first resolution, kept for post-steps
                pins.write_text(pin_preferences(self.pins))
                hooks.append(f"--setup-hook=upload {pins} {PINS_FILE}")
            # the package cache: every .deb mmdebstrap downloaded is kept (its sync-out hook,
            # as mmdebstrap's manual shows), none is left in the tree. The base is not offered
            # cached files: apt takes any file of the right size as downloaded, and which
            # digests the archive's signed index gives is known only after mmdebstrap's own
            # update, when no hook runs before the download (the package layer is offered
            # them, checked against the base's lists)
            (debs / "out").mkdir(parents=True)
            hooks += ["--skip=essential/unlink",
                      f"--customize-hook=sync-out /var/cache/apt/archives {debs / 'out'}",
                      '--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb']
            argv = self.mmdebstrap_argv(private, dest, packages, mirror, expired_ok, *hooks)
        else:
            if base["variant"] not in DEBOOTSTRAP_VARIANTS:
                raise BuildError(f"debootstrap has no variant '{base['variant']}' (it knows "
                                 f"{', '.join(sorted(DEBOOTSTRAP_VARIANTS))}); install mmdebstrap "
                                 "or change [base] variant")
            argv = ["debootstrap", f"--variant={base['variant']}", f"--arch={base['arch']}",
                    f"--components={','.join(base['components'])}"]
            argv += self.keyring_args(private, tool)
            if packages:
                argv.append(f"--include={','.join(packages)}")
            argv += [base["release"], str(dest), *mirror]
        try:
            log.run(isolated(argv), step=f"bootstrap ({tool})", env=env,
                    shown_command=" ".join(argv))
            if tool != "mmdebstrap":
                return None
            use = self._count(dest, offered, pkgcache.take_in(cache, (debs / "out").glob("*.deb")))
            log.note(use.line())
            return use
        except BuildError as e:
            missing = dict((p, v) for v, p in MISSING_VERSION.findall(str(e)))
            if missing and tool == "mmdebstrap":
                remove_tree(private)
                raise self._missing_versions(e, missing, dest, mirror, expired_ok, log,
                                             env) from None
            if "is expired" not in str(e) or expired_ok:
                raise
            raise BuildError(f"{e}\n  the archive's Release file is past its Valid-Until date "
                             "(a stale mirror, often of testing or unstable): use a current "
                             "mirror, or accept it with [base] check_valid_until = false, which "
                             "weakens apt's protection against replayed old archives") from None
        finally:
            remove_tree(private)
            remove_tree(debs)
            pins.unlink(missing_ok=True)

    def _count(self, root: Path, offered: dict[str, str],
               kept: dict[str, tuple[str, int]], before: frozenset[Package] = frozenset()
               ) -> pkgcache.Use:
        """The package cache's part in installing what dpkg now lists in ``root`` beyond
        ``before``: each package's .deb by the name apt gives it (NAME_VERSION_ARCH.deb, the
        epoch's colon escaped)."""
        installed = [f"{p.name}_{p.version.replace(':', '%3a')}_{p.arch}.deb"
                     for p in parse_dpkg_status(read_text_in_root(root, "/var/lib/dpkg/status") or "")
                     if p not in before]
        return pkgcache.count(installed, offered, kept)

    def install_layer(self, root: Path, packages: list[str], epoch: int, log: StepLog,
                      cache: Path, sandbox: ImageRunner) -> pkgcache.Use:
        """apt-get install in the sandbox, from the archive state the base was bootstrapped
        from (its package lists, no update: the layer and a lock file see one archive), offered
        the cached .debs in /var/cache/apt/archives; what apt downloaded is kept, and no .deb
        stays in the layer."""
        before = frozenset(parse_dpkg_status(read_text_in_root(root, "/var/lib/dpkg/status")
                                             or ""))
        lists = resolve_in_root(root, "/var/lib/apt/lists")
        wanted = {key: name for name in pkgcache.cached(cache, ".deb")
                  if (key := deb_file_key(name)) is not None}
        index = {wanted[key]: sha for key, sha in archive_digests(lists, set(wanted)).items()}
        archives = resolve_in_root(root, "/var/cache/apt/archives")
        offered = pkgcache.offer(cache, archives, ".deb",
                                 accept=lambda name, sha: index.get(name) == sha)
        try:
            # dpkg without an fsync per file, as mmdebstrap installs the base: a layer that
            # does not finish is thrown away, a finished one is recorded and checked on use
            install = ["apt-get", "install", "-y", "--no-install-recommends",
                       "-o", "APT::Keep-Downloaded-Packages=true",
                       "-o", "Dpkg::Options::=--force-unsafe-io", *packages]
            if not [p for p in lists.glob("*_Packages") if not p.name.startswith("debootstrap.")]:
                # a debootstrap base keeps no lists for its sources.list (only its own
                # debootstrap.invalid_* ones): apt must read the archive first
                install = ["sh", "-ec", 'apt-get update && exec "$@"', "sh", *install]
            sandbox.run(log, install,
                        step="package layer (apt-get install)", network=True,
                        env={"SOURCE_DATE_EPOCH": str(epoch),
                             "DEBIAN_FRONTEND": "noninteractive"})
        except BuildError as e:
            missing = dict((p, v) for v, p in MISSING_VERSION.findall(str(e)))
            if missing:
                raise self._missing_message(e, missing, archive_versions(lists, set(missing)))\
                    from None
            raise
        finally:
            # resolved again: what ran in the sandbox may have replaced the directory with a
            # link, which must not lead host root out of the tree
            archives = resolve_in_root(root, "/var/cache/apt/archives")
            downloaded = sorted(d for d in archives.glob("*.deb")
                                if d.is_file() and not d.is_symlink()) \
                if archives.is_dir() and not archives.is_symlink() else []
            kept = pkgcache.take_in(cache, downloaded)
            for deb in archives.glob("*.deb") if archives.is_dir() else []:
                deb.unlink()
        use = self._count(root, offered, kept, before)
        log.note(use.line())
        return use

    def mmdebstrap_argv(self, private: Path, dest: Path, packages: list[str], mirror: list[str],
                        expired_ok: bool, *extra: str) -> list[str]:
        """mmdebstrap's command line for ``dest``: the recipe's archive, keyrings, variant."""
        base = self.base
        argv = [
            "mmdebstrap", "--mode=root", f"--variant={base['variant']}",
            f"--architectures={base['arch']}",
            f"--components={','.join(base['components'])}",
            "--skip=output/dev",
            # keep the package lists, so that post-steps can `apt-get install` from the
            # same archive state as the bootstrap; the rootfs stage removes them
            "--skip=cleanup/apt/lists", *extra,
        ]
        argv += self.keyring_args(private)
        if expired_ok:  # kept in the image's apt.conf.d: post-steps use the same archive
            argv.append('--aptopt=Acquire::Check-Valid-Until "false"')
        if packages:
            argv.append(f"--include={','.join(packages)}")
        return argv + [base["release"], str(dest), *mirror]

    def _missing_versions(self, error: BuildError, missing: Mapping[str, str], dest: Path,
                          mirror: list[str], expired_ok: bool, log: StepLog,
                          env: Mapping[str, str]) -> BuildError:
        """The error for a pinned version the archive lacks, with the versions it has.

        apt says only that ``nvidia-smi=535.309.01-*`` was not found; what the user needs is
        what to pin instead. mmdebstrap's dry run leaves the archive's package lists (the same
        archive, keyrings and components) in a scratch directory, read here as text."""
        scratch = dest.parent / f".versions-{dest.name}"
        private = dest.parent / f".keyrings-versions-{dest.name}"
        remove_tree(scratch)
        remove_tree(private)
        try:
            argv = self.mmdebstrap_argv(private, scratch, [], mirror, expired_ok, "--dry-run",
                                        "--skip=cleanup/apt/cache")
            argv[argv.index(f"--variant={self.base['variant']}")] = "--variant=custom"
            log.run(isolated(argv), step="list the archive's versions", env=dict(env),
                    shown_command=" ".join(argv))
            have = archive_versions(scratch / "var/lib/apt/lists", set(missing))
        except BuildError:
            have = {}
        finally:
            remove_tree(scratch)
            remove_tree(private)
        return self._missing_message(error, missing, have)

    def _missing_message(self, error: BuildError, missing: Mapping[str, str],
                         have: Mapping[str, list[str]]) -> BuildError:
        """apt's error with, for each pinned version it lacks, the versions the archive has."""
        where = f"{self.release} ({', '.join(self.base['components'])})"
        lines = [f"the archive has no version {want} of {name}; {where} has: "
                 + (", ".join(have.get(name, [])) or "none (the package is not there)")
                 for name, want in sorted(missing.items())]
        return BuildError(f"{error}\n  " + "\n  ".join(lines) + "\n  pin one of these "
                          "versions where the recipe pins the package (its packages list, or "
                          "a feature's version such as [features.gpu-nvidia] driver_version), "
                          "or enable the component that has it")

    def install_command(self, packages: list[str]) -> list[str]:
        return ["sh", "-ec", "apt-get update && apt-get install -y --no-install-recommends "
                + " ".join(packages)]

    def list_packages(self, root: Path) -> list[Package]:
        """dpkg's database, each package's license from its copyright file, and the .deb's
        sha256 from apt's lists while they are in the tree (the rootfs stage lists packages
        before it cleans them away)."""
        packages = parse_dpkg_status(read_text_in_root(root, "/var/lib/dpkg/status") or "")
        digests = archive_digests(resolve_in_root(root, "/var/lib/apt/lists"),
                                  {(p.name, p.version, p.arch) for p in packages})
        return [dataclasses.replace(p, license=read_copyright(root, p.name),
                                    digest=(f"sha256:{digests[p.name, p.version, p.arch]}"
                                            if (p.name, p.version, p.arch) in digests else ""))
                for p in packages]

    def archive_state(self, root: Path) -> list[dict[str, Any]]:
        return release_files(resolve_in_root(root, "/var/lib/apt/lists"))

    def clean(self, root: Path) -> None:
        remove_in_root(root, PINS_FILE)  # the lock's pins are the build's, not the image's
        for pattern_dir, pattern in (("/var/lib/apt/lists", "*"), ("/var/cache/apt", "*.bin"),
                                     ("/var/cache/apt/archives", "*.deb"),
                                     ("/var/cache/debconf", "*-old"), ("/var/lib/dpkg", "*-old")):
            d = resolve_in_root(root, pattern_dir)
            if not d.is_dir() or d.is_symlink():
                continue
            for p in d.glob(pattern):
                if p.name in ("lock", "partial"):
                    continue
                if p.is_dir() and not p.is_symlink():
                    remove_tree(p)
                else:
                    p.unlink()


class Ubuntu(Debian):
    """Ubuntu: Debian's tools with Ubuntu's archive, keyring and NVIDIA packaging."""

    name = "ubuntu"
    # the archive keys without the snapshot ones: Ubuntu has no snapshot archive of that shape
    base_schema: ClassVar[dict[str, Any]] = {**ARCHIVE_SCHEMA, **KEYRING_SCHEMA, **VALID_UNTIL_SCHEMA}
    default_release = "noble"
    systemd_by_release: ClassVar[Mapping[str, int]] = {"focal": 245, "jammy": 249, "noble": 255}
    default_components = ["main", "universe"]
    keyring_package = "ubuntu-keyring"
    keyring: ClassVar[str | None] = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
    traits: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        **Debian.traits,
        # Ubuntu packages the driver per branch (550, 560 ...), in its restricted component
        "gpu-nvidia": {"packages": ["nvidia-utils-{branch}={version}-*",
                                    "libnvidia-compute-{branch}={version}-*"],
                       "nonfree_component": "restricted"},
    }

    def keyring_hint(self) -> str:
        return ("Ubuntu's keyring is in the ubuntu-keyring package: apt-get install ubuntu-keyring "
                "on Ubuntu and Debian 13; on Debian 12 install Debian 13's package (its .deb "
                "installs there), see the README; a relative path is beside the recipe")

    def bootstrap(self, dest: Path, packages: list[str], epoch: int, log: StepLog,
                  cache: Path) -> pkgcache.Use | None:
        if not self.keyrings and self.keyring and not Path(self.keyring).exists():
            raise BuildError(
                f"{self.keyring} is missing on this host but is needed to verify Ubuntu's "
                "archive; install it with: apt-get install ubuntu-keyring (Ubuntu, Debian 13); "
                "on Debian 12, install Debian 13's ubuntu-keyring .deb (README: \"Ubuntu from a "
                "Debian 12 host\"), or name a keyring file with [base] keyring")
        return super().bootstrap(dest, packages, epoch, log, cache)


@hookimpl
def nspawnbuild_distros() -> list[type[Distro]]:
    return [Debian, Ubuntu]


__all__ = ["Debian", "Ubuntu", "host_arch", "parse_dpkg_status"]
