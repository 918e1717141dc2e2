"""Listing and pruning the cache; cache keys for CI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, ROOT
from nspawnbuild.cache import entries, prune
from nspawnbuild.plan import make_plan
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.sizes import parse_size

DAY = 86400


def fake_cache(root: Path) -> Path:
    now = time.time()
    for key, age_days, size in (("aaaa", 40, 3 << 20), ("bbbb", 5, 2 << 20), ("cccc", 1, 1 << 20)):
        entry = root / "bootstrap" / key
        (entry / "root").mkdir(parents=True)
        (entry / "root" / "blob").write_bytes(os.urandom(size))
        info = entry / "info.json"
        info.write_text(json.dumps({"key": key, "spec": {
            "base": {"distro": "debian", "release": "bookworm", "arch": "amd64"},
            "packages": ["dbus", "systemd-sysv"]}}))
        os.utime(info, (now - age_days * DAY, now - age_days * DAY))
    (root / "bootstrap" / ".dddd.tmp-123").mkdir()  # in progress: never listed or pruned
    (root / "sources").mkdir()
    src = root / "sources" / ("e" * 64)
    src.write_bytes(b"x" * 4096)
    os.utime(src, (now - 100 * DAY, now - 100 * DAY))
    return root


def test_list_describes_entries(tmp_path: Path) -> None:
    rows = {e.key: e for e in entries(fake_cache(tmp_path))}
    assert set(rows) == {"aaaa", "bbbb", "cccc", "e" * 64}
    assert rows["aaaa"].description == "debian bookworm amd64, 2 packages"
    assert rows["aaaa"].size >= 3 << 20 and rows["e" * 64].kind == "source"


def test_prune_by_age(tmp_path: Path) -> None:
    cache = fake_cache(tmp_path)
    gone = prune(cache, older_than_days=30, max_size=None)
    assert sorted(e.key for e in gone) == ["aaaa", "e" * 64]
    assert not (cache / "bootstrap" / "aaaa").exists() and (cache / "bootstrap" / "bbbb").exists()
    assert (cache / "bootstrap" / ".dddd.tmp-123").exists()


def test_prune_to_size_removes_least_recently_used_first(tmp_path: Path) -> None:
    cache = fake_cache(tmp_path)
    gone = prune(cache, older_than_days=None, max_size=parse_size("3.5M"), dry_run=True)
    assert [e.key for e in gone] == ["e" * 64, "aaaa"]
    assert (cache / "bootstrap" / "aaaa").exists()  # dry run
    prune(cache, older_than_days=None, max_size=parse_size("3.5M"))
    assert sorted(e.key for e in entries(cache)) == ["bbbb", "cccc"]


def test_package_layers_and_cached_packages_are_listed_and_pruned(tmp_path: Path) -> None:
    """The two kinds issue 15 added: a package layer (its info.json's mtime is its last use)
    and a cached package (its digest directory's mtime)."""
    now = time.time()
    layer = tmp_path / "layers" / "ffff"
    (layer / "root").mkdir(parents=True)
    (layer / "info.json").write_text(json.dumps({"key": "ffff", "spec": {
        "bootstrap_key": "a" * 64, "packages": ["curl", "jq"]}}))
    os.utime(layer / "info.json", (now - 40 * DAY, now - 40 * DAY))
    deb = tmp_path / "packages" / ("9" * 64)
    deb.mkdir(parents=True)
    (deb / "jq_1.7.1-6_amd64.deb").write_bytes(b"x" * 8192)
    os.utime(deb, (now - 2 * DAY, now - 2 * DAY))
    (tmp_path / "packages" / ".tmp-in-progress").mkdir()
    rows = {e.key: e for e in entries(tmp_path)}
    assert set(rows) == {"ffff", "9" * 64}
    assert rows["ffff"].kind == "layer" and "2 packages" in rows["ffff"].description
    assert rows["9" * 64].kind == "package"
    assert rows["9" * 64].description == "jq_1.7.1-6_amd64.deb" and rows["9" * 64].size >= 8192
    gone = prune(tmp_path, older_than_days=30, max_size=None)
    assert [e.key for e in gone] == ["ffff"] and not layer.exists() and deb.exists()
    prune(tmp_path, older_than_days=1, max_size=None)
    assert not deb.exists() and (tmp_path / "packages" / ".tmp-in-progress").exists()


def test_parse_size() -> None:
    assert parse_size("20G") == 20 << 30 and parse_size("512") == 512
    assert parse_size("1.5MiB") == 3 << 19
    with pytest.raises(ValueError):
        parse_size("lots")


def test_cache_commands(tmp_path: Path) -> None:
    cache = fake_cache(tmp_path / "c")
    run = lambda *a: subprocess.run([str(BIN / "nspawnbuild"), *a],  # noqa: E731
                                    capture_output=True, text=True)
    r = run("cache", "--cache-dir", str(cache), "list", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 4
    r = run("cache", "--cache-dir", str(cache), "prune")
    assert r.returncode == 2 and "needs --older-than" in r.stderr
    r = run("cache", "--cache-dir", str(cache), "prune", "--max-size", "lots")
    assert r.returncode == 2 and "not a size" in r.stderr
    r = run("cache", "--cache-dir", str(cache), "prune", "--older-than", "30")
    assert r.returncode == 0 and "removed 2 entries" in r.stdout


def test_cache_key_is_the_bootstrap_key(tmp_path: Path) -> None:
    r = subprocess.run([str(BIN / "nspawnbuild"), "cache-key", "debian-base"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}\n", r.stdout)
    assert r.stdout.strip() == make_plan(load_recipe(ROOT / "recipes" / "debian-base.toml")).bootstrap_key
    other = tmp_path / "other.toml"
    other.write_text(f'extends = "{ROOT / "recipes" / "debian-base.toml"}"\npackages = ["curl"]\n')
    r2 = subprocess.run([str(BIN / "nspawnbuild"), "cache-key", str(other)], capture_output=True,
                        text=True)
    # another package set is another package layer on the same base: one key for both
    assert r2.returncode == 0 and r2.stdout == r.stdout
    other.write_text(f'extends = "{ROOT / "recipes" / "debian-base.toml"}"\n'
                     '[base]\nrelease = "bookworm"\n')
    r3 = subprocess.run([str(BIN / "nspawnbuild"), "cache-key", str(other)], capture_output=True,
                        text=True)
    assert r3.returncode == 0 and r3.stdout != r.stdout
