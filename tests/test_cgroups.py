"""An image whose systemd needs the unified cgroup hierarchy is refused by install on a host
that has v1 mounted, with the reason and the fix; other images and hosts are not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_hostile_install import NAME, make_artifact, write_sums

from nspawnbuild import cgroups, install
from nspawnbuild.errors import RecipeError

UNIFIED = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
HYBRID = ("30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
          "31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n"
          "32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n")
LEGACY = ("30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
          "32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n")


@pytest.mark.parametrize("text,layout", [(UNIFIED, "unified"), (HYBRID, "hybrid"),
                                         (LEGACY, "legacy"), ("", "legacy")])
def test_the_hierarchy_is_read_from_mountinfo(text: str, layout: str) -> None:
    assert cgroups.hierarchy(text) == layout


def test_this_hosts_hierarchy_is_one_of_the_three() -> None:
    assert cgroups.hierarchy(cgroups.MOUNTINFO.read_text()) in ("unified", "hybrid", "legacy")


@pytest.mark.parametrize("version,major", [("257.13-1~deb13u1", 257), ("262~rc1-1", 262),
                                           ("257.5-1.fc42", 257), ("1:258-1", 258), ("", None)])
def test_the_images_systemd_comes_from_the_manifests_packages(version: str,
                                                              major: int | None) -> None:
    packages = [{"name": "dbus", "version": "1.16"}, {"name": "systemd", "version": version}]
    assert cgroups.image_systemd(packages) == major


def test_an_image_without_systemd_has_no_version() -> None:
    assert cgroups.image_systemd([{"name": "openrc", "version": "0.62"}, "garbage"]) is None


def sd(version: str) -> list[dict[str, str]]:
    return [{"name": "systemd", "version": version}]


def test_systemd_258_is_refused_on_hybrid_and_legacy_hosts() -> None:
    why = cgroups.refusal(sd("262-1"), HYBRID)
    assert why and "systemd is 262" in why and "hybrid cgroup hierarchy" in why
    assert "Detected unsupported legacy cgroup hierarchy" in why
    assert "legacy cgroup hierarchy, which" in (cgroups.refusal(sd("258-1"), LEGACY) or "")
    assert "systemd.unified_cgroup_hierarchy" in cgroups.FIX and "[base] release" in cgroups.FIX


def test_older_systemd_or_a_unified_host_is_fine() -> None:
    assert cgroups.refusal(sd("257.13-1~deb13u1"), HYBRID) is None
    assert cgroups.refusal(sd("262-1"), UNIFIED) is None
    assert cgroups.refusal([{"name": "openrc", "version": "0.62"}], LEGACY) is None


def image_with_systemd(tmp_path: Path, version: str) -> Path:
    """A hand-made artifact (as test_hostile_install makes them) whose manifest lists
    systemd ``version``."""
    art = make_artifact(tmp_path / "art")
    doc = json.loads((art / "manifest.json").read_text())
    doc["packages"].append({"name": "systemd", "version": version, "arch": "amd64",
                            "installed_size_kib": 1})
    (art / "manifest.json").write_text(json.dumps(doc))
    write_sums(art, [line.split()[1] for line in (art / "SHA256SUMS").read_text().splitlines()])
    return art


def test_install_on_a_hybrid_host_refuses_systemd_262_before_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mountinfo").write_text(HYBRID)
    monkeypatch.setattr(cgroups, "MOUNTINFO", tmp_path / "mountinfo")
    art = image_with_systemd(tmp_path, "262-1")

    def past_the_checks(*_: object) -> None:  # a regression must not install on this host
        raise AssertionError("install went past its checks on ROOT /")

    monkeypatch.setattr(install, "targets", past_the_checks)
    with pytest.raises(RecipeError) as info:  # ROOT /: refused before anything is touched
        install.install(art, name=None, root=Path("/"), force=False, enable=False, start=False)
    text = str(info.value)
    assert f"{art}/manifest.json: key 'packages': the image's systemd is 262" in text
    assert "nothing was installed" in text and "systemd.unified_cgroup_hierarchy" in text
    assert not Path(f"/var/lib/machines/{NAME}").exists()
    assert not Path(f"/etc/systemd/nspawn/{NAME}.nspawn").exists()


def test_install_into_another_hosts_tree_is_not_checked(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """--root is another host's disk: this host's hierarchy says nothing about it."""
    (tmp_path / "mountinfo").write_text(HYBRID)
    monkeypatch.setattr(cgroups, "MOUNTINFO", tmp_path / "mountinfo")
    art = image_with_systemd(tmp_path, "262-1")
    root = tmp_path / "root"
    install.install(art, name=None, root=root, force=False, enable=False, start=False)
    assert (root / "var/lib/machines" / NAME / "etc/os-release").is_file()
