"""Alpine Linux: the static ``apk`` with a pinned checksum, OpenRC made to run under nspawn.

Safe by construction, as the field guide's fork of alpine-chroot-install is: nothing of the
host is ever bound or mounted into the tree, and nothing is left in it that the build needed
(the static apk stays in a temporary directory beside the tree). Packages are verified by apk
with Alpine's signing keys, which the build host provides (``[base] keys_dir``); there is no
``--allow-untrusted`` anywhere.

No mirror and no download host is written here: the recipe (or the environment) names the
mirror and where the static apk is fetched from; only its checksum is pinned.

The package cache: apk is given a ``--cache-dir`` of its own beside the tree (never in it),
offered the cached .apk files under the names apk gives its cache (:func:`apk_cache_name`:
NAME-VERSION.CSUM.apk, CSUM the first 4 bytes of the package's identity checksum in hex); apk
uses an offered file only for the package of that checksum in its signed index, and verifies
it against that checksum as it installs it. What apk downloaded into that directory is kept.

A lock file's versions (``self.pins``): apk has no pins of its own (a ``NAME=VERSION`` in its
world is an install request, not a preference), so the base and the package layer are resolved
first with ``apk add --simulate``: each package the transaction would install in another
version than the locked one is added to the request as ``NAME=VERSION``, and simulated again,
until apk installs only locked versions (of the locked names); then the real ``apk add`` runs
with those requests, and ``/etc/apk/world`` is written back to the names an unlocked build has
there (no version), so the image is the one an unlocked build of those versions gives. A locked
version the repository no longer has ("unable to select packages ... breaks: world[NAME=V]")
fails the build before anything is installed, naming the packages. The pins are part of the
base's cache key.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from nspawnbuild import pkgcache
from nspawnbuild.digests import sha256_file
from nspawnbuild.distro import Distro, ImageRunner, Package
from nspawnbuild.errors import BuildError, Problem
from nspawnbuild.fetch import fetch
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.host import machine_arch
from nspawnbuild.imagefs import empty_dir, make_dirs, read_text_in_root, resolve_in_root, write_file
from nspawnbuild.pkgcache import Use
from nspawnbuild.recipe.sourcemap import SourceMap
from nspawnbuild.sandbox import isolated
from nspawnbuild.steplog import StepLog

#: sha256 of apk-tools' static binary (apk.static), by architecture: v2.14.7 for x86_64, the
#: value the field guide's alpine-nspawn-install pins (its APK_TOOLS_SHA256); not checked
#: against Alpine's servers from here, which these machines cannot reach
APK_STATIC_SHA256 = {
    "x86_64": ("2.14.7", "bdd044e0fd6cc388c5e571e1093efa5f35f7767cc5aa338b0a2576a429009a62"),
}
HOST_KEYS_DIR = "/etc/apk/keys"
URL = {"type": "string", "pattern": r"^(https?|file)://[^\s,]+$",
       "x-hint": "a URL (http://, https:// or file://)"}
#: OpenRC knows it runs in systemd-nspawn through rc_sys (it then skips hardware services)
RC_SYS = 'rc_sys="systemd-nspawn"'
RESOLV_CONF = """\
# Written by nspawnbuild: no name servers of the build host are shipped in the image.
# With DHCP, udhcpc fills this file in when the container starts; with static addresses,
# the recipe lists them in [features.network] dns (or a [[files]] entry for this file).
"""
DEFAULT_INTERFACES = "auto lo\niface lo inet loopback\n"


def parse_apk_installed(text: str) -> list[Package]:
    """Installed packages from ``/lib/apk/db/installed`` (read, never executed)."""
    packages = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:]
        if "P" in fields and "V" in fields:
            size = fields.get("I", "0")
            # L: the license (SPDX words), o: the origin (source) package, C: apk's identity
            # checksum of the package (Q1 + base64 SHA-1)
            packages.append(Package(fields["P"], fields["V"], fields.get("A", ""),
                                    int(size) // 1024 if size.isdigit() else 0,
                                    source=fields.get("o", ""), license=fields.get("L", ""),
                                    digest=f"apk:{fields['C']}" if fields.get("C") else ""))
    return sorted(packages)


#: apk's lines for what a transaction does: ``(1/3) Installing lib (1.0-r0)``,
#: ``(2/3) Upgrading lib (1.0-r0 -> 1.1-r0)``
APK_CHANGE = re.compile(r"^\(\d+/\d+\) (?:Installing|Upgrading|Downgrading|Replacing|"
                        r"Reinstalling) (\S+) \((?:\S+ -> )?([^)\s]+)\)", re.M)
#: apk's "unable to select packages" names a request it cannot meet: ``breaks: world[lib=1.0-r0]``
#: (the version is gone), ``lib (no such package):`` (the name is)
APK_BROKEN = re.compile(r"breaks: .*?world\[([^\]=<>~]+)=[^\]]*\]|^\s+(\S+) \(no such package\)",
                        re.M)
#: how many times a locked install is simulated at most (each adds a request, or it is done)
MAX_LOCK_ROUNDS = 50


def pinned_requests(packages: list[str], pins: Mapping[str, str]) -> list[str]:
    """``NAME=VERSION`` for each locked name of ``packages``, the argument as it is otherwise."""
    return [f"{p}={pins[p]}" if p in pins else p for p in packages]


def apk_changes(text: str) -> dict[str, str]:
    """``{name: version}`` of what a (simulated) ``apk add`` installs, from its output."""
    return {m.group(1): m.group(2) for m in APK_CHANGE.finditer(text)}


def broken_requests(text: str) -> list[str]:
    """The names whose request apk could not meet, from its "unable to select" error."""
    return sorted({m.group(1) or m.group(2) for m in APK_BROKEN.finditer(text)})


def unlocked_world(before: str, packages: list[str]) -> str:
    """``/etc/apk/world`` as an unlocked ``apk add PACKAGES`` leaves it: what it held, and the
    names asked for, sorted, one a line (a request's ``=VERSION`` left out)."""
    names = {re.split(r"[=<>~]", w, maxsplit=1)[0] for w in before.split()} | set(packages)
    return "".join(f"{n}\n" for n in sorted(names))


def apk_cache_name(package: Package) -> str:
    """The file name apk gives a package in its cache directory (``NAME-VERSION.CSUM.apk``,
    CSUM: the first 4 bytes of the identity checksum, ``Q1`` + base64 SHA-1 in the database,
    in hex); "" for a package without that checksum."""
    csum = package.digest.removeprefix("apk:")
    if not csum.startswith("Q1"):
        return ""
    try:
        raw = base64.b64decode(csum[2:], validate=True)
    except ValueError:
        return ""
    return f"{package.name}-{package.version}.{raw[:4].hex()}.apk" if len(raw) >= 4 else ""


class Alpine(Distro):
    """Alpine: the static apk with a pinned checksum; OpenRC, made ready for systemd-nspawn."""

    name = "alpine"
    purl_type = "apk"
    init = "openrc"  # the .nspawn gets KillSignal=SIGTERM (OpenRC ignores SIGRTMIN+3)
    base_schema: ClassVar[dict[str, Any]] = {
        # the same entry as Debian's (the core schema held it for both before distros had
        # schemas of their own): the editor schema merges them into one
        "mirror": {"type": "string", "pattern": r"^(https?|file)://[^\s,]+$",
                   "x-hint": "a URL such as http://HOST/debian, without spaces"},
        "apk_static_url": {**URL, "description": "where to download apk-tools' static apk "
                                                 "(or set NSPAWNBUILD_APK_STATIC_URL)"},
        "apk_static_sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$",
                              "x-hint": "64 hex digits: `sha256sum apk.static`",
                              "description": "its sha256 (default: pinned for x86_64)"},
        "keys_dir": {"type": "string", "pattern": "^/",
                     "x-hint": "an absolute directory on the build host",
                     "description": "Alpine's signing keys (*.rsa.pub) on the build host; "
                                    "default /etc/apk/keys or NSPAWNBUILD_ALPINE_KEYS"},
    }
    #: Debian's archive keys: Alpine's repositories are fixed by its release
    unused_keys: ClassVar[Mapping[str, str]] = {
        "components": "the main and community repositories of the release are used",
        "variant": "the main and community repositories of the release are used",
    }
    default_release: ClassVar[str] = "3.22"
    #: Alpine's names that are not the kernel's (its armhf is ARMv6)
    machine_names: ClassVar[Mapping[str, str]] = {"x86": "i686", "armhf": "armv6l",
                                                  "armv7": "armv7l"}
    traits: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        # the sshd init script runs ssh-keygen -A on its first start
        "ssh": {"service": "sshd", "generates_host_keys": True},
        # no systemd: ifupdown-ng (in every Alpine image, see base_packages) and its service
        "network": {"backend": "ifupdown", "backends": ["ifupdown"],
                    "ifupdown_packages": ["ifupdown-ng"], "ifupdown_service": "networking"},
        # useradd/groupadd (busybox has only adduser)
        "users": {"packages": ["shadow"]},
        # musl has no locale-gen: musl-locales, and the default from /etc/profile.d
        "locales": {"style": "musl"},
        "gpu-nvidia": {"unsupported": "NVIDIA's user-space libraries are built for glibc and "
                                      "Alpine uses musl; use a debian, ubuntu or fedora base for "
                                      "GPU images"},
        "gpu-amd": {"unsupported": "ROCm is built for glibc and Alpine uses musl; use a debian, "
                                   "ubuntu or fedora base for GPU images"},
        # OpenRC's local service runs /etc/local.d scripts at boot
        "firstboot": {"style": "openrc-local"},
    }

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {"release": cls.default_release, "arch": machine_arch()}

    @property
    def branch(self) -> str:
        return "edge" if self.release == "edge" else f"v{self.release}"

    def apk_static(self) -> tuple[str, str]:
        """(URL, sha256) of the static apk, or a BuildError saying what to set."""
        url = self.base.get("apk_static_url") or os.environ.get("NSPAWNBUILD_APK_STATIC_URL")
        if not url:
            raise BuildError("alpine: no apk_static_url: set [base] apk_static_url to the URL of "
                             "apk-tools' static binary (apk.static) for "
                             f"{self.arch}, or NSPAWNBUILD_APK_STATIC_URL (nspawnbuild writes no "
                             "download host of its own)")
        sha = self.base.get("apk_static_sha256") or APK_STATIC_SHA256.get(self.arch, ("", ""))[1]
        if not sha:
            raise BuildError(f"alpine: no pinned checksum of apk.static for {self.arch}: set "
                             "[base] apk_static_sha256")
        return url, sha.lower()

    def mirror(self) -> str:
        mirror = self.base.get("mirror") or os.environ.get("NSPAWNBUILD_ALPINE_MIRROR")
        if not mirror:
            raise BuildError("alpine: no mirror: set [base] mirror = \"http://HOST/alpine\" or "
                             "NSPAWNBUILD_ALPINE_MIRROR (nspawnbuild writes no mirror of its own)")
        return mirror.rstrip("/")

    def keys(self) -> list[Path]:
        where = (self.base.get("keys_dir") or os.environ.get("NSPAWNBUILD_ALPINE_KEYS")
                 or HOST_KEYS_DIR)
        keys = sorted(Path(where).glob("*.rsa.pub")) if Path(where).is_dir() else []
        if not keys:
            raise BuildError(f"alpine: no signing keys (*.rsa.pub) in {where}: apk verifies every "
                             "package with Alpine's keys; set [base] keys_dir or "
                             "NSPAWNBUILD_ALPINE_KEYS to a directory holding them (an Alpine "
                             "system's /etc/apk/keys, or the alpine-keys package's files)")
        return keys

    def bootstrap_inputs(self) -> dict[str, Any]:
        """The mirror, the apk URL and the keys, wherever they come from (recipe or environment);
        a lock's versions."""
        inputs: dict[str, Any] = {}
        for name, get in (("mirror", self.mirror), ("apk_static", self.apk_static),
                          ("keys", lambda: {k.name: sha256_file(k) for k in self.keys()})):
            try:
                inputs[name] = get()
            except BuildError:  # said when bootstrapping; planning works without it
                inputs[name] = None
        if self.pins:  # another lock, another base
            inputs["pins"] = self.pins_digest()
        return inputs

    def bootstrapper(self) -> tuple[str, str]:
        pinned = APK_STATIC_SHA256.get(self.arch)
        sha = self.base.get("apk_static_sha256")
        version = pinned[0] if pinned and not sha else f"sha256:{(sha or '')[:16]}"
        return "apk.static", version

    def base_packages(self) -> list[str]:
        return ["alpine-base", "openrc", "ifupdown-ng"]

    def repositories(self) -> str:
        mirror = self.mirror()
        return f"{mirror}/{self.branch}/main\n{mirror}/{self.branch}/community\n"

    def apk_argv(self, apk: Path, dest: Path, packages: list[str], *,
                 initdb: bool = True, cache_dir: Path | None = None,
                 simulate: bool = False) -> list[str]:
        cache = ["--cache-dir", str(cache_dir)] if cache_dir else ["--no-cache"]
        return [str(apk), "--root", str(dest), *(["--initdb"] if initdb else []),
                "--arch", self.arch, "--no-progress", *cache,
                *(["--simulate"] if simulate else []), "add", *packages]

    def bootstrap(self, dest: Path, packages: list[str], epoch: int, log: StepLog,
                  cache: Path) -> Use:
        self.apk_static()  # what is missing is said in this order: the apk URL, keys, mirror
        keys, repositories = self.keys(), self.repositories()
        apk = self._fetch_apk(cache, log)  # before anything is written
        dest.mkdir(parents=True)
        for key in keys:
            write_file(dest, f"/etc/apk/keys/{key.name}", key.read_bytes())
        write_file(dest, "/etc/apk/repositories", repositories.encode())
        use = self._apk_add(dest, packages, epoch, log, apk, cache, initdb=True)
        self.make_nspawn_ready(dest)
        return use

    def install_layer(self, root: Path, packages: list[str], epoch: int, log: StepLog,
                      cache: Path, sandbox: ImageRunner) -> Use:
        """The static apk with ``--root`` on the base, as the bootstrap ran (the image's keys
        and repositories, which the bootstrap wrote), offered the package cache as the
        bootstrap is."""
        return self._apk_add(root, packages, epoch, log, self._fetch_apk(cache, log), cache,
                             initdb=False)

    def _fetch_apk(self, cache: Path, log: StepLog) -> Path:
        """The static apk, from the download cache (checked against its sha256)."""
        url, sha = self.apk_static()
        log.note(f"fetching apk.static from {url} (sha256 {sha})")
        return fetch(url, sha, cache, log=log)

    def _apk_add(self, dest: Path, packages: list[str], epoch: int, log: StepLog, cached: Path,
                 cache: Path, *, initdb: bool) -> Use:
        before = frozenset(self.list_packages(dest))
        with tempfile.TemporaryDirectory(prefix=".apk-", dir=dest.parent) as tmp:
            apk = Path(tmp) / "apk.static"  # beside the tree, never in it
            shutil.copyfile(cached, apk)
            apk.chmod(0o755)
            cache_dir = Path(tmp) / "cache"  # apk's cache, beside the tree too
            offered = pkgcache.offer(cache, cache_dir, ".apk")
            step = "bootstrap (apk)" if initdb else "package layer (apk)"
            env = {"SOURCE_DATE_EPOCH": str(epoch)}
            requests = packages
            if self.pins:
                # apk simulates only on a database, with the indexes in its cache: an empty
                # database first (it fetches them), or the indexes fetched into the cache
                if initdb:
                    argv = self.apk_argv(apk, dest, [], initdb=True, cache_dir=cache_dir)
                    initdb = False
                else:
                    argv = [str(apk), "--root", str(dest), "--arch", self.arch, "--no-progress",
                            "--cache-dir", str(cache_dir), "update"]
                log.run(isolated(argv), step=step, shown_command=" ".join(argv), env=env)
                world = read_text_in_root(dest, "/etc/apk/world") or ""
                requests = self._locked_requests(apk, dest, packages, cache_dir, log, step, env)
            argv = self.apk_argv(apk, dest, requests, initdb=initdb, cache_dir=cache_dir)
            log.run(isolated(argv), step=step, shown_command=" ".join(argv), env=env)
            if self.pins:  # the image's world names packages, as an unlocked build's does
                write_file(dest, "/etc/apk/world", unlocked_world(world, packages).encode())
            kept = pkgcache.take_in(cache, sorted(cache_dir.glob("*.apk")))
        use = pkgcache.count([apk_cache_name(p) for p in self.list_packages(dest)
                              if p not in before], offered, kept)
        log.note(use.line())
        return use

    def _locked_requests(self, apk: Path, dest: Path, packages: list[str], cache_dir: Path,
                         log: StepLog, step: str, env: dict[str, str]) -> list[str]:
        """What ``apk add`` is asked for so that it installs the lock's versions: ``packages``
        (a locked one as ``NAME=VERSION``), and ``NAME=VERSION`` for each dependency a
        simulation installed in another version than the locked one, simulated again until
        none is; a BuildError naming the packages whose locked version the repository no
        longer has."""
        requests = pinned_requests(packages, self.pins)
        output = cache_dir.parent / "simulate.out"  # apk's scratch directory, beside the tree
        try:
            for _round in range(MAX_LOCK_ROUNDS):
                argv = self.apk_argv(apk, dest, requests, initdb=False, cache_dir=cache_dir,
                                     simulate=True)
                # the output read back, and shown in the log and in a failure's last lines
                script = 'rc=0; "$@" > "$0" 2>&1 || rc=$?; cat "$0"; exit $rc'
                try:
                    log.run(isolated(["sh", "-c", script, str(output), *argv]),
                            step=f"{step}: the lock's versions", shown_command=" ".join(argv),
                            env=env)
                except BuildError:
                    text = output.read_text(errors="replace") if output.is_file() else ""
                    gone = [n for n in broken_requests(text) if n in self.pins]
                    if not gone:
                        raise
                    raise BuildError(
                        f"{step}: apk could not select the locked version of {len(gone)} "
                        "packages (the repository no longer has it, or it conflicts with "
                        "what the recipe asks for now); nothing was published:\n"
                        + "".join(f"  {name}: locked {self.pins[name]}, apk: unable to select "
                                  "it\n" for name in gone)
                        + "  refresh the lock with: nspawnbuild lock --update RECIPE (it prints "
                        "what changed), or use a mirror that still has those versions") from None
                changes = apk_changes(output.read_text(errors="replace"))
                wrong = sorted(n for n, v in changes.items()
                               if n in self.pins and v != self.pins[n])
                if not wrong:
                    log.note(f"the lock's versions: apk asked for {len(requests)} packages "
                             f"(the dependencies' locked versions included)")
                    return requests
                requests = [*[r for r in requests if r.split("=", 1)[0] not in wrong],
                            *(f"{n}={self.pins[n]}" for n in wrong)]
        finally:
            output.unlink(missing_ok=True)
        raise BuildError(f"{step}: apk did not settle on the lock's versions in "
                         f"{MAX_LOCK_ROUNDS} simulations: refresh the lock with: nspawnbuild "
                         "lock --update RECIPE")

    def make_nspawn_ready(self, root: Path) -> None:
        """What alpine-nspawn-install does after apk: the tree boots under systemd-nspawn."""
        if not resolve_in_root(root, "/etc/os-release").exists():
            raise BuildError("the Alpine tree has no /etc/os-release (alpine-release was not "
                             "installed); systemd-nspawn refuses to boot it")
        inittab = resolve_in_root(root, "/etc/inittab")
        if inittab.is_file():  # no gettys on ttys a container does not have
            text = re.sub(r"^(tty\d+:)", r"#\1", inittab.read_text(), flags=re.M)
            write_file(root, "/etc/inittab", text.encode())
        rc_conf = resolve_in_root(root, "/etc/rc.conf")
        text = rc_conf.read_text() if rc_conf.is_file() else ""
        text = re.sub(r"^#?\s*rc_sys=.*$", RC_SYS, text, flags=re.M)
        if RC_SYS not in text:
            text += f"\n{RC_SYS}\n"
        write_file(root, "/etc/rc.conf", text.encode())
        if not resolve_in_root(root, "/etc/network/interfaces").exists():
            write_file(root, "/etc/network/interfaces", DEFAULT_INTERFACES.encode())
        self.enable(root, "networking")

    def enable(self, root: Path, service: str, runlevel: str = "default") -> None:
        """What ``rc-update add SERVICE RUNLEVEL`` does, without running anything of the image."""
        link = make_dirs(root, f"/etc/runlevels/{runlevel}") / service
        if link.is_symlink():
            return
        if link.exists():
            raise BuildError(f"cannot enable {service}: /etc/runlevels/{runlevel}/{service} in "
                             "the image is not a symlink")
        os.symlink(f"/etc/init.d/{service}", link)

    def enable_service_command(self, unit: str) -> list[str]:
        return ["rc-update", "add", unit.removesuffix(".service"), "default"]

    def install_command(self, packages: list[str]) -> list[str]:
        return ["apk", "add", "--no-cache", *packages]

    def list_packages(self, root: Path) -> list[Package]:
        return parse_apk_installed(read_text_in_root(root, "/lib/apk/db/installed") or "")

    def clean(self, root: Path) -> None:
        empty_dir(root, "/var/cache/apk")
        if resolve_in_root(root, "/etc").is_dir():
            resolv = resolve_in_root(root, "/etc/resolv.conf", follow_final=False)
            if not resolv.exists() and not resolv.is_symlink():  # the recipe's own stays
                write_file(root, "/etc/resolv.conf", RESOLV_CONF.encode())

    def validate(self, sources: SourceMap) -> list[Problem]:
        """The static apk must be checked against a checksum: pinned here for some
        architectures, given in ``[base]`` for the others."""
        arch = self.arch
        if "apk_static_sha256" not in self.base and arch not in APK_STATIC_SHA256:
            return [sources.problem("base.apk_static_sha256",
                                    f"no checksum of apk.static is pinned for {arch}",
                                    "set apk_static_sha256 to the sha256 of the apk.static you "
                                    "trust")]
        return []


@hookimpl
def nspawnbuild_distros() -> list[type[Distro]]:
    return [Alpine]


__all__ = ["Alpine", "apk_cache_name", "parse_apk_installed"]
