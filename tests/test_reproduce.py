"""--check-reproducible: two builds compared; differences named path by path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import ROOT, Env
from nspawnbuild.reproduce import compare_trees

EPOCH = 1704067200


def make(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "a").write_text("same\n")
    (root / "etc" / "b").write_text("one\n")
    (root / "etc" / "link").symlink_to("a")
    return root


def test_identical_trees_have_no_differences(tmp_path: Path) -> None:
    assert compare_trees(make(tmp_path / "x"), make(tmp_path / "y"), EPOCH) == []


def test_each_kind_of_difference_is_named(tmp_path: Path) -> None:
    a, b = make(tmp_path / "x"), make(tmp_path / "y")
    (b / "etc" / "b").write_text("two\n")
    os.chmod(b / "etc" / "a", 0o600)
    (b / "etc" / "link").unlink()
    (b / "etc" / "link").symlink_to("b")
    (b / "etc" / "extra").write_text("")
    os.chown(b / "etc" / "extra", 0, 0)
    (a / "etc" / "c").write_text("")
    (b / "etc" / "c").write_text("")
    os.chown(b / "etc" / "c", 1, 1)
    os.utime(a / "etc", (1000, 1000))  # older than the epoch: kept as is, so it differs
    os.setxattr(b / "etc" / "a", "user.k", b"v")
    found = {(d.path, d.what) for d in compare_trees(a, b, EPOCH)}
    assert found == {("/etc/b", "content"), ("/etc/a", "mode"), ("/etc/link", "link target"),
                     ("/etc/extra", "presence"), ("/etc/c", "owner"), ("/etc", "mtime"),
                     ("/etc/a", "xattr")}


def test_mtimes_newer_than_the_epoch_do_not_count(tmp_path: Path) -> None:
    a, b = make(tmp_path / "x"), make(tmp_path / "y")
    os.utime(b / "etc" / "a", (EPOCH + 5000, EPOCH + 5000))
    assert compare_trees(a, b, EPOCH) == []


@pytest.mark.integration
def test_debian_base_is_reproducible(env: Env) -> None:
    """Two cold builds (own caches), other umask, TZ, locale and a single CPU: same bytes."""
    r = env.nspawnbuild("build", "--check-reproducible", "debian-base", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reproducible: " in r.stdout
    assert not list((env.work / "repro").iterdir())  # both trees cleaned up
