"""Alpine without a build: apk's database, the features' packages and settings, validation.

The build itself, with the real apk against a signed local repository, is in
test_integration_alpine.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_features import refused, write

from conftest import Env
from nspawnbuild.errors import BuildError
from nspawnbuild.plan import collect_packages, nspawn_settings
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild_plugins import alpine
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

def test_apk_database_parsing() -> None:
    assert [p.as_dict() for p in parse_apk_installed(INSTALLED)] == [
        {"name": "busybox", "version": "1.37.0-r18", "arch": "x86_64", "installed_size_kib": 780,
         "digest": "apk:Q1def="},
        {"name": "musl", "version": "1.2.5-r10", "arch": "x86_64", "installed_size_kib": 728,
         "digest": "apk:Q1abc="}]


def alpine_text(body: str = "", base: str = "") -> str:
    return f'name = "alp"\n[base]\ndistro = "alpine"\nrelease = "3.22"\n{base}\n{body}'


def alpine_recipe(tmp_path: Path, body: str = "", base: str = "") -> Path:
    return write(tmp_path, alpine_text(body, base), "a")


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
    distro = recipe.distro
    packages = collect_packages(recipe)
    for pkg in ("alpine-base", "openrc", "ifupdown-ng", "openssh-server", "musl-locales", "shadow"):
        assert pkg in packages, pkg
    assert "systemd-networkd" not in packages and "locales" not in packages
    settings = {(s.section, s.key): s.value for s in nspawn_settings(recipe)}
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
    refused(tmp_path, alpine_text(body, base), key, message)


def test_argv_never_allows_untrusted_packages(tmp_path: Path) -> None:
    argv = Alpine({"distro": "alpine", "arch": "x86_64"}).apk_argv(
        Path("/tmp/x/apk.static"), tmp_path / "root", ["alpine-base", "openrc"])
    assert argv[:6] == ["/tmp/x/apk.static", "--root", str(tmp_path / "root"), "--initdb",
                        "--arch", "x86_64"]
    assert argv[-3:] == ["add", "alpine-base", "openrc"]
    assert "--allow-untrusted" not in argv


def test_the_static_apk_comes_from_the_cache_it_is_given(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from nspawnbuild_plugins import alpine

    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "alpine.rsa.pub").write_text("key")
    asked: list[Path] = []

    def fetch(url: str, sha: str, cache: Path, **_: object) -> Path:
        asked.append(cache)
        raise BuildError("stop here")

    monkeypatch.setattr(alpine, "fetch", fetch)
    d = Alpine({"distro": "alpine", "mirror": "http://127.0.0.1:9/alpine",
                "apk_static_url": "http://127.0.0.1:9/apk.static", "keys_dir": str(keys)})

    class Log:
        def note(self, text: str) -> None:
            pass

    with pytest.raises(BuildError, match="stop here"):
        d.bootstrap(tmp_path / "root", ["alpine-base"], 0, Log(), tmp_path / "cache")  # type: ignore[arg-type]
    assert asked == [tmp_path / "cache"]  # not the environment's cache directory
    assert not (tmp_path / "root").exists()


def test_alpine_traits_for_features() -> None:
    assert Alpine.traits["network"]["backends"] == ["ifupdown"]
    assert Alpine.traits["firstboot"] == {"style": "openrc-local"}
    assert "glibc" in Alpine.traits["gpu-nvidia"]["unsupported"]
    assert set(Alpine.unused_keys) == {"components", "variant"}
    assert "mirror" in Alpine.base_schema  # the mirror is named by the recipe or the environment


@pytest.mark.integration
def test_alpine_without_mirror_or_keys_says_what_to_set(env: Env) -> None:
    r = env.nspawnbuild("build", "alpine-base", NSPAWNBUILD_ALPINE_MIRROR="",
                        NSPAWNBUILD_APK_STATIC_URL="")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "apk_static_url" in r.stderr or "no mirror" in r.stderr, r.stderr


def test_apk_cache_names_and_its_cache_directory(tmp_path: Path) -> None:
    import base64

    from nspawnbuild.distro import Package
    from nspawnbuild_plugins.alpine import apk_cache_name

    csum = "Q1" + base64.b64encode(bytes.fromhex("deadbeef") + bytes(16)).decode()
    assert apk_cache_name(Package("busybox", "1.37.0-r19", "x86_64", digest=f"apk:{csum}")) \
        == "busybox-1.37.0-r19.deadbeef.apk"
    assert apk_cache_name(Package("busybox", "1.37.0-r19", "x86_64")) == ""
    assert apk_cache_name(Package("busybox", "1", "x86_64", digest="apk:Q1!!")) == ""
    argv = Alpine({"distro": "alpine", "arch": "x86_64"}).apk_argv(
        Path("/tmp/x/apk.static"), tmp_path / "root", ["openrc"], cache_dir=tmp_path / "c")
    assert argv[-4:] == ["--cache-dir", str(tmp_path / "c"), "add", "openrc"]
    assert "--no-cache" not in argv and "--allow-untrusted" not in argv


def test_a_locks_versions_become_apk_requests_and_world_keeps_names() -> None:
    pins = {"openssh-server": "10.0_p1-r7", "busybox": "1.37.0-r19"}
    assert alpine.pinned_requests(["openssh-server", "apk-tools"], pins) == [
        "openssh-server=10.0_p1-r7", "apk-tools"]
    simulated = ("fetch http://127.0.0.1/alpine/v3.22/main/x86_64/APKINDEX.tar.gz\n"
                 "(1/3) Installing busybox (1.38.0-r0)\n"
                 "(2/3) Upgrading openrc (0.62.6-r0 -> 0.63.0-r0)\n"
                 "(3/3) Installing openssh-server (10.0_p1-r7)\nOK: 1 MiB in 3 packages\n")
    assert alpine.apk_changes(simulated) == {"busybox": "1.38.0-r0", "openrc": "0.63.0-r0",
                                             "openssh-server": "10.0_p1-r7"}
    unable = ("ERROR: unable to select packages:\n  lib-1.1-r0:\n"
              "    breaks: world[lib=1.0-r0]\n    satisfies: app-1.0-r0[lib] base-1.0-r0[lib]\n"
              "  app-1.1-r0:\n    breaks: world[app=1.0-r0]\n"
              "  gone (no such package):\n    required by: world[gone=2-r0]\n")
    assert alpine.broken_requests(unable) == ["app", "gone", "lib"]
    assert alpine.broken_requests("ERROR: BAD signature\n") == []
    # the world an unlocked build leaves: what it held and the names asked for, no versions
    assert alpine.unlocked_world("alpine-base\nopenrc\n", ["openssh-server", "apk-tools"]) == \
        "alpine-base\napk-tools\nopenrc\nopenssh-server\n"
    assert alpine.unlocked_world("busybox=1.37.0-r19\n", []) == "busybox\n"


def test_a_simulation_is_asked_for_and_a_lock_keys_the_base() -> None:
    distro = Alpine({"distro": "alpine", "arch": "x86_64", "mirror": "http://127.0.0.1/alpine"})
    argv = distro.apk_argv(Path("/a/apk"), Path("/r"), ["x=1-r0"], initdb=False,
                           cache_dir=Path("/c"), simulate=True)
    assert argv[-3:] == ["--simulate", "add", "x=1-r0"] and "--initdb" not in argv
    assert "pins" not in distro.bootstrap_inputs()
    distro.pins = {"busybox": "1.37.0-r19"}
    first = distro.bootstrap_inputs()["pins"]
    distro.pins = {"busybox": "1.37.0-r20"}
    assert distro.bootstrap_inputs()["pins"] != first
