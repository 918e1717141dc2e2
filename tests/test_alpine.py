"""Alpine: what can be checked on a Debian machine that cannot reach Alpine's mirrors.

There is no ``apk`` in Debian's archive or on PyPI, so the real apk cannot run here. What is
real: the download of the static apk over HTTP (loopback server) with its checksum checked,
the command line apk gets, every file nspawnbuild writes into the tree, the package list read
from apk's database, the nspawn settings and what the features ask of the distro. apk itself is
played by a small shell script that records its arguments and lays out the files the real apk
would (``lib/apk/db/installed``, ``/etc/inittab``, ``/etc/rc.conf``, ``/etc/os-release``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard
from test_sources import NO_PROXY, Server, server  # noqa: F401  (the loopback server fixture)

from conftest import Env
from nspawnbuild.errors import RecipeError
from nspawnbuild.plan import collect_packages, make_distro, nspawn_settings
from nspawnbuild.recipe import load_recipe
from nspawnbuild_plugins.alpine import Alpine, parse_apk_installed

INSTALLED = """\
C:Q1abc=
P:musl
V:1.2.5-r10
A:x86_64
S:411000
I:745472

C:Q1def=
P:busybox
V:1.37.0-r18
A:x86_64
I:798720
"""

#: plays apk: records its arguments, checks the keys are there, lays out a minimal tree
FAKE_APK = r"""#!/bin/sh
set -e
echo "$0 $*" > "$APK_RECORD"
root=""; pkgs=""; seen_add=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="$2"; shift ;;
    add) seen_add=1 ;;
    --*) ;;
    *) [ -n "$seen_add" ] && pkgs="$pkgs $1" ;;
  esac
  shift
done
ls "$root"/etc/apk/keys/*.rsa.pub > /dev/null || { echo "UNTRUSTED: no keys" >&2; exit 1; }
mkdir -p "$root/lib/apk/db" "$root/etc/network"
for p in $pkgs; do printf 'P:%s\nV:1.0-r0\nA:x86_64\nI:4096\n\n' "$p"; done > "$root/lib/apk/db/installed"
printf 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.22.0\n' > "$root/etc/os-release"
printf '::sysinit:/sbin/openrc sysinit\ntty1::respawn:/sbin/getty 38400 tty1\n' > "$root/etc/inittab"
printf 'tty2::respawn:/sbin/getty 38400 tty2\n' >> "$root/etc/inittab"
printf '#rc_parallel="NO"\n#rc_sys=""\n' > "$root/etc/rc.conf"
echo "nameserver 192.0.2.53" > "$root/etc/resolv.conf"
"""


def test_apk_database_parsing() -> None:
    assert [p.as_dict() for p in parse_apk_installed(INSTALLED)] == [
        {"name": "busybox", "version": "1.37.0-r18", "arch": "x86_64", "installed_size_kib": 780},
        {"name": "musl", "version": "1.2.5-r10", "arch": "x86_64", "installed_size_kib": 728}]


def alpine_recipe(tmp_path: Path, body: str = "", base: str = "") -> Path:
    path = tmp_path / "a.toml"
    path.write_text(f'name = "alp"\n[base]\ndistro = "alpine"\nrelease = "3.22"\n{base}\n{body}')
    return path


def test_features_ask_the_distro_for_alpine_ways(tmp_path: Path) -> None:
    recipe = load_recipe(alpine_recipe(tmp_path, """
[features.ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOM5g5Xq4uZRN8P7ZtrDL2u0Mm0v1rJ3Y7Pn0M8oXHQ9 a@b"]
[features.network]
[features.locales]
locales = ["en_US.UTF-8"]
[[features.users.accounts]]
name = "app"
"""))
    distro = make_distro(recipe)
    packages = collect_packages(recipe, distro)
    for pkg in ("alpine-base", "openrc", "ifupdown-ng", "openssh-server", "musl-locales", "shadow"):
        assert pkg in packages, pkg
    assert "systemd-networkd" not in packages and "locales" not in packages
    settings = {(s.section, s.key): s.value for s in nspawn_settings(recipe, distro)}
    assert settings[("Exec", "KillSignal")] == "SIGTERM"  # OpenRC, not systemd
    assert distro.enable_service_command("sshd") == ["rc-update", "add", "sshd", "default"]
    assert distro.enable_service_command("networking.service") == [
        "rc-update", "add", "networking", "default"]


@pytest.mark.parametrize(("body", "base", "key", "message"), [
    ('[features.network]\nbackend = "networkd"\n', "", "features.network.backend",
     "alpine images cannot use networkd"),
    ('[features.gpu-nvidia]\ndriver_version = "550.54.14"\n', "", "features.gpu-nvidia",
     "built for glibc"),
    ("", 'components = ["main"]', "base.components", "does not use components"),
    ("", 'arch = "riscv64"', "base.apk_static_sha256", "no checksum of apk.static"),
])
def test_what_alpine_cannot_do_is_a_clear_error(tmp_path: Path, body: str, base: str, key: str,
                                                message: str) -> None:
    with pytest.raises(RecipeError) as e:
        load_recipe(alpine_recipe(tmp_path, body, base))
    assert any(p.key == key and message in p.message for p in e.value.problems), e.value


def test_argv_never_allows_untrusted_packages(tmp_path: Path) -> None:
    argv = Alpine({"distro": "alpine", "arch": "x86_64"}).apk_argv(
        Path("/tmp/x/apk.static"), tmp_path / "root", ["alpine-base", "openrc"])
    assert argv[:6] == ["/tmp/x/apk.static", "--root", str(tmp_path / "root"), "--initdb",
                        "--arch", "x86_64"]
    assert argv[-3:] == ["add", "alpine-base", "openrc"]
    assert "--allow-untrusted" not in argv


# -- the build, with the static apk downloaded from a loopback server --------------------------

def build_recipe(path: Path, server: Server, apk: bytes, keys: Path, sha: str | None = None) -> Path:  # noqa: F811
    path.write_text(f'''name = "alpine-test"
packages = ["openssh-server"]
[base]
distro = "alpine"
release = "3.22"
arch = "x86_64"
mirror = "{server.url("alpine")}"
apk_static_url = "{server.url("apk.static")}"
apk_static_sha256 = "{sha or hashlib.sha256(apk).hexdigest()}"
keys_dir = "{keys}"
''')
    return path


@pytest.mark.integration
def test_alpine_build_with_a_downloaded_static_apk(env: Env, server: Server) -> None:  # noqa: F811
    apk = FAKE_APK.encode()
    server.files["apk.static"] = apk
    keys = env.tmp / "keys"
    keys.mkdir()
    (keys / "test-0001.rsa.pub").write_text("-----BEGIN PUBLIC KEY-----\nMFww\n-----END PUBLIC KEY-----\n")
    record = env.tmp / "apk-argv"
    recipe = build_recipe(env.tmp / "alpine-test.toml", server, apk, keys)

    # a wrong pinned checksum: the download is refused, nothing runs, nothing is published
    bad = build_recipe(env.tmp / "bad.toml", server, apk, keys, sha="0" * 64)
    r = env.nspawnbuild("build", str(bad), APK_RECORD=str(record), **NO_PROXY)
    assert r.returncode == 1 and "0" * 64 in r.stderr and hashlib.sha256(apk).hexdigest() in r.stderr
    assert not record.exists()

    r = env.nspawnbuild("build", str(recipe), APK_RECORD=str(record), **NO_PROXY)
    assert r.returncode == 0, r.stdout + r.stderr
    argv = record.read_text().split()
    assert argv[0].endswith("/apk.static") and "--initdb" in argv and "--allow-untrusted" not in argv
    assert argv[argv.index("add") + 1:] == sorted(["alpine-base", "ifupdown-ng", "openrc",
                                                   "openssh-server"])
    # the refused download was not kept; this one is (the mirror itself is apk's business)
    assert server.requests == ["/apk.static", "/apk.static"]

    out = env.out / "alpine-test"
    with open(out / "alpine-test.tar.zst", "rb") as fh, \
            zstandard.ZstdDecompressor().stream_reader(fh) as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        files = {m.name: tar.extractfile(m).read().decode() for m in tar if m.isfile()}  # type: ignore[union-attr]
        # (symlinks are not files; the runlevel link is checked in the work tree below)
    assert not [n for n in files if n.endswith("apk.static")]  # no helper left in the image
    assert files["./etc/apk/repositories"] == (f"{server.url('alpine')}/v3.22/main\n"
                                               f"{server.url('alpine')}/v3.22/community\n")
    assert "./etc/apk/keys/test-0001.rsa.pub" in files
    assert "#tty1::respawn" in files["./etc/inittab"] and "\ntty2" not in files["./etc/inittab"]
    assert 'rc_sys="systemd-nspawn"' in files["./etc/rc.conf"]
    assert "192.0.2.53" not in files["./etc/resolv.conf"]  # what the bootstrap left is replaced
    assert "nameserver" not in files["./etc/resolv.conf"].replace("# ", "")
    tree = env.work / "recipes" / "alpine-test" / "rootfs"
    assert os.readlink(tree / "etc/runlevels/default/networking") == "/etc/init.d/networking"
    nspawn = (out / "alpine-test.nspawn").read_text()
    assert "KillSignal=SIGTERM" in nspawn
    manifest = json.loads((out / "manifest.json").read_text())
    assert {p["name"]: p["version"] for p in manifest["packages"]}["openssh-server"] == "1.0-r0"
    assert manifest["bootstrapper"]["name"] == "apk.static"


@pytest.mark.integration
def test_alpine_without_mirror_or_keys_says_what_to_set(env: Env) -> None:
    r = env.nspawnbuild("build", "alpine-base", NSPAWNBUILD_ALPINE_MIRROR="",
                        NSPAWNBUILD_APK_STATIC_URL="")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "apk_static_url" in r.stderr or "no mirror" in r.stderr, r.stderr
