"""Alpine for real: the real apk (built from source), a signed local repository on a loopback
HTTP server, systemd-nspawn running the features and a post-step in the image.

Alpine's own packages cannot be reached from here: the repository holds small stand-ins with
the names Alpine uses (alpine-base with os-release and inittab, Debian's static busybox as the
shell, apk-tools carrying the apk built here, and a stand-in for OpenRC's ``rc-update`` that
makes the runlevel symlink the real one makes). Everything nspawnbuild does runs for real:
downloading the static apk and checking its pinned sha256, ``apk --initdb add`` with signature
checks against the recipe's keys, the OpenRC preparation, the features through the Alpine
distro object, a post-step that installs a package with apk inside the container, the package
list read from apk's database, packing and the settings.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
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
from apkrepo import (  # noqa: E402
    AlpineRepo,
    ApkPackage,
    add_packages,
    build_apk_static,
    build_repo,
    busybox,
    remove_packages,
)

pytestmark = pytest.mark.integration

NO_PROXY = {"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOM5g5Xq4uZRN8P7ZtrDL2u0Mm0v1rJ3Y7Pn0M8oXHQ9 test@alpine"
RC_UPDATE = """#!/bin/sh
# stand-in for OpenRC's rc-update in the nspawnbuild tests: "add SERVICE [RUNLEVEL]"
[ "$1" = add ] || exit 1
/bin/busybox mkdir -p "/etc/runlevels/${3:-default}"
/bin/busybox ln -sf "/etc/init.d/$2" "/etc/runlevels/${3:-default}/$2"
"""
APPLETS = ("ln", "mkdir", "cat", "ls", "rm", "touch", "chmod", "chown", "mv", "grep", "sed")


def packages(apk_static: Path) -> dict[str, list[ApkPackage]]:
    init = "#!/sbin/openrc-run\n"
    return {
        "main": [
            ApkPackage("alpine-base", "3.22.1-r0", {
                "/etc/os-release": 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.22.1\n',
                "/etc/alpine-release": "3.22.1\n",
                "/etc/inittab": "::sysinit:/sbin/openrc sysinit\n"
                                + "".join(f"tty{i}::respawn:/sbin/getty 38400 tty{i}\n"
                                          for i in range(1, 4)),
                "/etc/init.d/local": init}, depends=("alpine-baselayout", "busybox")),
            ApkPackage("alpine-baselayout", "3.7.0-r0", {
                "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
                "/etc/group": "root:x:0:root\n", "/etc/shadow": "root:*::0:::::\n",
                "/root/.profile": "# root's profile\n"}, modes={"/etc/shadow": 0o640}),
            ApkPackage("busybox", "1.37.0-r19", {"/bin/busybox": busybox()},
                       modes={"/bin/busybox": 0o755},
                       symlinks={"/bin/sh": "busybox",
                                 **{f"/bin/{a}": "busybox" for a in APPLETS}}),
            ApkPackage("openrc", "0.62.6-r0", {"/sbin/rc-update": RC_UPDATE,
                                               "/etc/rc.conf": '#rc_parallel="NO"\n#rc_sys=""\n'},
                       modes={"/sbin/rc-update": 0o755}, depends=("busybox",)),
            ApkPackage("ifupdown-ng", "0.12.1-r7", {"/etc/init.d/networking": init}),
            ApkPackage("apk-tools", "2.14.7-r0", {"/sbin/apk": apk_static.read_bytes()},
                       modes={"/sbin/apk": 0o755}),
            ApkPackage("musl-locales", "0.1.0-r1", {"/usr/share/i18n/locales/musl/en_US.UTF-8": "x"}),
        ],
        "community": [
            ApkPackage("openssh-server", "10.0_p1-r7", {"/etc/init.d/sshd": init,
                                                        "/etc/ssh/sshd_config": "#Port 22\n"}),
            ApkPackage("hello-alpine", "1.0-r3", {"/usr/share/hello-alpine.txt": "hello\n"}),
        ],
    }


@pytest.fixture(scope="module")
def apk_static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_apk_static(tmp_path_factory.mktemp("apk-tools"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, apk_static: Path) -> AlpineRepo:
    return build_repo(tmp_path_factory.mktemp("alpine-repo"), apk_static, packages(apk_static))


@pytest.fixture(scope="module")
def mirror(repo: AlpineRepo, apk_static: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT serving the repository under alpine/ and apk.static."""
    with serving(repo, apk_static) as url:
        yield url


@contextlib.contextmanager
def serving(repo: AlpineRepo, apk_static: Path) -> Iterator[str]:
    """``repo`` (under alpine/) and apk.static on a loopback HTTP server: its URL."""
    os.link(apk_static, repo.root.parent / "apk.static")
    handler = functools.partial(QuietHandler, directory=str(repo.root.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


#: the paths the test server was asked for (its log, not printed)
REQUESTS: list[str] = []


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        REQUESTS.append(self.path)


def recipe(path: Path, mirror: str, apk_static: Path, keys: Path, extra: str = "") -> Path:
    path.write_text(f'''name = "{path.stem}"
packages = ["openssh-server", "apk-tools"]

[base]
distro = "alpine"
release = "3.22"
arch = "x86_64"
mirror = "{mirror}/alpine"
apk_static_url = "{mirror}/apk.static"
apk_static_sha256 = "{hashlib.sha256(apk_static.read_bytes()).hexdigest()}"
keys_dir = "{keys}"
{extra}''')
    return path


FEATURES = f'''
[features.ssh]
authorized_keys = ["{KEY}"]

[features.network]
address = ["192.0.2.10/24"]
gateway = ["192.0.2.1"]
dns = ["192.0.2.53"]

[features.locales]
locales = ["en_US.UTF-8"]

[features.firstboot]
commands = ["echo first boot"]

[[post]]
name = "apk inside the container"
run = """
apk add --no-cache hello-alpine
cat /usr/share/hello-alpine.txt > /etc/hello-copy
"""
'''


def tree_files(tarball: Path) -> dict[str, tarfile.TarInfo]:
    with tar_stream(tarball) as tar:
        return {m.name: m for m in tar}


def test_alpine_image_with_the_real_apk(env: Env, mirror: str, apk_static: Path,
                                        repo: AlpineRepo) -> None:
    r = env.nspawnbuild("build", str(recipe(env.tmp / "alpine-test.toml", mirror, apk_static,
                                            repo.keys_dir, FEATURES)), **NO_PROXY)
    assert r.returncode == 0, r.stdout + r.stderr
    out = env.out / "alpine-test"
    rootfs = unpack(tarball_of(out), env.tmp / "tree")

    manifest = json.loads((out / "manifest.json").read_text())
    versions = {p["name"]: p["version"] for p in manifest["packages"]}
    assert versions["alpine-base"] == "3.22.1-r0" and versions["openrc"] == "0.62.6-r0"
    assert versions["hello-alpine"] == "1.0-r3"  # installed by apk in the post-step
    assert versions["musl-locales"] == "0.1.0-r1"  # asked for by [features.locales]
    assert manifest["bootstrapper"]["name"] == "apk.static"
    assert (rootfs / "etc/hello-copy").read_text() == "hello\n"
    check_sbom(out)

    # OpenRC made to run under nspawn, and the features done the OpenRC way
    assert "#tty1::respawn" in (rootfs / "etc/inittab").read_text()
    assert "\ntty" not in (rootfs / "etc/inittab").read_text()
    assert 'rc_sys="systemd-nspawn"' in (rootfs / "etc/rc.conf").read_text()
    for service in ("networking", "sshd", "local"):
        link = rootfs / "etc/runlevels/default" / service
        assert os.readlink(link) == f"/etc/init.d/{service}", service
    assert "address 192.0.2.10/24" in (rootfs / "etc/network/interfaces").read_text()
    assert (rootfs / "etc/resolv.conf").read_text().endswith("nameserver 192.0.2.53\n")
    assert KEY in (rootfs / "root/.ssh/authorized_keys").read_text()
    assert "export LANG=en_US.UTF-8" in (rootfs / "etc/profile.d/20-nspawnbuild-locale.sh").read_text()
    assert (rootfs / "etc/local.d/50-nspawnbuild-firstboot.start").stat().st_mode & 0o111
    assert (rootfs / "etc/apk/repositories").read_text() == (
        f"{mirror}/alpine/v3.22/main\n{mirror}/alpine/v3.22/community\n")

    files = tree_files(tarball_of(out))
    assert "./etc/apk/keys/nspawnbuild-test-0001.rsa.pub" in files
    assert not [n for n in files if n.endswith("apk.static") or "/.apk-" in n]  # no helper left
    assert not [n for n in files if n.startswith("./var/cache/apk/") and files[n].isfile()]
    assert "KillSignal=SIGTERM" in (out / "alpine-test.nspawn").read_text()


def test_a_rebuild_in_one_cache_downloads_no_package_again(env: Env, mirror: str,
                                                           apk_static: Path,
                                                           repo: AlpineRepo) -> None:
    path = recipe(env.tmp / "alpcache.toml", mirror, apk_static, repo.keys_dir)

    cache = env.tmp / "one-cache"  # this test's own: the session's may hold packages already

    def build(where: str) -> dict[str, int]:
        return env.package_cache_use(path, where, cache, **NO_PROXY)

    # the base (alpine-base, alpine-baselayout, busybox, openrc, ifupdown-ng) and the layer
    # (openssh-server, apk-tools): every package downloaded, under apk's cache names
    REQUESTS.clear()
    cold = build("one")
    assert cold["from_cache"] == 0 and cold["downloaded"] == 7 and cold["downloaded_bytes"] > 0
    assert len([q for q in REQUESTS if q.endswith(".apk")]) == 7, REQUESTS
    names = sorted(p.name for p in (cache / "packages").glob("*/*.apk"))
    assert len(names) == 7 and [n for n in names if n.startswith("openssh-server-10.0_p1-r7.")]
    # the base and the package layer made again (a re-bootstrap), from the same package cache
    shutil.rmtree(cache / "bootstrap")
    shutil.rmtree(cache / "layers")
    REQUESTS.clear()
    again = build("two")
    assert not [q for q in REQUESTS if q.endswith(".apk")], REQUESTS  # none fetched
    assert again == {"from_cache": 7, "downloaded": 0, "downloaded_bytes": 0}, again
    files = tree_files(tarball_of(env.tmp / "two" / "alpcache"))
    assert not [n for n in files if n.endswith(".apk") or "/.apk-" in n]
    assert not [n for n in files if n.startswith("./var/cache/apk/") and files[n].isfile()]
    assert set(files) == set(tree_files(tarball_of(env.tmp / "one" / "alpcache")))


def test_packages_signed_by_another_key_are_refused(env: Env, mirror: str, apk_static: Path,
                                                    tmp_path: Path) -> None:
    other = tmp_path / "other-keys"
    other.mkdir()
    os.system(f"openssl genrsa 2048 2>/dev/null | openssl rsa -pubout -out "
              f"{other / 'nspawnbuild-test-0001.rsa.pub'} 2>/dev/null")
    assert (other / "nspawnbuild-test-0001.rsa.pub").stat().st_size > 0
    r = env.nspawnbuild("build", str(recipe(env.tmp / "untrusted.toml", mirror, apk_static,
                                            other)), **NO_PROXY)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "bootstrap (apk) failed" in r.stderr and "BAD signature" in r.stderr, r.stderr
    assert not (env.out / "untrusted" / "manifest.json").exists()


def test_a_wrong_pinned_checksum_stops_before_apk_runs(env: Env, mirror: str, apk_static: Path,
                                                       repo: AlpineRepo) -> None:
    path = recipe(env.tmp / "badsum.toml", mirror, apk_static, repo.keys_dir)
    right = hashlib.sha256(apk_static.read_bytes()).hexdigest()
    path.write_text(path.read_text().replace(right, "0" * 64))
    r = env.nspawnbuild("build", str(path), **NO_PROXY)
    assert r.returncode == 1 and "0" * 64 in r.stderr and right in r.stderr
    assert "bootstrap (apk)" not in r.stderr  # apk never ran


def test_lock_pins_apk_to_the_locked_versions_then_fails_when_they_are_gone(
        env: Env, apk_static: Path, tmp_path: Path) -> None:
    """A repository of this test's own: build without a lock, lock, build with it (the same
    tarball); newer versions of a recipe's package and of a base dependency published beside
    the locked ones: a clean locked build installs the locked ones (the same tarball again);
    the locked version removed: exit 1 naming it; ``lock --update`` prints the changes."""
    own = build_repo(tmp_path / "alpine-lock", apk_static, packages(apk_static))
    with serving(own, apk_static) as url:
        _lock_round_trip(env, apk_static, own, url)


def _lock_round_trip(env: Env, apk_static: Path, own: AlpineRepo, url: str) -> None:
    (env.tmp / "free").mkdir()  # a copy of the recipe with no lock beside it
    unlocked = recipe(env.tmp / "free" / "alplock.toml", url, apk_static, own.keys_dir)
    path = env.tmp / "alplock.toml"
    shutil.copyfile(unlocked, path)
    lock_path = path.with_name("alplock.lock.json")

    def build(recipe_path: Path, where: str) -> subprocess.CompletedProcess[str]:
        # a cache of its own each time: the base is resolved against the repository as it is
        return env.nspawnbuild("build", str(recipe_path), NSPAWNBUILD_OUT=str(env.tmp / where),
                               NSPAWNBUILD_WORK=str(env.tmp / f"work-{where}"),
                               NSPAWNBUILD_CACHE=str(env.tmp / f"cache-{where}"), **NO_PROXY)

    def manifest(where: str) -> dict[str, object]:
        return dict(json.loads((env.tmp / where / "alplock" / "manifest.json").read_text()))

    def versions(where: str) -> dict[str, str]:
        return {p["name"]: p["version"] for p in manifest(where)["packages"]}  # type: ignore[attr-defined]

    def tarball(where: str) -> str:
        return str(manifest(where)["artifacts"]["tarball"]["sha256"])  # type: ignore[index]

    r = build(unlocked, "zero")
    assert r.returncode == 0, r.stdout + r.stderr
    r = env.nspawnbuild("lock", str(path), **NO_PROXY)
    assert r.returncode == 0, r.stdout + r.stderr
    locked = {p["name"]: p["version"] for p in json.loads(lock_path.read_text())["packages"]}
    assert locked["openssh-server"] == "10.0_p1-r7" and locked["alpine-baselayout"] == "3.7.0-r0"
    r = build(path, "one")
    assert r.returncode == 0, r.stdout + r.stderr
    assert versions("one") == locked == versions("zero")
    # the image is the unlocked build's: apk's world names packages, no =VERSION left
    assert tarball("one") == tarball("zero")
    world = (unpack(tarball_of(env.tmp / "one" / "alplock"), env.tmp / "tree") / "etc/apk/world")
    assert world.read_text() == "alpine-base\napk-tools\nifupdown-ng\nopenrc\nopenssh-server\n"

    # newer versions beside the locked ones: the recipe's package (wanting a package the lock
    # does not hold) and a dependency of the base that no recipe names
    add_packages(own, apk_static, "community", [
        ApkPackage("openssh-server", "10.2_p1-r0", {"/etc/init.d/sshd": "#!/sbin/openrc-run\n"},
                   depends=("musl-locales",))])
    add_packages(own, apk_static, "main", [
        ApkPackage("alpine-baselayout", "3.8.0-r0", {"/etc/passwd": "root:x:0:0::/root:/bin/sh\n",
                                                     "/etc/group": "root:x:0:root\n"})])
    r = build(unlocked, "newer")
    assert r.returncode == 0, r.stdout + r.stderr
    assert versions("newer")["openssh-server"] == "10.2_p1-r0"  # what the lock holds back
    assert versions("newer")["alpine-baselayout"] == "3.8.0-r0"
    r = build(path, "two")
    assert r.returncode == 0, r.stdout + r.stderr
    assert versions("two") == locked
    assert tarball("two") == tarball("one")
    log = (env.tmp / "two" / "alplock" / "build.log").read_text()
    assert "alpine-baselayout=3.7.0-r0" in log and "openssh-server=10.0_p1-r7" in log

    remove_packages(own, apk_static, "community", ["openssh-server-10.0_p1-r7.apk"])
    r = build(path, "three")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "openssh-server: locked 10.0_p1-r7, apk: unable to select it" in r.stderr, r.stderr
    assert "nspawnbuild lock --update RECIPE" in r.stderr
    assert not (env.tmp / "three" / "alplock" / "manifest.json").exists()  # nothing published

    r = env.nspawnbuild("lock", "--update", str(path), **NO_PROXY)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "~ openssh-server 10.0_p1-r7 -> 10.2_p1-r0 (x86_64)" in lines, r.stdout
    assert "~ alpine-baselayout 3.7.0-r0 -> 3.8.0-r0 (x86_64)" in lines, r.stdout
    assert "+ musl-locales 0.1.0-r1 (x86_64)" in lines, r.stdout
