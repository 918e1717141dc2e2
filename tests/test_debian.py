"""The Debian bootstrapper: command lines, the debootstrap fallback, reading dpkg's status."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nspawnbuild.errors import BuildError, HostToolMissing
from nspawnbuild.sandbox import ISOLATE
from nspawnbuild_plugins import debian
from nspawnbuild_plugins.debian import Debian, deb_file_key, parse_dpkg_status


class FakeLog:
    def __init__(self) -> None:
        self.argv: list[str] = []
        self.env: dict[str, str] = {}

    def run(self, argv, *, step, env=None, **_):  # noqa: ANN001
        argv = list(argv)
        self.isolated = argv[:len(ISOLATE)] == ISOLATE
        self.argv, self.env = argv[len(ISOLATE):] if self.isolated else argv, dict(env or {})

    def note(self, text: str) -> None:
        pass


def only(tools: set[str]):
    real = shutil.which
    tools = tools | {"unshare"}  # not what these tests are about
    return lambda name, *a, **k: real(name) if name in tools else None


def test_mmdebstrap_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    d = Debian({"distro": "debian", "release": "bookworm", "arch": "amd64",
                "components": ["main", "contrib"], "variant": "minbase"})
    log = FakeLog()
    d.bootstrap(tmp_path / "root", ["dbus", "systemd-sysv"], 1700000000, log, tmp_path / "cache")  # type: ignore[arg-type]
    assert log.argv[0] == "mmdebstrap"
    assert log.isolated  # private mount and PID namespaces: no mount can leak to the host
    assert "--variant=minbase" in log.argv and "--architectures=amd64" in log.argv
    assert "--components=main,contrib" in log.argv and "--include=dbus,systemd-sysv" in log.argv
    assert log.argv[-2:] == ["bookworm", str(tmp_path / "root")]  # no mirror: tool's default
    assert log.env["SOURCE_DATE_EPOCH"] == "1700000000"


def test_mirror_is_passed_when_given(tmp_path: Path) -> None:
    d = Debian({"distro": "debian", "mirror": "http://127.0.0.1:9/debian"})
    log = FakeLog()
    d.bootstrap(tmp_path / "root", [], 1700000000, log, tmp_path / "cache")  # type: ignore[arg-type]
    assert log.argv[-1] == "http://127.0.0.1:9/debian"
    assert not [a for a in log.argv if a.startswith("--include")]


def test_falls_back_to_debootstrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(debian.shutil, "which", only({"debootstrap"}))
    d = Debian({"distro": "debian"})
    assert d.bootstrapper()[0] == "debootstrap"
    log = FakeLog()
    d.bootstrap(tmp_path / "root", ["dbus"], 1700000000, log, tmp_path / "cache")  # type: ignore[arg-type]
    assert log.argv[0] == "debootstrap" and "--include=dbus" in log.argv
    assert "--variant=minbase" in log.argv and log.argv[-2] == "trixie"

    d = Debian({"distro": "debian", "variant": "apt"})
    with pytest.raises(BuildError, match="debootstrap has no variant 'apt'"):
        d.bootstrap(tmp_path / "root2", [], 1700000000, log, tmp_path / "cache")  # type: ignore[arg-type]


def test_no_bootstrapper_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian.shutil, "which", only(set()))
    with pytest.raises(HostToolMissing, match="apt-get install mmdebstrap"):
        Debian({"distro": "debian"}).bootstrapper()


def test_a_foreign_architecture_without_arch_test_names_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """mmdebstrap needs arch-test for a foreign architecture (it exits 25 without it): said
    at planning, before any work."""
    monkeypatch.setattr(debian.shutil, "which", only({"mmdebstrap"}))
    foreign = "riscv64" if debian.host_arch() != "riscv64" else "amd64"
    with pytest.raises(HostToolMissing, match="apt-get install arch-test"):
        Debian({"distro": "debian", "arch": foreign}).bootstrapper()
    assert Debian({"distro": "debian"}).bootstrapper()[0] == "mmdebstrap"  # native: not needed
    monkeypatch.undo()  # only() wraps whatever `which` is now
    if shutil.which("arch-test"):  # installed here (CI installs it): then it is enough
        monkeypatch.setattr(debian.shutil, "which", only({"mmdebstrap", "arch-test"}))
        assert Debian({"distro": "debian", "arch": foreign}).bootstrapper()[0] == "mmdebstrap"


def test_deb_file_names_give_package_version_and_arch() -> None:
    assert deb_file_key("libc6_2.41-12_amd64.deb") == ("libc6", "2.41-12", "amd64")
    assert deb_file_key("zlib1g_1%3a1.3.dfsg-3.1_amd64.deb") == ("zlib1g", "1:1.3.dfsg-3.1", "amd64")
    for other in ("libc6_2.41-12.deb", "a_b_c_d.deb", "x_1_amd64.rpm", "_1_amd64.deb"):
        assert deb_file_key(other) is None


def test_parse_dpkg_status_keeps_installed_packages_only() -> None:
    text = """Package: zlib1g
Status: install ok installed
Architecture: amd64
Version: 1:1.2.13.dfsg-1
Installed-Size: 168
Description: compression library
 continued line: not a field

Package: removed-thing
Status: deinstall ok config-files
Version: 1.0

Package: apt
Status: install ok installed
Architecture: amd64
Version: 2.6.1
Installed-Size: 4232
"""
    pkgs = parse_dpkg_status(text)
    assert [(p.name, p.version, p.installed_size_kib) for p in pkgs] == [
        ("apt", "2.6.1", 4232), ("zlib1g", "1:1.2.13.dfsg-1", 168)]


def test_clean_removes_lists_and_caches(tmp_path: Path) -> None:
    for rel in ("var/lib/apt/lists/x_Packages", "var/cache/apt/pkgcache.bin",
                "var/cache/apt/archives/a.deb", "var/lib/dpkg/status-old"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "var/lib/apt/lists/partial").mkdir()
    (tmp_path / "var/lib/dpkg/status").write_text("keep")
    Debian({"distro": "debian"}).clean(tmp_path)
    assert sorted(p.name for p in (tmp_path / "var/lib/apt/lists").iterdir()) == ["partial"]
    assert not (tmp_path / "var/cache/apt/pkgcache.bin").exists()
    assert not (tmp_path / "var/cache/apt/archives/a.deb").exists()
    assert (tmp_path / "var/lib/dpkg/status").read_text() == "keep"
    assert not (tmp_path / "var/lib/dpkg/status-old").exists()


def test_snapshot_pins_every_archive_to_the_point_in_time(tmp_path: Path) -> None:
    d = Debian({"distro": "debian", "release": "bookworm", "components": ["main", "contrib"],
                "snapshot": "20240101T000000Z", "snapshot_url": "http://127.0.0.1:9/"})
    log = FakeLog()
    d.bootstrap(tmp_path / "root", ["dbus"], 1704067200, log, tmp_path / "cache")  # type: ignore[arg-type]
    assert log.argv[-3:] == [
        "deb [check-valid-until=no] http://127.0.0.1:9/archive/debian/20240101T000000Z bookworm main contrib",
        "deb [check-valid-until=no] http://127.0.0.1:9/archive/debian/20240101T000000Z "
        "bookworm-updates main contrib",
        "deb [check-valid-until=no] http://127.0.0.1:9/archive/debian-security/20240101T000000Z "
        "bookworm-security main contrib"]
    assert '--aptopt=Acquire::Check-Valid-Until "false"' in log.argv
    assert log.argv[-5:-3] == ["bookworm", str(tmp_path / "root")]


def test_snapshot_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nspawnbuild.errors import RecipeError
    from nspawnbuild.plan import make_plan
    from nspawnbuild.recipe.load import load_recipe

    monkeypatch.delenv("NSPAWNBUILD_SNAPSHOT_URL", raising=False)
    path = tmp_path / "snap.toml"
    path.write_text('[base]\ndistro = "debian"\nsnapshot = "20240101T000000Z"\n')
    with pytest.raises(RecipeError, match="snapshot needs the snapshot archive's base URL"):
        load_recipe(path)
    monkeypatch.setenv("NSPAWNBUILD_SNAPSHOT_URL", "http://127.0.0.1:9")
    a = make_plan(load_recipe(path)).bootstrap_key
    path.write_text('[base]\ndistro = "debian"\nsnapshot = "20250101T000000Z"\n')
    assert make_plan(load_recipe(path)).bootstrap_key != a  # another point in time, another key
    path.write_text('[base]\ndistro = "debian"\nsnapshot = "2024-01-01"\n')
    with pytest.raises(RecipeError, match="base.snapshot"):
        load_recipe(path)
    path.write_text('[base]\ndistro = "debian"\nsnapshot = "20240101T000000Z"\n'
                    'mirror = "http://127.0.0.1:9/debian"\n')
    with pytest.raises(RecipeError, match="mirror and snapshot exclude each other"):
        load_recipe(path)


def test_ubuntu_uses_its_keyring_components_and_the_bootstrappers_default_mirror(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keyring = tmp_path / "ubuntu-archive-keyring.gpg"
    keyring.write_bytes(b"")
    monkeypatch.setattr(debian.Ubuntu, "keyring", str(keyring))
    monkeypatch.setattr("nspawnbuild_plugins.debian.shutil.which", only({"mmdebstrap"}))
    u = debian.Ubuntu({"distro": "ubuntu", "arch": "amd64"})
    assert u.release == "noble" and u.base["components"] == ["main", "universe"]
    log = FakeLog()
    u.bootstrap(tmp_path / "root", ["dbus"], 0, log, tmp_path / "cache")  # type: ignore[arg-type]
    assert f"--keyring={keyring}" in log.argv
    assert "--components=main,universe" in log.argv
    assert log.argv[-2:] == ["noble", str(tmp_path / "root")]  # no mirror: mmdebstrap's default


def test_ubuntu_without_its_keyring_says_where_to_get_it(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setattr(debian.Ubuntu, "keyring", str(tmp_path / "missing.gpg"))
    log = FakeLog()
    with pytest.raises(BuildError, match=r"missing.gpg is missing on this host.*ubuntu-keyring"):
        debian.Ubuntu({"distro": "ubuntu"}).bootstrap(tmp_path / "root", [], 0, log, tmp_path / "cache")  # type: ignore[arg-type]
    assert log.argv == []  # nothing was run


def test_snapshot_problems_are_reported_together(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from nspawnbuild.errors import RecipeError
    from nspawnbuild.recipe.load import load_recipe

    monkeypatch.delenv("NSPAWNBUILD_SNAPSHOT_URL", raising=False)
    path = tmp_path / "snap.toml"
    path.write_text('[base]\ndistro = "debian"\nsnapshot = "20240101T000000Z"\n'
                    'mirror = "http://127.0.0.1:9/debian"\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    # both at once, each at its line (the old hook stopped at the first)
    assert sorted((p.key, p.line) for p in info.value.problems) == [("base.mirror", 4),
                                                                   ("base.snapshot", 3)]


def test_the_host_architecture_is_asked_of_dpkg_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []

    def run(argv: list[str], what: str) -> str:
        asked.append(argv)
        return "arm64\n"

    monkeypatch.setattr(debian.host, "run", run)
    debian.host_arch.cache_clear()
    try:
        bases = [Debian({"distro": "debian"}).base, debian.Ubuntu({"distro": "ubuntu"}).base,
                 Debian.defaults()]
    finally:
        debian.host_arch.cache_clear()  # the next test asks the real dpkg
    assert [b["arch"] for b in bases] == ["arm64"] * 3
    assert asked == [["dpkg", "--print-architecture"]]


def test_without_dpkg_the_kernels_architecture_is_named_as_debian_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: list[str], what: str) -> str:
        raise BuildError(f"could not {what}: dpkg is not installed")

    monkeypatch.setattr(debian.host, "run", run)
    monkeypatch.setattr(debian.platform, "machine", lambda: "aarch64")
    debian.host_arch.cache_clear()
    try:
        assert debian.host_arch() == "arm64"
    finally:
        debian.host_arch.cache_clear()


def test_debian_and_ubuntu_traits_for_features() -> None:
    # what the ssh, locales and gpu-nvidia features are told (the features' own tests show
    # what they do with it)
    assert Debian.traits["ssh"] == {"service": "ssh", "generates_host_keys": False}
    assert Debian.traits["locales"] == {"style": "locale-gen"}
    assert Debian.traits["gpu-nvidia"]["nonfree_component"] == "non-free"
    assert debian.Ubuntu.traits["ssh"] == Debian.traits["ssh"]
    assert debian.Ubuntu.traits["gpu-nvidia"]["nonfree_component"] == "restricted"
    assert "snapshot" in Debian.base_schema and "snapshot" not in debian.Ubuntu.base_schema
    assert {"mirror", "components", "variant"} <= set(debian.Ubuntu.base_schema)


def _keyring_recipe(tmp_path: Path, keyring: str, distro: str = "ubuntu") -> Path:
    path = tmp_path / "kr.toml"
    path.write_text(f'[base]\ndistro = "{distro}"\nkeyring = {keyring}\n')
    return path


def test_base_keyring_beside_the_recipe_verifies_the_archive_and_keys_the_cache(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nspawnbuild.plan import make_plan
    from nspawnbuild.recipe.load import load_recipe

    (tmp_path / "one.gpg").write_bytes(b"key one")
    (tmp_path / "two.gpg").write_bytes(b"key two")
    monkeypatch.setattr("nspawnbuild_plugins.debian.shutil.which", only({"mmdebstrap"}))
    r = load_recipe(_keyring_recipe(tmp_path, '["one.gpg", "two.gpg"]'))
    seen: dict[str, bytes] = {}

    class Log(FakeLog):
        def run(self, argv, **kw):  # noqa: ANN001, ANN003
            super().run(argv, **kw)
            given = [a.removeprefix("--keyring=") for a in self.argv if a.startswith("--keyring=")]
            assert len(given) == 1  # mmdebstrap keeps one --keyring: a directory of them all
            seen.update({p.name: p.read_bytes() for p in Path(given[0]).iterdir()})

    (tmp_path / "entry").mkdir()
    r.distro.bootstrap(tmp_path / "entry" / "root", ["dbus"], 0, Log(), tmp_path / "cache")  # type: ignore[arg-type]
    assert seen == {"00-recipe.gpg": b"key one", "01-recipe.gpg": b"key two"}
    assert not list((tmp_path / "entry").iterdir())  # the private copies are gone
    first = make_plan(r).bootstrap_key
    (tmp_path / "two.gpg").write_bytes(b"another key two")  # other keys: another bootstrap
    assert make_plan(load_recipe(_keyring_recipe(tmp_path, '["one.gpg", "two.gpg"]'))).bootstrap_key != first
    # what was read is what is used: a file swapped after loading changes neither key nor bytes
    (tmp_path / "one.gpg").unlink()
    (tmp_path / "one.gpg").symlink_to("/etc/passwd")
    assert make_plan(r).bootstrap_key == first


def test_a_recipe_without_keyring_keeps_its_cache_key(tmp_path: Path) -> None:
    from nspawnbuild.plan import make_plan
    from nspawnbuild.recipe.load import load_recipe

    path = tmp_path / "plain.toml"
    path.write_text('[base]\ndistro = "ubuntu"\n')
    plan = make_plan(load_recipe(path))
    assert "inputs" not in plan.bootstrap  # as before [base] keyring existed


@pytest.mark.parametrize(("keyring", "message"), [
    ('"/etc/shadow.gpg"', "/etc/shadow.gpg is not in a keyring directory of this host"),
    ('"/etc/shadow"', "invalid value"),  # not a .gpg or .asc keyring name
    ('"../outside.gpg"', "outside the recipe's directory"),
    ('"missing.gpg"', "keyring missing.gpg does not exist (Ubuntu's keyring is in the "
                      "ubuntu-keyring package"),
    ('"/usr/share/keyrings/../../../etc/passwd.gpg"', "is not in a keyring directory"),
    ('"sub.gpg"', "is a directory"),
])
def test_base_keyring_reads_only_keyring_files(tmp_path: Path, keyring: str, message: str) -> None:
    from nspawnbuild.errors import RecipeError
    from nspawnbuild.recipe.load import load_recipe

    (tmp_path.parent / "outside.gpg").write_bytes(b"x")
    (tmp_path / "sub.gpg").mkdir()
    with pytest.raises(RecipeError) as e:
        load_recipe(_keyring_recipe(tmp_path, keyring))
    assert message in str(e.value) and "kr.toml:3: key 'base.keyring'" in str(e.value)


def test_a_system_keyring_by_absolute_path(tmp_path: Path) -> None:
    from nspawnbuild.recipe.load import load_recipe

    system = "/usr/share/keyrings/debian-archive-keyring.gpg"
    r = load_recipe(_keyring_recipe(tmp_path, f'"{system}"', distro="debian"))
    assert r.distro.keyrings == ((".gpg", Path(system).read_bytes()),)


def test_check_valid_until_false_passes_apts_own_option(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    only_debootstrap = only({"debootstrap"})  # made before `which` is replaced below
    monkeypatch.setattr("nspawnbuild_plugins.debian.shutil.which", only({"mmdebstrap"}))
    opt = '--aptopt=Acquire::Check-Valid-Until "false"'
    for value, present in ((False, True), (True, False), (None, False)):
        base = {"distro": "debian", "release": "sid", "arch": "amd64"}
        if value is not None:
            base["check_valid_until"] = value
        log = FakeLog()
        Debian(base).bootstrap(tmp_path / "root", [], 0, log, tmp_path / "cache")  # type: ignore[arg-type]
        assert (opt in log.argv) is present, (value, log.argv)
    monkeypatch.setattr("nspawnbuild_plugins.debian.shutil.which", only_debootstrap)
    with pytest.raises(BuildError, match="check_valid_until = false needs mmdebstrap"):
        Debian({"distro": "debian", "release": "sid", "arch": "amd64", "check_valid_until": False}
               ).bootstrap(tmp_path / "root", [], 0, FakeLog(), tmp_path / "cache")  # type: ignore[arg-type]
