"""Fedora for real: ``dnf --installroot`` against a signed local RPM repository.

Fedora's mirrors are not reachable from the test machines; the repository is built in the test
session with the real rpmbuild, rpmsign (GPG) and createrepo_c, and served as ``file://``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, Env, tar_stream, tarball_of, unpack
from sbomcheck import check_sbom

sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from rpmrepo import (  # noqa: E402
    FEDORA_LIKE,
    RpmPackage,
    RpmRepo,
    add_packages,
    build_repo,
    remove_packages,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signed_repo(tmp_path_factory: pytest.TempPathFactory) -> RpmRepo:
    return build_repo(tmp_path_factory.mktemp("rpm-signed"), FEDORA_LIKE)


@pytest.fixture(scope="module")
def unsigned_repo(tmp_path_factory: pytest.TempPathFactory) -> RpmRepo:
    return build_repo(tmp_path_factory.mktemp("rpm-unsigned"), FEDORA_LIKE, sign=False)


def recipe(path: Path, repo: RpmRepo, name: str = "fedtest") -> Path:
    path.write_text(repo.recipe(name, '''
[features.locales]
locales = ["de_DE.UTF-8"]
timezone = "Europe/Berlin"
'''))
    return path


def members(tarball: Path) -> dict[str, tarfile.TarInfo]:
    with tar_stream(tarball) as tar:
        return {m.name: m for m in tar}


def test_fedora_image_from_a_signed_local_repository(env: Env, signed_repo: RpmRepo) -> None:
    home = env.tmp / "home"
    home.mkdir()
    r = env.nspawnbuild("build", str(recipe(env.tmp / "fedtest.toml", signed_repo)),
                        HOME=str(home))
    assert r.returncode == 0, r.stdout + r.stderr
    out = env.out / "fedtest"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bootstrapper"]["name"] == "dnf"
    assert manifest["base"]["distro"] == "fedora" and manifest["base"]["release"] == "44"
    versions = {p["name"]: (p["version"], p["arch"]) for p in manifest["packages"]}
    assert versions == {"fedora-release": ("44-1", "noarch"),
                        "systemd": ("257.1-2.fc44", "noarch"),
                        "hello-nspawnbuild": ("1.2.3-1", "noarch"),
                        # asked for by [features.locales], named by the Fedora distro object
                        "glibc-langpack-de": ("2.40-9.fc44", "noarch"),
                        "tzdata": ("2025b-1.fc44", "noarch")}

    tree = members(tarball_of(out))
    assert "./usr/share/hello/hello.txt" in tree and "./usr/lib/os-release" in tree
    assert "./usr/lib/sysimage/rpm/rpmdb.sqlite" in tree  # Fedora's path, not Debian's ~/.rpmdb
    assert not [n for n in tree if n.startswith("./var/cache/dnf/") and n != "./var/cache/dnf/"]
    assert not [n for n in tree if n.startswith("./var/log/") and n.endswith(".log")]
    assert tree["./etc/hostname"].size == len("fedtest\n")
    assert tree["./etc/localtime"].linkname == "../usr/share/zoneinfo/Europe/Berlin"
    rootfs = unpack(tarball_of(out), env.tmp / "tree")
    assert (rootfs / "etc/locale.conf").read_text() == "LANG=de_DE.UTF-8\n"  # no locale-gen
    assert "Timezone=off" in (out / "fedtest.nspawn").read_text()
    check_sbom(out)

    log = (out / "build.log").read_text()
    assert "--installroot=" in log and "--releasever=44" in log
    assert "install_weak_deps=False" in log and "--nogpgcheck" not in log
    assert not (home / ".rpmdb").exists()  # dnf never wrote the build user's rpm database
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True)
    assert check.returncode == 0

    # the image is read by the real rpm inside-out: its own database lists what the manifest says
    q = subprocess.run(["rpm", f"--root={rootfs}",
                        "--dbpath=/usr/lib/sysimage/rpm", "-q", "hello-nspawnbuild"],
                       capture_output=True, text=True)
    assert q.stdout.strip() == "hello-nspawnbuild-1.2.3-1.noarch", q.stderr


#: the paths the test server was asked for (its log, not printed)
REQUESTS: list[str] = []


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        REQUESTS.append(self.path)


@pytest.fixture
def served(signed_repo: RpmRepo) -> Iterator[str]:
    """The signed repository on a loopback HTTP server: dnf downloads from it (a file://
    repository is read in place, nothing downloaded)."""
    handler = functools.partial(QuietHandler, directory=str(signed_repo.path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_a_rebuild_in_one_cache_downloads_no_package_again(env: Env, signed_repo: RpmRepo,
                                                           served: str) -> None:
    path = env.tmp / "fedcache.toml"
    path.write_text(signed_repo.recipe("fedcache").replace(signed_repo.url, served))
    no_proxy = {"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}

    cache = env.tmp / "one-cache"  # this test's own: the session's may hold packages already

    def build(where: str) -> dict[str, int]:
        return env.package_cache_use(path, where, cache, **no_proxy)

    REQUESTS.clear()
    cold = build("one")  # base (fedora-release, systemd) and layer (hello-nspawnbuild)
    assert cold["from_cache"] == 0 and cold["downloaded"] == 3 and cold["downloaded_bytes"] > 0
    assert len([q for q in REQUESTS if q.endswith(".rpm")]) == 3, REQUESTS
    rpms = sorted(p.name for p in (cache / "packages").glob("*/*.rpm"))
    assert rpms == ["fedora-release-44-1.noarch.rpm", "hello-nspawnbuild-1.2.3-1.noarch.rpm",
                    "systemd-257.1-2.fc44.noarch.rpm"], rpms
    # the base and the package layer made again (a re-bootstrap), from the same package cache
    shutil.rmtree(cache / "bootstrap")
    shutil.rmtree(cache / "layers")
    REQUESTS.clear()
    again = build("two")
    assert not [q for q in REQUESTS if q.endswith(".rpm")], REQUESTS  # none fetched
    assert again == {"from_cache": 3, "downloaded": 0, "downloaded_bytes": 0}, again
    tree = members(tarball_of(env.tmp / "two" / "fedcache"))
    assert not [n for n in tree if n.endswith(".rpm") or "/.dnf-" in n or "dnf/cache" in n]
    assert set(tree) == set(members(tarball_of(env.tmp / "one" / "fedcache")))


def test_unsigned_packages_are_refused(env: Env, unsigned_repo: RpmRepo) -> None:
    r = env.nspawnbuild("build", str(recipe(env.tmp / "unsigned.toml", unsigned_repo,
                                            "unsigned")))
    assert r.returncode == 1
    assert "bootstrap (dnf) failed" in r.stderr and "Traceback" not in r.stderr
    assert "not signed" in r.stderr or "GPG" in r.stderr, r.stderr
    out = env.out / "unsigned"
    assert not out.exists() or [p.name for p in out.iterdir()] == ["build.log"]


def test_recipes_fedora_base_validates_and_asks_for_repositories(env: Env) -> None:
    ok = env.nspawnbuild("validate", str(ROOT / "recipes" / "fedora-base.toml"))
    assert ok.returncode == 0, ok.stderr
    # this Debian machine has dnf but no repository files, and fedora-base names none: the
    # build says so and what to add (on a Fedora host it would use the host's repositories)
    if any(any(Path(d).glob("*.repo")) for d in ("/etc/yum.repos.d", "/etc/yum/repos.d")):
        pytest.skip("this host has dnf repository files: fedora-base would use them")
    r = env.nspawnbuild("build", "fedora-base")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "names no [[base.repos]] and this host has no dnf repository files" in r.stderr
    assert "[[base.repos]]" in r.stderr and "gpgkey" in r.stderr
    assert not (env.out / "fedora-base" / "manifest.json").exists()


def test_a_host_without_dnf_is_told_which_package_to_install(env: Env,
                                                             signed_repo: RpmRepo) -> None:
    r = env.nspawnbuild("build", str(recipe(env.tmp / "nodnf.toml", signed_repo, "nodnf")),
                        PATH=str(env.tmp / "empty-bin"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "'dnf' is not installed on this host but is needed to bootstrap fedora; install it " \
           "with: apt-get install dnf" in r.stderr
    assert not (env.out / "nodnf").exists()


def tree_digests(tarball: Path) -> dict[str, tuple[int, int, str, str]]:
    """Each member's mode, mtime, link target and content sha256."""
    with tar_stream(tarball) as tar:
        return {m.name: (m.mode, m.mtime, m.linkname,
                         hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                         if m.isfile() else "") for m in tar}


def test_lock_pins_dnf_to_the_locked_versions_then_fails_when_they_are_gone(
        env: Env, tmp_path: Path) -> None:
    """Lock; the repository gets newer versions of the recipe's package and of its dependency
    beside the locked ones: a clean locked build installs the locked ones (the same tarball);
    the locked version removed: exit 1 naming it; ``lock --update`` prints the change."""
    repo = build_repo(tmp_path / "rpm-lock", FEDORA_LIKE[:3])  # fedora-release, systemd, hello
    path = env.tmp / "fedlock.toml"
    path.write_text(repo.recipe("fedlock"))
    lock_path = path.with_name("fedlock.lock.json")

    def build(where: str) -> subprocess.CompletedProcess[str]:
        # a cache of its own each time: the base is resolved against the repository as it is
        return env.nspawnbuild("build", str(path), NSPAWNBUILD_OUT=str(env.tmp / where),
                               NSPAWNBUILD_WORK=str(env.tmp / f"work-{where}"),
                               NSPAWNBUILD_CACHE=str(env.tmp / f"cache-{where}"))

    def versions(where: str) -> dict[str, str]:
        manifest = json.loads((env.tmp / where / "fedlock" / "manifest.json").read_text())
        return {p["name"]: p["version"] for p in manifest["packages"]}

    r = env.nspawnbuild("lock", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    locked = {p["name"]: p["version"] for p in json.loads(lock_path.read_text())["packages"]}
    assert locked == {"fedora-release": "44-1", "systemd": "257.1-2.fc44",
                      "hello-nspawnbuild": "1.2.3-1"}
    r = build("one")
    assert r.returncode == 0, r.stdout + r.stderr
    assert versions("one") == locked

    add_packages(repo, [
        RpmPackage("systemd", "258.1", {"/usr/lib/systemd/systemd": "#!/bin/sh\\n"},
                   release="1.fc44"),
        RpmPackage("hello-nspawnbuild", "1.2.4", {"/usr/share/hello/hello.txt": "hello 4\\n"},
                   requires=("systemd >= 258",))])
    r = build("two")
    assert r.returncode == 0, r.stdout + r.stderr
    assert versions("two") == locked  # the dependency too: systemd 258.1 was never taken
    log = (env.tmp / "two" / "fedlock" / "build.log").read_text()
    assert "hello-nspawnbuild-1.2.3-1" in log and "excludepkgs=" in log
    # the same tarball as the first build's: dnf's history and SQLite's shared-memory index,
    # which differed between any two dnf builds, are not in the image
    one, two = (tree_digests(tarball_of(env.tmp / w / "fedlock")) for w in ("one", "two"))
    assert "./usr/lib/sysimage/rpm/rpmdb.sqlite" in one
    assert not [k for k in one if "history.sqlite" in k or k.endswith("-shm")], sorted(one)
    assert {k for k in set(one) | set(two) if one.get(k) != two.get(k)} == set()
    assert hashlib.sha256(tarball_of(env.tmp / "one" / "fedlock").read_bytes()).hexdigest() == \
        hashlib.sha256(tarball_of(env.tmp / "two" / "fedlock").read_bytes()).hexdigest()

    # an unlocked build of the same recipe takes the newer ones: the lock is what held them
    unlocked = env.tmp / "unlocked" / "fedlock.toml"  # no lock beside it
    unlocked.parent.mkdir()
    shutil.copyfile(path, unlocked)
    r = env.nspawnbuild("build", str(unlocked),
                        NSPAWNBUILD_OUT=str(env.tmp / "free"),
                        NSPAWNBUILD_WORK=str(env.tmp / "work-free"),
                        NSPAWNBUILD_CACHE=str(env.tmp / "cache-free"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert versions("free")["hello-nspawnbuild"] == "1.2.4-1"
    assert versions("free")["systemd"] == "258.1-1.fc44"

    remove_packages(repo, ["hello-nspawnbuild-1.2.3-1.noarch.rpm"])
    r = build("three")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "hello-nspawnbuild: locked 1.2.3-1, the repositories have 1.2.4-1" in r.stderr, \
        r.stderr
    assert "nspawnbuild lock --update RECIPE" in r.stderr
    assert not (env.tmp / "three" / "fedlock" / "manifest.json").exists()  # nothing published

    r = env.nspawnbuild("lock", "--update", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "~ hello-nspawnbuild 1.2.3-1 -> 1.2.4-1 (noarch)" in r.stdout.splitlines(), r.stdout
    assert "~ systemd 257.1-2.fc44 -> 258.1-1.fc44 (noarch)" in r.stdout.splitlines(), r.stdout
