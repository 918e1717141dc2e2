"""``nspawnbuild publish``: the tree a static server serves, one directory per set and a
``latest`` symlink; a damaged set is never published."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_hostile_install import NAME, make_artifact, write_sums

from conftest import BIN
from nspawnbuild.errors import BuildError, RecipeError
from nspawnbuild.release import LATEST, build_id, publish_tree


def test_a_set_is_published_as_its_build_and_latest_points_at_it(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "out" / NAME)
    (art / "SHA256SUMS.gpg").write_bytes(b"\x89signature")  # published beside, not listed
    (art / "build.log").write_text("not an artifact\n")
    done = publish_tree(art, tmp_path / "srv")
    build = build_id(art)
    top = tmp_path / "srv" / NAME
    assert len(build) == 16 and os.readlink(top / LATEST) == build
    files = sorted(str(p.relative_to(top / build)) for p in (top / build).rglob("*")
                   if p.is_file())
    assert files == sorted(["SHA256SUMS", "SHA256SUMS.gpg", "manifest.json", f"{NAME}.nspawn",
                            f"{NAME}.tar.zst", f"systemd-nspawn@{NAME}.service.d/50-nspawnbuild.conf"])
    assert (top / LATEST / "SHA256SUMS").read_bytes() == (art / "SHA256SUMS").read_bytes()
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (top / build).rglob("*") if p.is_file())
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=top / LATEST,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert done[-1] == f"{top / LATEST} -> {build}"
    again = publish_tree(art, tmp_path / "srv")  # the same set: one directory
    assert "already there" in again[0] and [p.name for p in top.iterdir()
                                            if not p.name.startswith(".")].count(build) == 1


def test_a_new_build_moves_latest_and_keep_prunes_the_oldest(tmp_path: Path) -> None:
    ids = []
    for i in range(3):
        art = make_artifact(tmp_path / f"o{i}" / NAME)
        (art / f"{NAME}.nspawn").write_text(f"[Exec]\nPrivateUsers=pick\n# build {i}\n")
        write_sums(art, [line.split()[1] for line in (art / "SHA256SUMS").read_text().splitlines()])
        publish_tree(art, tmp_path / "srv", keep=2)
        ids.append(build_id(art))
        os.utime(tmp_path / "srv" / NAME / ids[-1], (1e9 + i, 1e9 + i))  # distinct, in order
    top = tmp_path / "srv" / NAME
    assert len(set(ids)) == 3 and os.readlink(top / LATEST) == ids[2]
    assert sorted(p.name for p in top.iterdir() if p.is_dir() and not p.is_symlink()) == \
        sorted(ids[1:])  # the oldest went


def test_a_damaged_set_is_not_published(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "out" / NAME)
    (art / f"{NAME}.nspawn").write_text("[Exec]\nCapability=all\n")
    with pytest.raises(BuildError) as info:
        publish_tree(art, tmp_path / "srv")
    assert "does not match its SHA256SUMS" in str(info.value) and f"{NAME}.nspawn" in str(info.value)
    assert not (tmp_path / "srv").exists()


def test_bad_destinations_and_sets_are_bad_input(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "out" / NAME)
    with pytest.raises(RecipeError, match="inside the artifact directory"):
        publish_tree(art, art / "pub")
    with pytest.raises(RecipeError, match="no SHA256SUMS here"):
        publish_tree(tmp_path, tmp_path / "srv")


def test_the_command_line(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "out" / NAME)
    r = subprocess.run([str(BIN / "nspawnbuild"), "publish", str(art), str(tmp_path / "srv"),
                        "--keep", "1"], capture_output=True, text=True)
    assert r.returncode == 0 and "published 5 files as" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([str(BIN / "nspawnbuild"), "publish", str(art), str(tmp_path / "srv"),
                        "--keep", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "at least 1" in r.stderr and "Traceback" not in r.stderr
