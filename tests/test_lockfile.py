"""Lock files (NAME.lock.json): read and checked, written the same for the same resolution,
compared with what a build installed; a build with one pins Debian's apt and keys its plan."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_debian import FakeLog

from nspawnbuild import lockfile, pipeline
from nspawnbuild.cli import main
from nspawnbuild.errors import BuildError, RecipeError
from nspawnbuild.options import Options
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild_plugins.debian import PINS_FILE, Debian, pin_preferences, release_files

PACKAGES = [{"name": "bash", "version": "5.2-1", "arch": "amd64", "digest": "sha256:" + "1" * 64,
             "installed_size_kib": 10, "license": "GPL-3+"},
            {"name": "base-files", "version": "13", "arch": "amd64"}]
BASE = {"distro": "debian", "release": "trixie", "arch": "amd64"}


def write_lock(path: Path, packages: list[dict[str, object]] = PACKAGES,
               base: dict[str, str] = BASE) -> Path:
    path.write_bytes(lockfile.render(lockfile.document("img", base, packages)))
    return path


def test_the_document_is_sorted_and_keeps_only_what_a_lock_needs() -> None:
    doc = lockfile.document("img", {**BASE, "snapshot": "20250101T000000Z"}, PACKAGES,
                            [{"suite": "stable", "sha256": "ab"}])
    assert doc["packages"] == [{"name": "base-files", "version": "13", "arch": "amd64"},
                               {"name": "bash", "version": "5.2-1", "arch": "amd64",
                                "digest": "sha256:" + "1" * 64}]
    assert doc["snapshot"] == "20250101T000000Z" and doc["archive"] == [{"suite": "stable",
                                                                         "sha256": "ab"}]
    again = lockfile.document("img", BASE, list(reversed(PACKAGES)))
    assert lockfile.render(again) == lockfile.render(lockfile.document("img", BASE, PACKAGES))


def test_a_lock_is_read_with_its_digest(tmp_path: Path) -> None:
    lock = lockfile.read(write_lock(tmp_path / "img.lock.json"))
    assert lock.pins() == {"bash": "5.2-1", "base-files": "13"}
    assert len(lock.sha256) == 64 and lock.record() == {"file": "img.lock.json",
                                                        "sha256": lock.sha256}


@pytest.mark.parametrize(("text", "message"), [
    ("{", "not a lock file"),
    ('{"format": 1, "name": "x", "base": {}, "packages": []}', "'distro' is a required"),
    ('{"format": 2, "name": "x", "base": {"distro": "d", "release": "r", "arch": "a"}, '
     '"packages": []}', "1 was expected"),
    ('{"format": 1, "name": "x", "base": {"distro": "d", "release": "r", "arch": "a"}, '
     '"packages": [{"name": "a=b", "version": "1", "arch": ""}]}', "does not match"),
    # a hostile lock beside an untrusted recipe: its names reach the host's dnf/apk argv
    ('{"format": 1, "name": "x", "base": {"distro": "d", "release": "r", "arch": "a"}, '
     '"packages": [{"name": "--setopt=cachedir=/etc", "version": "1", "arch": ""}]}',
     "does not match"),
    ('{"format": 1, "name": "x", "base": {"distro": "d", "release": "r", "arch": "a"}, '
     '"packages": [{"name": "a", "version": "-1,b", "arch": ""}]}', "does not match"),
])
def test_a_bad_lock_is_refused_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.lock.json"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message) as e:
        lockfile.read(path)
    assert e.value.problems[0].file == path and e.value.exit_code == 2


def test_a_lock_of_another_release_is_refused(tmp_path: Path) -> None:
    lock = lockfile.read(write_lock(tmp_path / "img.lock.json"))
    with pytest.raises(RecipeError, match="the lock is for debian trixie amd64, the recipe "
                                          "builds debian bookworm amd64"):
        lockfile.check_base(lock, {**BASE, "release": "bookworm"})


def test_compare_names_every_package_that_differs() -> None:
    lockfile.compare(PACKAGES, PACKAGES, "img.lock.json")  # the same set: nothing raised
    installed = [{"name": "bash", "version": "5.2-2", "arch": "amd64"},
                 {"name": "extra", "version": "1", "arch": "all"}]
    with pytest.raises(BuildError) as e:
        lockfile.compare(PACKAGES, installed, "img.lock.json")
    text = str(e.value)
    assert e.value.exit_code == 1
    assert "bash (amd64): locked 5.2-1, the build installed 5.2-2: the archive no longer has " \
           "5.2-1" in text
    assert "base-files 13 (amd64): locked, not installed" in text
    assert "extra 1 (all): installed, not in the lock" in text
    assert "nspawnbuild lock --update" in text


def test_changes_lists_added_removed_and_other_versions() -> None:
    new = [{"name": "bash", "version": "5.2-2", "arch": "amd64"},
           {"name": "zsh", "version": "5.9", "arch": "amd64"}]
    assert lockfile.changes(PACKAGES, new) == ["- base-files 13 (amd64)",
                                               "~ bash 5.2-1 -> 5.2-2 (amd64)",
                                               "+ zsh 5.9 (amd64)"]
    assert lockfile.changes(PACKAGES, PACKAGES) == []


def test_debian_pins_its_bootstrap_and_keys_the_cache(tmp_path: Path) -> None:
    d = Debian({"distro": "debian"})
    plain = d.bootstrap_inputs()
    d.pins = {"bash": "5.2-1"}
    assert d.bootstrap_inputs() != plain and "pins" in d.bootstrap_inputs()
    seen: dict[str, str] = {}

    class Log(FakeLog):
        def run(self, argv, **kw):  # noqa: ANN001, ANN003
            super().run(argv, **kw)
            hook = next(a for a in self.argv if a.startswith("--setup-hook="))
            _, src, dest = hook.split(" ")
            seen[dest] = Path(src).read_text()

    (tmp_path / "entry").mkdir()
    d.bootstrap(tmp_path / "entry" / "root", [], 0, Log(), tmp_path / "cache")  # type: ignore[arg-type]
    assert seen == {PINS_FILE: "Package: bash\nPin: version 5.2-1\nPin-Priority: 1001\n\n"}
    assert not list((tmp_path / "entry").iterdir())  # the host copy is gone
    assert pin_preferences({"b": "1", "a": "2"}).startswith("Package: a\n")


def test_the_pins_leave_the_image_with_the_caches(tmp_path: Path) -> None:
    pref = tmp_path / PINS_FILE.lstrip("/")
    pref.parent.mkdir(parents=True)
    pref.write_text("Package: bash\n")
    Debian({"distro": "debian"}).clean(tmp_path)
    assert not pref.exists()


def test_release_files_give_the_archive_state_without_the_host(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "mirror.invalid_debian_dists_trixie_InRelease").write_text(
        "-----BEGIN PGP SIGNED MESSAGE-----\nOrigin: Debian\nSuite: stable\nCodename: trixie\n"
        "Date: Sat, 01 Nov 2025 09:00:00 UTC\n")
    (lists / "mirror.invalid_debian_dists_trixie_main_binary-amd64_Packages").write_text("x")
    os.mkfifo(lists / "a-step-made_this_InRelease")  # skipped, without blocking the build
    (state,) = release_files(lists)
    assert state["codename"] == "trixie" and state["date"] == "Sat, 01 Nov 2025 09:00:00 UTC"
    assert "mirror.invalid" not in json.dumps(state) and len(state["sha256"]) == 64


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "img.toml"
    path.write_text('name = "img"\n[base]\ndistro = "debian"\nrelease = "trixie"\n'
                    'arch = "amd64"\n')
    return path


def test_a_lock_beside_the_recipe_goes_into_the_plan(tmp_path: Path) -> None:
    path = _recipe(tmp_path)
    options = Options.from_environment({}, work=tmp_path / "w")
    unlocked = pipeline.plan(load_recipe(path), pipeline.recipe_lock(options, load_recipe(path)))
    assert "lock" not in unlocked.rootfs and "lock" not in unlocked.manifest
    write_lock(tmp_path / "img.lock.json")
    recipe = load_recipe(path)
    lock = pipeline.recipe_lock(options, recipe)
    assert lock is not None
    locked = pipeline.plan(recipe, lock)
    assert locked.manifest["lock"] == {"file": "img.lock.json", "sha256": lock.sha256}
    assert locked.rootfs["lock"]["packages"] == lock.packages
    assert locked.bootstrap_key != unlocked.bootstrap_key  # Debian's bootstrap is pinned
    ignored = Options.from_environment({}, work=tmp_path / "w", use_lock=False)
    assert pipeline.recipe_lock(ignored, recipe) is None


def test_cache_key_follows_the_lock_beside_the_recipe(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = _recipe(tmp_path)
    assert main(["cache-key", str(path)]) == 0
    plain = capsys.readouterr().out.strip()
    write_lock(tmp_path / "img.lock.json")
    assert main(["cache-key", str(path)]) == 0
    locked = capsys.readouterr().out.strip()
    options = Options.from_environment({}, work=tmp_path / "w")
    recipe = load_recipe(path)
    assert locked != plain
    assert locked == pipeline.plan(recipe, pipeline.recipe_lock(options, recipe)).bootstrap_key


def test_lock_refuses_to_overwrite_without_update(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = _recipe(tmp_path)
    write_lock(tmp_path / "img.lock.json")
    assert main(["lock", "--work-dir", str(tmp_path / "w"), str(path)]) == 2
    assert "a lock file is already there" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # nothing was built


def test_build_with_a_missing_lock_file_exits_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = _recipe(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["build", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
              "--lock", str(tmp_path / "absent.lock.json"), str(path)])
    assert e.value.code == 2
    assert "cannot read the lock file" in capsys.readouterr().err
    assert main(["build", "--lock", "x", str(path), str(path)]) == 2
