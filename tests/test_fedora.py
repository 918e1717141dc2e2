"""The Fedora bootstrapper without a network: its dnf command line, .repo file, rpm parsing,
validation of [base] and the features it answers for."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_debian import FakeLog, only
from test_features import refused, write

from nspawnbuild.errors import BuildError, HostToolMissing
from nspawnbuild.plan import collect_packages, nspawn_settings
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild_plugins import fedora
from nspawnbuild_plugins.fedora import Fedora, parse_rpm_query, repo_file
from nspawnbuild_plugins.gpu import spec_name, version_matches

REPO = {"name": "local", "baseurl": "file:///srv/repo", "gpgkey": ["file:///srv/key.asc"]}


def fedora_text(body: str = "", base: str = "") -> str:
    return (f'[base]\ndistro = "fedora"\nrelease = "41"\n{base}\n'
            '[[base.repos]]\nname = "local"\nbaseurl = "file:///srv/repo"\n'
            f'gpgkey = ["file:///srv/key.asc"]\n{body}')


def fedora_recipe(tmp_path: Path, body: str = "", base: str = "") -> Path:
    return write(tmp_path, fedora_text(body, base), "f")


def test_dnf_command_line_and_configuration(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    seen: dict[str, str] = {}

    class Log(FakeLog):
        def run(self, argv, **kw):  # noqa: ANN001
            super().run(argv, **kw)
            conf = Path(self.env["HOME"])  # the files exist only while dnf runs
            seen.update({p.name: p.read_text() for p in conf.rglob("*") if p.is_file()})

    monkeypatch.setattr(fedora.subprocess, "run", lambda *a, **k: type("R", (), {
        "stdout": "4.14.0\n", "returncode": 0})())
    monkeypatch.setattr("nspawnbuild.host.shutil.which", lambda name: f"/usr/bin/{name}")
    d = Fedora({"distro": "fedora", "release": "41", "arch": "x86_64", "repos": [REPO]})
    log = Log()
    d.bootstrap(tmp_path / "root", ["fedora-release", "systemd", "vim"], 1700000000, log,  # type: ignore[arg-type]
                tmp_path / "cache")
    assert log.isolated
    # run in the tree: dnf's cachedir, given relative, is beside it (the private directory)
    assert log.argv[:2] == ["env", f"--chdir={tmp_path / 'root'}"]
    argv = log.argv[2:]
    assert argv[:2] == ["dnf", "-y"]
    assert "--setopt=keepcache=True" in argv
    assert [a for a in argv if a.startswith("--setopt=cachedir=../.dnf-") and a.endswith("/cache")]
    assert f"--installroot={tmp_path / 'root'}" in argv
    assert "--releasever=41" in argv and "--forcearch=x86_64" in argv
    assert "--setopt=install_weak_deps=False" in argv and "--nogpgcheck" not in argv
    assert argv[-4:] == ["install", "fedora-release", "systemd", "vim"]
    assert any(a.startswith("--config=") for a in argv)  # never the host's dnf.conf
    assert any(a.startswith("--setopt=reposdir=") for a in argv)
    assert "gpgcheck=1" in seen["dnf.conf"] and "install_weak_deps=False" in seen["dnf.conf"]
    assert seen[".rpmmacros"] == "%_dbpath /usr/lib/sysimage/rpm\n"
    assert "[local]\nname=local\nbaseurl=file:///srv/repo\ngpgcheck=1\n" in seen["nspawnbuild.repo"]
    assert "gpgkey=file:///srv/key.asc" in seen["nspawnbuild.repo"]
    assert log.env["SOURCE_DATE_EPOCH"] == "1700000000"
    assert not list(tmp_path.glob(".dnf-*"))  # the configuration is gone afterwards


def test_gpgcheck_off_is_explicit() -> None:
    text = repo_file([{**REPO, "gpgcheck": False}], gpgcheck=True)
    assert "gpgcheck=0" in text


def test_no_repositories_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(fedora, "HOST_REPO_DIRS", (str(tmp_path / "none"),))
    monkeypatch.setattr(Fedora, "bootstrapper", lambda self: ("dnf", "4"))
    d = Fedora({"distro": "fedora"})
    with pytest.raises(BuildError, match=r"names no \[\[base.repos\]\] and this host has no dnf"):
        d.bootstrap(tmp_path / "root", ["systemd"], 0, FakeLog(), tmp_path / "cache")  # type: ignore[arg-type]


def test_missing_dnf_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nspawnbuild.host.shutil.which", only(set()))
    with pytest.raises(HostToolMissing, match=r"'dnf' is not installed .* apt-get install dnf"):
        Fedora({"distro": "fedora"}).bootstrapper()


def test_rpm_query_parsing() -> None:
    text = ("gpg-pubkey\t0\t237756fa-6b07011d\t(none)\t0\n"
            "bash\t0\t5.2.26-3.fc41\tx86_64\t8388608\n"
            "xorg-x11-drv-nvidia-cuda\t3\t550.54.14-1.fc41\tx86_64\t2048\n")
    assert [p.as_dict() for p in parse_rpm_query(text)] == [
        {"name": "bash", "version": "5.2.26-3.fc41", "arch": "x86_64", "installed_size_kib": 8192},
        {"name": "xorg-x11-drv-nvidia-cuda", "version": "3:550.54.14-1.fc41", "arch": "x86_64",
         "installed_size_kib": 2}]


@pytest.mark.parametrize(("base", "body", "key", "message"), [
    ('mirror = "http://example.invalid/fedora"', "", "base.mirror", "does not use mirror"),
    ('components = ["main"]', "", "base.components", "does not use components"),
    ("", '[[base.repos]]\nname = "two"\nbaseurl = "file:///a"\nmetalink = "file:///b"\n'
         'gpgkey = ["file:///k"]\n', "base.repos.1", "exactly one of baseurl"),
    ("", '[[base.repos]]\nname = "nokey"\nbaseurl = "file:///a"\n', "base.repos.1.gpgkey",
     "GPG-checked but has no gpgkey"),
    ("", '[[base.repos]]\nname = "local"\nbaseurl = "file:///a"\ngpgkey = ["file:///k"]\n',
     "base.repos.1.name", "named twice"),
    ("", '[features.network]\nbackend = "ifupdown"\n', "features.network.backend",
     "fedora images cannot use ifupdown"),
])
def test_bad_fedora_bases_are_refused(tmp_path: Path, base: str, body: str, key: str,
                                      message: str) -> None:
    refused(tmp_path, fedora_text(body, base), key, message)


def test_features_ask_the_distro_for_fedora_names(tmp_path: Path) -> None:
    recipe = load_recipe(fedora_recipe(tmp_path, """
[features.ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOM5g5Xq4uZRN8P7ZtrDL2u0Mm0v1rJ3Y7Pn0M8oXHQ9 a@b"]
[features.network]
[features.locales]
locales = ["de_DE.UTF-8", "en_US.UTF-8"]
timezone = "Europe/Berlin"
[[features.users.accounts]]
name = "app"
sudo = "nopasswd"
"""))
    packages = collect_packages(recipe)
    for pkg in ("fedora-release", "systemd", "openssh-server", "systemd-networkd",
                "glibc-langpack-de", "glibc-langpack-en", "tzdata", "shadow-utils", "sudo"):
        assert pkg in packages, pkg
    assert "locales" not in packages and "ifupdown" not in packages
    ssh = recipe.feature("ssh")
    assert ssh is not None and ssh.traits.service == "sshd" and ssh.traits.generates_host_keys
    settings = {(s.section, s.key): s.value for s in nspawn_settings(recipe)}
    assert ("Exec", "KillSignal") not in settings  # systemd is the init


def test_nvidia_on_fedora_pins_rpm_fusion_packages(tmp_path: Path) -> None:
    recipe = load_recipe(fedora_recipe(tmp_path, '[features.gpu-nvidia]\n'
                                                 'driver_version = "550.54.14"\n'))
    gpu = recipe.feature("gpu-nvidia")
    assert gpu is not None
    specs = gpu.packages(recipe)
    assert specs == ["xorg-x11-drv-nvidia-cuda-3:550.54.14", "xorg-x11-drv-nvidia-cuda-libs-3:550.54.14"]
    assert set(specs) <= set(collect_packages(recipe))
    assert gpu.traits.spec_style == "rpm" and gpu.traits.nonfree_component is None
    # NAME-EPOCH:VERSION: the gpu feature checks the installed versions of these names
    assert [spec_name(s, gpu.traits.spec_style) for s in specs] == [
        "xorg-x11-drv-nvidia-cuda", "xorg-x11-drv-nvidia-cuda-libs"]
    assert version_matches("3:550.54.14-1.fc41", "550.54.14")
    assert not version_matches("3:550.54.15-1.fc41", "550.54.14")


def test_clean_removes_dnf_caches_and_logs_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for rel in ("var/cache/dnf/local-1234/repodata/primary.xml.zst", "var/log/dnf.log",
                "var/log/dnf.rpm.log", "var/log/hawkey.log", "var/log/messages",
                "var/lib/dnf/history.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/dnf").write_text("x")  # an image with its own dnf keeps dnf's history
    Fedora({"distro": "fedora"}).clean(root)
    assert (root / "var/cache/dnf").is_dir() and not any((root / "var/cache/dnf").iterdir())
    assert sorted(p.name for p in (root / "var/log").iterdir()) == ["messages"]
    assert (root / "var/lib/dnf/history.sqlite").exists()
    assert (root / "usr/lib/sysimage/rpm/rpmdb.sqlite").exists()


def test_clean_drops_what_differs_between_two_builds_when_the_image_has_no_dnf(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    db = root / "usr/lib/sysimage/rpm"
    for rel in ("var/lib/dnf/history.sqlite", "var/lib/dnf/history.sqlite-shm",
                "var/lib/dnf/history.sqlite-wal", "usr/lib/sysimage/rpm/rpmdb.sqlite",
                "usr/lib/sysimage/rpm/rpmdb.sqlite-shm"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (db / "rpmdb.sqlite-wal").write_text("")
    Fedora({"distro": "fedora"}).clean(root)
    assert not (root / "var/lib/dnf").exists() or not any((root / "var/lib/dnf").iterdir())
    assert sorted(p.name for p in db.iterdir()) == ["rpmdb.sqlite", "rpmdb.sqlite-wal"]
    # a write-ahead log with content may hold commits: its index stays beside it
    (db / "rpmdb.sqlite-wal").write_text("commits")
    (db / "rpmdb.sqlite-shm").write_text("x")
    Fedora({"distro": "fedora"}).clean(root)
    assert (db / "rpmdb.sqlite-shm").exists()


def test_dnf_cache_directory_of_a_repository_and_the_names_of_its_downloads() -> None:
    from nspawnbuild.distro import Package

    # libdnf's REPOID-HASH: sha256 of the metalink, else the mirrorlist, else the first baseurl
    assert fedora.repo_cache_id({"name": "local", "baseurl": "http://127.0.0.1:8765/"},
                                "44", "x86_64") == "local-9e43572747173ea6"
    both = {"name": "f", "baseurl": "http://a/", "metalink": "http://m/?r=$releasever&a=$basearch"}
    import hashlib
    assert fedora.repo_cache_id(both, "42", "x86_64") == \
        "f-" + hashlib.sha256(b"http://m/?r=42&a=x86_64").hexdigest()[:16]
    assert fedora.rpm_file_name(Package("bash", "5.2.26-3.fc41", "x86_64")) == \
        "bash-5.2.26-3.fc41.x86_64.rpm"
    assert fedora.rpm_file_name(Package("xorg-x11-drv-nvidia-cuda", "3:570.1-1.fc42", "x86_64")) \
        == "xorg-x11-drv-nvidia-cuda-570.1-1.fc42.x86_64.rpm"  # no epoch in the file name


def test_a_locks_versions_become_dnf_specs_and_excludes() -> None:
    pins = {"systemd": "257.1-2.fc44", "xorg-x11-drv-nvidia-cuda": "3:570.1-1.fc42",
            "gone": "1.0-1"}
    # a locked name gets its version (the epoch where the lock has one); anything else stays
    assert fedora.pinned_specs(["systemd", "xorg-x11-drv-nvidia-cuda", "tzdata",
                                "/usr/bin/sh"], pins) == [
        "systemd-257.1-2.fc44", "xorg-x11-drv-nvidia-cuda-3:570.1-1.fc42", "tzdata",
        "/usr/bin/sh"]
    listing = ("noise from dnf\n"
               "systemd\t0\t257.1-2.fc44\tx86_64\nsystemd\t0\t258.1-1.fc44\tx86_64\n"
               "systemd\t0\t258.1-1.fc44\ti686\n"
               "xorg-x11-drv-nvidia-cuda\t3\t570.1-1.fc42\tx86_64\n"
               "xorg-x11-drv-nvidia-cuda\t3\t575.2-1.fc42\tx86_64\n"
               "gone\t0\t1.1-1\tnoarch\ntzdata\t0\t2025b-1\tnoarch\n")
    available = fedora.parse_repoquery(listing)
    assert available["xorg-x11-drv-nvidia-cuda"] == {("3:570.1-1.fc42", "x86_64"),
                                                     ("3:575.2-1.fc42", "x86_64")}
    # every other version of a locked name, in the NEVRA form dnf matches (epoch always said);
    # an unlocked name (tzdata) is not touched
    assert fedora.lock_excludes(available, pins) == [
        "gone-0:1.1-1.noarch", "systemd-0:258.1-1.fc44.i686", "systemd-0:258.1-1.fc44.x86_64",
        "xorg-x11-drv-nvidia-cuda-3:575.2-1.fc42.x86_64"]
    assert fedora.missing_locked(available, pins) == {"gone": ["1.1-1"]}
    assert fedora.missing_locked(available, {**pins, "elsewhere": "2-1"}) == {"gone": ["1.1-1"]}


def test_a_lock_keys_the_fedora_base(tmp_path: Path) -> None:
    distro = load_recipe(fedora_recipe(tmp_path)).distro
    assert "pins" not in distro.bootstrap_inputs()
    distro.pins = {"systemd": "257.1-2.fc44"}
    first = distro.bootstrap_inputs()["pins"]
    distro.pins = {"systemd": "257.1-3.fc44"}
    assert distro.bootstrap_inputs()["pins"] != first


def test_clean_never_reaches_out_of_the_image_through_planted_links(tmp_path: Path) -> None:
    """A post-step (root in the image) made dnf's and rpm's directories links to the host's:
    clean() removes nothing outside the tree."""
    host = tmp_path / "host"
    (host / "dnf").mkdir(parents=True)
    (host / "rpm").mkdir()
    for f in (host / "dnf/history.sqlite", host / "rpm/rpmdb.sqlite-shm"):
        f.write_text("host's")
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    (root / "usr/lib/sysimage").mkdir(parents=True)
    (root / "var/lib/dnf").symlink_to(host / "dnf")
    (root / "usr/lib/sysimage/rpm").symlink_to(host / "rpm")
    Fedora({"distro": "fedora"}).clean(root)
    assert (host / "dnf/history.sqlite").read_text() == "host's"
    assert (host / "rpm/rpmdb.sqlite-shm").read_text() == "host's"
