"""Defaults that follow the release: target_systemd per distro and release, and a pinned
package version the archive lacks answered with the versions it has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nspawnbuild.errors import BuildError
from nspawnbuild.recipe.defaults import DEFAULT_TARGET_SYSTEMD
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.sandbox import ISOLATE
from nspawnbuild_plugins.debian import Debian, archive_versions


def recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("base,systemd", [
    ('distro = "debian"', 257),  # trixie, the default
    ('distro = "debian"\nrelease = "trixie"', 257),
    ('distro = "debian"\nrelease = "bookworm"', 252),
    ('distro = "ubuntu"', 255),  # noble, the default
    ('distro = "ubuntu"\nrelease = "jammy"', 249),
    ('distro = "fedora"', 257),  # 42, the default
    ('distro = "fedora"\nrelease = "43"', 258),
    ('distro = "fedora"\nrelease = "41"', 256),
    # a release whose systemd is not known, and a distro without systemd: the oldest host's
    ('distro = "debian"\nrelease = "sid"', DEFAULT_TARGET_SYSTEMD),
    ('distro = "alpine"', DEFAULT_TARGET_SYSTEMD),
])
def test_target_systemd_is_the_releases_own(tmp_path: Path, base: str, systemd: int) -> None:
    assert load_recipe(recipe(tmp_path, f"[base]\n{base}\n")).target_systemd == systemd


def test_a_recipe_sets_target_systemd_over_its_release(tmp_path: Path) -> None:
    loaded = load_recipe(recipe(tmp_path, 'target_systemd = 260\n[base]\ndistro = "debian"\n'
                                          'release = "bookworm"\n'))
    assert loaded.target_systemd == 260 and loaded.data["target_systemd"] == 260


def test_the_release_default_is_part_of_the_recipes_data(tmp_path: Path) -> None:
    """In the data, so it is in the recipe's digest and, through the plan, the manifest."""
    trixie = load_recipe(recipe(tmp_path, '[base]\ndistro = "debian"\n'))
    bookworm = load_recipe(recipe(tmp_path, '[base]\ndistro = "debian"\nrelease = "bookworm"\n'))
    assert trixie.data["target_systemd"] == 257 and bookworm.data["target_systemd"] == 252


PACKAGES = """Package: nvidia-smi
Version: 550.163.01-2
Architecture: amd64
Description: NVIDIA System Management Interface
 a continuation line: Version: 1.0

Package: libcuda1
Version: 550.163.01-2

Package: nvidia-smi
Version: 550.163.01-3
"""


def test_archive_versions_reads_apts_package_lists(tmp_path: Path) -> None:
    (tmp_path / "host_dists_trixie_non-free_binary-amd64_Packages").write_text(PACKAGES)
    (tmp_path / "host_dists_trixie-updates_non-free_binary-amd64_Packages").write_text(
        "Package: nvidia-smi\nVersion: 550.163.01-2\n")
    assert archive_versions(tmp_path, {"nvidia-smi", "absent"}) == {
        "nvidia-smi": ["550.163.01-2", "550.163.01-3"]}


class PinLog:
    """A build log whose bootstrap fails the way apt does for a missing pin, and whose dry
    run leaves the archive's package lists where mmdebstrap would."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    def run(self, argv, *, step, env=None, **_):  # noqa: ANN001
        argv = list(argv)[len(ISOLATE):]
        self.steps.append(step)
        if "--dry-run" not in argv:
            raise BuildError("bootstrap (mmdebstrap) failed with exit code 25\n"
                             "    E: Version '535.309.01-*' for 'nvidia-smi' was not found\n"
                             "    E: Version '535.309.01-*' for 'libcuda1' was not found")
        assert "--variant=custom" in argv and not any(a.startswith("--include") for a in argv)
        lists = Path(argv[-1]) / "var/lib/apt/lists"
        lists.mkdir(parents=True)
        (lists / "host_dists_trixie_non-free_binary-amd64_Packages").write_text(PACKAGES)

    def note(self, text: str) -> None:
        pass


def test_a_pin_the_archive_lacks_is_answered_with_the_versions_it_has(tmp_path: Path) -> None:
    d = Debian({"distro": "debian", "release": "trixie", "arch": "amd64",
                "components": ["main", "non-free"], "variant": "minbase"})
    log = PinLog()
    with pytest.raises(BuildError) as info:
        d.bootstrap(tmp_path / "root", ["nvidia-smi=535.309.01-*", "libcuda1=535.309.01-*"],
                    1700000000, log, tmp_path / "cache")  # type: ignore[arg-type]
    text = str(info.value)
    assert ("no version 535.309.01-* of nvidia-smi; trixie (main, non-free) has: "
            "550.163.01-2, 550.163.01-3") in text
    assert "no version 535.309.01-* of libcuda1; trixie (main, non-free) has: 550.163.01-2" in text
    assert "driver_version" in text and log.steps[-1] == "list the archive's versions"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no scratch directory is left


def test_a_failure_without_a_missing_pin_is_not_rewritten(tmp_path: Path) -> None:
    class Failing(PinLog):
        def run(self, argv, *, step, env=None, **_):  # noqa: ANN001
            raise BuildError("bootstrap (mmdebstrap) failed: E: Unable to locate package nope")

    d = Debian({"distro": "debian", "release": "trixie", "arch": "amd64",
                "components": ["main"], "variant": "minbase"})
    with pytest.raises(BuildError) as info:
        d.bootstrap(tmp_path / "root", ["nope"], 1700000000, Failing(), tmp_path / "cache")  # type: ignore[arg-type]
    assert str(info.value) == "bootstrap (mmdebstrap) failed: E: Unable to locate package nope"
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == "[]"
