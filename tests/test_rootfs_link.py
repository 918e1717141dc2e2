"""The rootfs starts as a hardlink farm of the cached bootstrap; the cache stays pristine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import Env
from nspawnbuild.rootfs import changed, fingerprint, link_tree


def cache_tree(root: Path) -> Path:
    for rel in ("usr/bin/tool", "usr/share/doc/x", "etc/passwd-", "var/lib/dpkg/status"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel + "\n")
    return root


def test_bulk_is_linked_and_edited_dirs_are_copied(tmp_path: Path) -> None:
    src = cache_tree(tmp_path / "cache")
    assert link_tree(src, tmp_path / "work")
    same = lambda rel: (src / rel).stat().st_ino == (tmp_path / "work" / rel).stat().st_ino  # noqa: E731
    assert same("usr/bin/tool") and same("usr/share/doc/x")
    assert not same("etc/passwd-") and not same("var/lib/dpkg/status")


def test_fingerprint_sees_in_place_writes_but_not_replacements(tmp_path: Path) -> None:
    src = cache_tree(tmp_path / "cache")
    work = tmp_path / "work"
    link_tree(src, work)
    before = fingerprint(src)
    tmp = work / "usr/share/doc/.x.new"  # replace: a new inode, the cache is untouched
    tmp.write_text("new\n")
    os.replace(tmp, work / "usr/share/doc/x")
    (work / "etc/passwd-").write_text("edited in place, but a private copy\n")
    assert changed(before, fingerprint(src)) == []
    with open(work / "usr/bin/tool", "a") as fh:  # in place, through the shared inode
        fh.write("appended\n")
    assert changed(before, fingerprint(src)) == [str(src / "usr/bin/tool")]
    before = fingerprint(src)
    os.chmod(work / "usr/bin/tool", 0o700)
    assert changed(before, fingerprint(src)) == [str(src / "usr/bin/tool")]


@pytest.mark.integration
def test_a_step_writing_into_a_shared_file_evicts_the_cache_entry(env: Env) -> None:
    from test_integration_build import write_recipe

    recipe = write_recipe(env.tmp / "inplace.toml", 'packages = ["hello"]\n[[post]]\n'
                          'run = "echo changed >> /usr/share/doc/hello/copyright"\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "note: a step changed files of the cached bootstrap in place" in r.stderr
    assert "usr/share/doc/hello/copyright" in r.stderr
    entries = [p for p in (env.cache / "bootstrap").iterdir() if (p / "info.json").exists()]
    for entry in entries:  # no cache entry carries the step's change
        text = (entry / "root/usr/share/doc/hello/copyright")
        assert not text.exists() or "changed" not in text.read_text()
    # the next build bootstraps again and gets the same result
    (env.work / "recipes" / "inplace" / "rootfs.json").unlink()
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bootstrap:inplace done" in r.stdout


@pytest.mark.integration
def test_a_failing_step_that_wrote_into_a_shared_file_evicts_it_too(env: Env) -> None:
    from test_integration_build import write_recipe

    recipe = write_recipe(env.tmp / "inplacefail.toml", 'packages = ["hello"]\n[[post]]\n'
                          'run = "echo changed >> /usr/share/doc/hello/copyright; exit 1"\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 1
    assert "note: a step changed files of the cached bootstrap in place" in r.stderr
    for entry in (env.cache / "bootstrap").iterdir():
        text = entry / "root/usr/share/doc/hello/copyright"
        assert not text.exists() or "changed" not in text.read_text()
