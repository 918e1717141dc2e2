"""--check-reproducible: two builds compared; differences named path by path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, Env
from nspawnbuild import reproduce
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


@pytest.mark.skipif(shutil.which("diffoscope") is None,
                    reason="needs diffoscope (apt-get install diffoscope-minimal; CI has it)")
def test_a_difference_is_explained_per_path_and_by_diffoscope(tmp_path: Path) -> None:
    a, b = make(tmp_path / "x"), make(tmp_path / "y")
    (b / "etc" / "b").write_text("two\n")
    os.chmod(b / "etc" / "a", 0o600)
    lines = reproduce.explain(a, b, EPOCH)
    text = "\n".join(lines)
    assert "  /etc/a: mode differs (0644 vs 0600)" in lines
    assert "  /etc/b: content differs" in text
    assert f"  diffoscope: diffoscope --no-progress --text - {a} {b}" in lines
    report = text.split("diffoscope's report", 1)[1]
    assert "-one" in report and "+two" in report  # diffoscope's own diff of the file


def test_explain_names_the_diffoscope_command_without_diffoscope(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = make(tmp_path / "x"), make(tmp_path / "y")
    (b / "etc" / "b").write_text("two\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    lines = reproduce.explain(a, b, EPOCH)
    assert f"  diffoscope: diffoscope --no-progress --text - {a} {b}" in lines
    assert any("diffoscope is not installed" in line for line in lines)


def test_every_variation_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [n for n, _ in reproduce.variations_used("not varied: test")]
    assert names == ["build path", "umask", "time zone", "locale", "host and domain name",
                     "HOME", "environment", "CPU count", "clock", "file ordering"]
    monkeypatch.setattr(reproduce, "libfaketime", lambda: None)
    assert dict(reproduce.variations_used("x"))["clock"].startswith("not varied: libfaketime")


def test_the_second_build_gets_the_varied_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "someone")
    env = reproduce._child_env(reproduce.SECOND)
    assert env["TZ"] == "Pacific/Kiritimati" and env["HOME"] == "/nonexistent/second-build"
    assert env["REPROTEST_CAPTURE_ENVIRONMENT"] and "USER" not in env
    if reproduce.libfaketime() is not None:
        assert env["FAKETIME"] == "+1y" and "libfaketime" in env["LD_PRELOAD"]
    first = reproduce._child_env(reproduce.FIRST)
    assert first["TZ"] == "UTC" and "FAKETIME" not in first and first["USER"] == "someone"


@pytest.mark.skipif(reproduce.disorderfs_missing() is not None or os.geteuid() != 0,
                    reason="needs disorderfs and FUSE, as root (CI has them)")
def test_disorderfs_shows_a_directory_in_another_order(tmp_path: Path) -> None:
    names = [f"f{i:03d}" for i in range(64)]
    for n in names:
        (tmp_path / "back" / n).parent.mkdir(exist_ok=True)
        (tmp_path / "back" / n).write_text(n)
    with reproduce.disordered(tmp_path / "back", tmp_path / "mnt"):
        seen = os.listdir(tmp_path / "mnt")
        assert sorted(seen) == names and seen != os.listdir(tmp_path / "back")
    assert not (tmp_path / "mnt").exists()


@pytest.mark.integration
def test_debian_base_is_reproducible(env: Env) -> None:
    """Two cold builds (own caches), the second under every variation the tool can apply
    (umask, TZ, locale, CPUs, host and domain name, HOME, variables, clock, file order): same
    bytes, and each variation named."""
    r = env.nspawnbuild("build", "--check-reproducible", "debian-base", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reproducible: " in r.stdout
    for name, _first, _second in reproduce.VARIATIONS:
        assert f"  {name}: " in r.stdout, name
    assert "  clock: the real clock, then +1y (libfaketime)" in r.stdout
    assert "  file ordering: directory entries shuffled (disorderfs)" in r.stdout
    assert not list((env.work / "repro").iterdir())  # both trees cleaned up
