"""Fedora (and its RHEL-family relatives): ``dnf --installroot``, rpm.

dnf runs on the build host with a configuration of our own (never the host's ``dnf.conf``):
repositories from the recipe's ``[[base.repos]]``, GPG checking on, weak dependencies off, and
an rpm database at Fedora's own path (``/usr/lib/sysimage/rpm``, set through a private
``~/.rpmmacros``: Debian's rpm would otherwise put it in root's home). No mirror is written
here: without ``[[base.repos]]``, dnf uses the build host's repository files (on a Fedora host,
Fedora's metalinks for the release and its updates).

The package cache: dnf keeps its downloads (``keepcache``) in a private ``cachedir`` beside the
tree, never in it, and is offered the cached .rpm files where dnf 4 looks for a repository's
downloads (``CACHEDIR/REPOID-HASH/packages/``, :func:`repo_cache_id`); dnf uses an offered file
only when its checksum matches the repository's metadata (and checks its signature when
gpgcheck is on), else downloads it again. Offered only to the recipe's ``[[base.repos]]``: the
build host's repositories (their ids and URLs are the host's files') are not offered the cache,
though what dnf downloads from them is kept and counted. A ``file://`` repository is read in
place by dnf: nothing is downloaded from it, and nothing is counted.

A lock file's versions (``self.pins``): before each install, ``dnf repoquery`` lists the
repositories' versions of the locked names; every other version is given to dnf as
``excludepkgs`` in the build's own dnf.conf, beside the tree (so dependencies resolve to the
locked versions too, and no file of the image holds the pins), and each requested package as
``NAME-[EPOCH:]VERSION-RELEASE``. A locked version the repositories no longer have fails the
build before dnf installs anything, naming
the packages. The pins are part of the base's cache key.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from nspawnbuild import pkgcache
from nspawnbuild.digests import sha256_file
from nspawnbuild.distro import Distro, ImageRunner, Package
from nspawnbuild.errors import BuildError, Problem
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.host import machine_arch, require_tool
from nspawnbuild.imagefs import empty_dir, remove_in_root, resolve_in_root
from nspawnbuild.pkgcache import Use
from nspawnbuild.recipe.sourcemap import SourceMap
from nspawnbuild.sandbox import isolated
from nspawnbuild.steplog import StepLog

#: where Fedora's rpm keeps its database; Debian's rpm defaults to ~/.rpmdb
RPM_DBPATH = "/usr/lib/sysimage/rpm"
#: RPM Fusion's packaging of NVIDIA's user-space (its "nonfree" repository), pinned with the
#: epoch RPM Fusion gives these packages
NVIDIA_USERSPACE = ["xorg-x11-drv-nvidia-cuda", "xorg-x11-drv-nvidia-cuda-libs"]
#: the host's repository directories dnf reads when a recipe names no repository
HOST_REPO_DIRS = ("/etc/yum.repos.d", "/etc/yum/repos.d", "/etc/distro.repos.d")
URL = {"type": "string", "pattern": r"^(https?|file)://[^\s,]+$",
       "x-hint": "a URL (http://, https:// or file://)"}
#: what a recipe's [[base.repos]] entry may say; each becomes a section of a .repo file
REPO_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                 "x-hint": "a repository id such as fedora or updates"},
        "baseurl": URL, "metalink": URL, "mirrorlist": URL,
        "gpgkey": {"type": "array", "items": URL, "minItems": 1,
                   "x-hint": "URLs of the repository's signing keys, e.g. file:///etc/pki/..."},
        "gpgcheck": {"type": "boolean"},
    },
}


def repo_file(repos: list[dict[str, Any]], gpgcheck: bool) -> str:
    """The recipe's repositories in dnf's .repo syntax."""
    out = ["# written by nspawnbuild from the recipe's [[base.repos]]"]
    for repo in repos:
        out += ["", f"[{repo['name']}]", f"name={repo['name']}"]
        for key in ("baseurl", "metalink", "mirrorlist"):
            if key in repo:
                out.append(f"{key}={repo[key]}")
        check = repo.get("gpgcheck", gpgcheck)
        out.append(f"gpgcheck={int(check)}")
        out.append("repo_gpgcheck=0")
        if repo.get("gpgkey"):
            out.append(f"gpgkey={' '.join(repo['gpgkey'])}")
    return "\n".join(out) + "\n"


#: dnf's own settings for a bootstrap; the host's /etc/dnf/dnf.conf is never read
DNF_CONF = """\
[main]
gpgcheck={gpgcheck}
install_weak_deps=False
keepcache=True
best=True
skip_if_unavailable=False
"""

#: what ``dnf repoquery`` prints of each available package (the versions a lock's pins are
#: checked against); EPOCHNUM-less: repoquery's %{epoch} is 0 without one
REPOQUERY_FORMAT = r"%{name}\t%{epoch}\t%{version}-%{release}\t%{arch}"

QUERY_FORMAT = (r"%{NAME}\t%{EPOCHNUM}\t%{VERSION}-%{RELEASE}\t%{ARCH}\t%{SIZE}"
                r"\t%{LICENSE}\t%{SOURCERPM}\t%{SHA256HEADER}\n")


def source_name(sourcerpm: str) -> str:
    """The source package's name from rpm's SOURCERPM (``bash-5.2.26-3.fc41.src.rpm``)."""
    if not sourcerpm.endswith(".src.rpm") or sourcerpm.count("-") < 2:
        return ""
    return sourcerpm.removesuffix(".src.rpm").rsplit("-", 2)[0]


def lock_version(epoch: str, version_release: str) -> str:
    """The version a lock records of an rpm (:func:`parse_rpm_query`): ``[EPOCH:]VERSION-RELEASE``,
    no epoch when it is 0."""
    return f"{epoch}:{version_release}" if epoch not in ("", "0", "(none)") else version_release


def parse_repoquery(text: str) -> dict[str, set[tuple[str, str]]]:
    """``{name: {(lock version, arch)}}`` from ``dnf repoquery --qf REPOQUERY_FORMAT``; dnf's
    other lines (the metadata's download progress) are left out."""
    found: dict[str, set[tuple[str, str]]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and all(parts):
            name, epoch, version, arch = parts
            found.setdefault(name, set()).add((lock_version(epoch, version), arch))
    return found


def pinned_specs(packages: list[str], pins: Mapping[str, str]) -> list[str]:
    """The install arguments of ``packages`` with a lock's ``pins``: ``NAME-[EPOCH:]VERSION-
    RELEASE`` for a locked name (dnf takes the epoch there), the argument as it is otherwise (a
    name the lock does not hold, a provide, a spec with a version of its own)."""
    return [f"{p}-{pins[p]}" if p in pins else p for p in packages]


def lock_excludes(available: Mapping[str, set[tuple[str, str]]],
                  pins: Mapping[str, str]) -> list[str]:
    """Every available package of a locked name in another version than the locked one, as
    ``NAME-EPOCH:VERSION-RELEASE.ARCH`` for dnf's ``excludepkgs``: dnf then resolves the
    dependencies to the locked versions too (as apt's pins do), and nothing of it stays in the
    image (the build's own dnf.conf, beside the tree, not a file of it)."""
    out = []
    for name in sorted(set(available) & set(pins)):
        for version, arch in sorted(available[name]):
            if version != pins[name]:
                evr = version if ":" in version else f"0:{version}"
                out.append(f"{name}-{evr}.{arch}")
    return out


def missing_locked(available: Mapping[str, set[tuple[str, str]]],
                   pins: Mapping[str, str]) -> dict[str, list[str]]:
    """``{name: [versions the repositories have]}`` for each locked package the repositories
    hold only in other versions (a name they do not hold at all is left to dnf: a package a
    post-step installs from a repository of its own)."""
    return {name: sorted(v for v, _ in available[name]) for name in sorted(pins)
            if name in available and pins[name] not in {v for v, _ in available[name]}}


def repo_cache_id(repo: Mapping[str, Any], releasever: str, basearch: str) -> str:
    """The directory under dnf 4's cachedir that holds a repository's metadata and downloads
    (libdnf's ``REPOID-HASH``): HASH is the first 16 hex digits of the sha256 of the metalink,
    else the mirrorlist, else the first baseurl, with $releasever and $basearch substituted."""
    url = str(repo.get("metalink") or repo.get("mirrorlist") or repo.get("baseurl")
              or repo["name"])
    for var, value in (("releasever", releasever), ("basearch", basearch)):
        url = url.replace(f"${{{var}}}", value).replace(f"${var}", value)
    return f"{repo['name']}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def rpm_file_name(package: Package) -> str:
    """The file name dnf gives a package's download (NAME-VERSION-RELEASE.ARCH.rpm: no epoch)."""
    version = re.sub(r"^\d+:", "", package.version)
    return f"{package.name}-{version}.{package.arch}.rpm"


def parse_rpm_query(text: str) -> list[Package]:
    """Packages from ``rpm -qa --qf QUERY_FORMAT`` (gpg-pubkey entries are keys, not packages);
    lines of the older five fields (no license, source, header digest) are read too."""
    packages = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) not in (5, 8) or parts[0] == "gpg-pubkey":
            continue
        name, epoch, version, arch, size = parts[:5]
        license_, sourcerpm, header = (parts[5:] if len(parts) == 8 else ["", "", ""])
        if epoch not in ("", "0", "(none)"):
            version = f"{epoch}:{version}"
        packages.append(Package(name, version, "" if arch == "(none)" else arch,
                                int(size) // 1024 if size.isdigit() else 0,
                                source=source_name(sourcerpm),
                                license="" if license_ == "(none)" else license_,
                                digest=f"rpm-header-sha256:{header}"
                                if re.fullmatch(r"[0-9a-f]{64}", header) else ""))
    return sorted(packages)


class Fedora(Distro):
    """Fedora: ``dnf --installroot`` with a configuration of our own, rpm for the manifest."""

    name = "fedora"
    purl_type = "rpm"
    base_schema: ClassVar[dict[str, Any]] = {
        "repos": {"type": "array", "items": REPO_SCHEMA,
                  "description": "dnf repositories; default: the build host's repository files"},
        "gpgcheck": {"type": "boolean",
                     "description": "check package signatures (default true)"},
    }
    #: Debian's archive keys: said to be Debian's, with what to use instead
    unused_keys: ClassVar[Mapping[str, str]] = {
        "mirror": "name the repositories in [[base.repos]] (baseurl, metalink or mirrorlist)",
        "components": "Debian's archive areas; use [[base.repos]]",
        "variant": "a Debian bootstrap variant; list packages instead",
    }
    default_release: ClassVar[str] = "42"
    #: each release's systemd as it shipped
    systemd_by_release: ClassVar[Mapping[str, int]] = {"39": 254, "40": 255, "41": 256,
                                                       "42": 257, "43": 258}
    release_package: ClassVar[str] = "fedora-release"
    traits: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        # sshd-keygen@.service makes the host keys on first start
        "ssh": {"service": "sshd", "generates_host_keys": True},
        # no ifupdown in Fedora; systemd-networkd is a package of its own
        "network": {"backends": ["networkd"], "networkd_packages": ["systemd-networkd"]},
        # useradd/groupadd
        "users": {"packages": ["shadow-utils"]},
        # precompiled glibc langpacks: nothing to generate, only /etc/locale.conf to write
        "locales": {"style": "langpack"},
        # RPM Fusion's packages, pinned as NAME-EPOCH:VERSION (the name is before the last "-")
        "gpu-nvidia": {"packages": [f"{pkg}-3:{{version}}" for pkg in NVIDIA_USERSPACE],
                       "spec_style": "rpm"},
    }

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {"release": cls.default_release, "arch": machine_arch(), "gpgcheck": True}

    def bootstrapper(self) -> tuple[str, str]:
        dnf = require_tool("dnf", "dnf", f"to bootstrap {self.name}")
        require_tool("rpm", "rpm", f"to read the package list of {self.name} images")
        # not host.tool_version: dnf's whole first line is the version of the cache key (dnf5
        # says "dnf5 version 5.x"), and dnf needs a HOME of its own
        with tempfile.TemporaryDirectory() as home:  # dnf would make ~/.rpmdb on Debian
            out = subprocess.run([dnf, "--version"], capture_output=True, text=True,
                                 env={**os.environ, "HOME": home}).stdout
        return "dnf", (out.splitlines() or ["unknown"])[0].strip()

    def base_packages(self) -> list[str]:
        return [self.release_package, "systemd"]

    def host_repo_dirs(self) -> list[str]:
        return [d for d in HOST_REPO_DIRS if Path(d).is_dir() and any(Path(d).glob("*.repo"))]

    def bootstrap_inputs(self) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        if not self.base.get("repos"):
            inputs["host_repos"] = {str(p): sha256_file(p) for d in self.host_repo_dirs()
                                    for p in sorted(Path(d).glob("*.repo"))}
        if self.pins:  # a lock's versions: another lock, another base
            inputs["pins"] = self.pins_digest()
        return inputs

    def bootstrap(self, dest: Path, packages: list[str], epoch: int, log: StepLog,
                  cache: Path) -> Use:
        return self._dnf_install(dest, packages, epoch, log, "bootstrap (dnf)", cache)

    def install_layer(self, root: Path, packages: list[str], epoch: int, log: StepLog,
                      cache: Path, sandbox: ImageRunner) -> Use:
        """The host's dnf with ``--installroot`` on the base, as the bootstrap ran: the image
        needs no dnf of its own, and its repositories are the bootstrap's (the recipe's, or
        the host's repository files). Offered the package cache as the bootstrap is (see the
        module's docstring)."""
        return self._dnf_install(root, packages, epoch, log, "package layer (dnf)", cache)

    def _dnf_install(self, dest: Path, packages: list[str], epoch: int, log: StepLog,
                     step: str, cache: Path) -> Use:
        self.bootstrapper()
        repos = self.base.get("repos", [])
        if not repos and not self.host_repo_dirs():
            raise BuildError(
                f"{self.name}: the recipe names no [[base.repos]] and this host has no dnf "
                f"repository files ({', '.join(HOST_REPO_DIRS)}); add e.g.\n"
                '  [[base.repos]]\n  name = "fedora"\n  metalink = "https://HOST/metalink?repo='
                'fedora-$releasever&arch=$basearch"\n  gpgkey = ["file:///path/to/RPM-GPG-KEY"]')
        with tempfile.TemporaryDirectory(prefix=".dnf-", dir=dest.parent) as tmp:
            conf = Path(tmp)
            # dnf's cachedir beside the tree: given relative and dnf run in the tree, as dnf 4
            # joins it to the installroot for its own files and libdnf to the working
            # directory for the repositories' (an absolute one would leave a copy in the tree)
            cachedir = conf / "cache"
            offered: dict[str, str] = {}
            for repo in repos:
                offered = pkgcache.offer(cache, cachedir / repo_cache_id(
                    repo, self.release, self.arch) / "packages", ".rpm")
            before = frozenset(self.list_packages(dest)) if dest.is_dir() else frozenset()
            dest.mkdir(parents=True, exist_ok=True)
            (conf / "dnf.conf").write_text(DNF_CONF.format(gpgcheck=int(self.base["gpgcheck"])))
            (conf / ".rpmmacros").write_text(f"%_dbpath {RPM_DBPATH}\n")
            argv = ["dnf", "-y", f"--installroot={dest}", f"--releasever={self.release}",
                    f"--forcearch={self.arch}", f"--config={conf / 'dnf.conf'}",
                    "--setopt=install_weak_deps=False", "--setopt=keepcache=True",
                    f"--setopt=cachedir=../{conf.name}/cache"]
            if repos:
                (conf / "repos").mkdir()
                (conf / "repos" / "nspawnbuild.repo").write_text(
                    repo_file(repos, self.base["gpgcheck"]))
                argv.append(f"--setopt=reposdir={conf / 'repos'}")
            else:  # the host's, named: dnf5 would look inside the (empty) installroot
                argv.append(f"--setopt=reposdir={','.join(self.host_repo_dirs())}")
            if not self.base["gpgcheck"]:
                argv.append("--nogpgcheck")
            env = {"HOME": str(conf), "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"}
            if self.pins:
                argv += self._lock_options(argv, dest, conf, log, step, env)
                packages = pinned_specs(packages, self.pins)
            argv += ["install", *packages]
            log.run(isolated(["env", f"--chdir={dest}", *argv]), step=step,
                    shown_command=" ".join(argv), env=env)
            kept = pkgcache.take_in(cache, sorted(cachedir.glob("*/packages/*.rpm")))
        self.clean(dest)  # the bootstrap cache needs no copy of the repository metadata
        use = pkgcache.count([rpm_file_name(p) for p in self.list_packages(dest)
                              if p not in before], offered, kept)
        log.note(use.line())
        return use

    def _lock_options(self, argv: list[str], dest: Path, conf: Path, log: StepLog, step: str,
                      env: dict[str, str]) -> list[str]:
        """dnf's options that hold it to the lock's versions: the repositories' versions of
        the locked names asked of ``dnf repoquery`` (same configuration, same cache), and
        every other version of them excluded; a BuildError naming each locked package whose
        version the repositories no longer have, before anything is installed."""
        listing = conf / "available.tsv"
        query = [*argv, "--quiet", "repoquery", "--available", f"--qf={REPOQUERY_FORMAT}",
                 "--", *sorted(self.pins)]  # names, never options
        # dnf has no output file: a shell sends the list to one (beside the tree, not in it)
        log.run(isolated(["env", f"--chdir={dest}", "sh", "-c", 'exec "$@" > "$0"',
                          str(listing), *query]),
                step=f"{step}: the lock's versions", shown_command=" ".join(query), env=env)
        available = parse_repoquery(listing.read_text())
        missing = missing_locked(available, self.pins)
        if missing:
            raise BuildError(
                f"{step}: the repositories no longer have the locked version of "
                f"{len(missing)} packages; nothing was published:\n"
                + "".join(f"  {name}: locked {self.pins[name]}, the repositories have "
                          f"{', '.join(have)}\n" for name, have in missing.items())
                + "  refresh the lock with: nspawnbuild lock --update RECIPE (it prints what "
                "changed), or use repositories that still have those versions")
        excludes = lock_excludes(available, self.pins)
        log.note(f"the lock holds {len(self.pins)} packages; {len(excludes)} other versions "
                 "in the repositories excluded")
        if excludes:  # in dnf.conf (beside the tree): one argument is limited to 128 KiB
            line = f"excludepkgs={','.join(excludes)}"
            with (conf / "dnf.conf").open("a") as f:
                f.write(line + "\n")
            log.note(f"dnf.conf: {line}")
        return []

    def install_command(self, packages: list[str]) -> list[str]:
        return ["dnf", "-y", "--setopt=install_weak_deps=False", "install", *packages]

    def list_packages(self, root: Path) -> list[Package]:
        db = resolve_in_root(root, RPM_DBPATH)
        if not db.is_dir():
            return []
        rpm = require_tool("rpm", "rpm", f"to read the package list of {self.name} images")
        # the host's rpm runs as root: never on paths inside the image (a step may have made
        # the database directory a symlink the host would follow), only on a private copy of
        # the database's regular files
        with tempfile.TemporaryDirectory(prefix="nspawnbuild-rpmdb-") as copy:
            os.chmod(copy, 0o700)
            for entry in sorted(db.iterdir()):
                st = entry.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_RPMDB:
                    with open(entry, "rb", opener=_no_follow) as src, \
                            open(Path(copy) / entry.name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            # a read of the tree for the manifest (no build log is open then), not a build step
            r = subprocess.run([rpm, f"--dbpath={copy}", "-qa", "--qf", QUERY_FORMAT],
                               capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"rpm could not read the package database of {root}: "
                             f"{r.stderr.strip()}")
        return parse_rpm_query(r.stdout)

    def clean(self, root: Path) -> None:
        """dnf's caches and logs (the field guide found 260 MiB of cache in a 507 MiB tree)."""
        for path in ("/var/cache/dnf", "/var/cache/libdnf5", "/var/lib/dnf/repos"):
            empty_dir(root, path)
        log = resolve_in_root(root, "/var/log")
        if log.is_dir() and not log.is_symlink():
            for f in [*log.glob("dnf*.log"), log / "hawkey.log"]:
                if f.is_file() or f.is_symlink():
                    f.unlink()
        # what makes two builds of the same packages differ: dnf's transaction history (the
        # times it ran; dnf 5's under /usr/lib/sysimage/libdnf5), of use only to a dnf in the
        # image (which keeps there which packages were asked for), so dropped when the image
        # has none, as mkosi drops it; and SQLite's shared-memory index of the rpm database,
        # rebuilt from the database on the next open (the write-ahead log is dropped only
        # when empty: it may hold commits)
        if not any(os.path.lexists(resolve_in_root(root, f"/usr/bin/{dnf}", follow_final=False))
                   for dnf in ("dnf", "dnf-3", "dnf5")):
            for db in ("/var/lib/dnf/history.sqlite",
                       "/usr/lib/sysimage/libdnf5/transaction_history.sqlite"):
                for suffix in ("", "-shm", "-wal"):
                    remove_in_root(root, db + suffix)
        wal = resolve_in_root(root, f"{RPM_DBPATH}/rpmdb.sqlite-wal", follow_final=False)
        if not os.path.lexists(wal) or (stat.S_ISREG(wal.lstat().st_mode)
                                        and wal.lstat().st_size == 0):
            remove_in_root(root, f"{RPM_DBPATH}/rpmdb.sqlite-shm")

    def validate(self, sources: SourceMap) -> list[Problem]:
        """Each ``[[base.repos]]`` entry names one source and a key to check it with, and no
        two share a name: rules across keys and entries that the schema cannot state."""
        problems = []
        names = set()
        for i, repo in enumerate(self.base.get("repos", [])):
            key = f"base.repos.{i}"
            kinds = [k for k in ("baseurl", "metalink", "mirrorlist") if k in repo]
            if len(kinds) != 1:
                problems.append(sources.problem(
                    key, f"repository '{repo['name']}' needs exactly one of baseurl, metalink, "
                    f"mirrorlist (it has {', '.join(kinds) or 'none'})"))
            if repo["name"] in names:
                problems.append(sources.problem(
                    f"{key}.name", f"repository '{repo['name']}' is named twice"))
            names.add(repo["name"])
            if repo.get("gpgcheck", self.base.get("gpgcheck", True)) and not repo.get("gpgkey"):
                problems.append(sources.problem(
                    f"{key}.gpgkey", f"repository '{repo['name']}' is GPG-checked but has no "
                    "gpgkey", 'add gpgkey = ["file:///path/to/RPM-GPG-KEY"] (or, only for a '
                    "repository you trust otherwise, gpgcheck = false)"))
        return problems


@hookimpl
def nspawnbuild_distros() -> list[type[Distro]]:
    return [Fedora]


__all__ = ["Fedora", "parse_rpm_query", "repo_cache_id", "repo_file", "rpm_file_name"]


#: the biggest package database file copied for listing (Fedora's is tens of MiB)
MAX_RPMDB = 1 << 30


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)
