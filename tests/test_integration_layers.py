"""Two layers under every image, and the package cache, with the real mmdebstrap and apt.

The base (the distro's bootstrap with its base packages alone) is one cache entry shared by
every recipe on it; the recipe's and features' packages are a package layer on it, made by
apt-get in the sandbox. Measured here, not assumed: a package added to a recipe does not run
the bootstrapper again and downloads only what it adds; two recipes on one base make one base
(also when built side by side with -j 2); and a build whose layers came from the cache gives
the tarball a cold build in an empty cache gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, Env
from nspawnbuild_plugins.debian import parse_dpkg_status

pytestmark = pytest.mark.integration

BASE = ROOT / "recipes" / "debian-base.toml"


def recipe(env: Env, name: str, packages: list[str]) -> Path:
    path = env.tmp / f"{name}.toml"
    path.write_text(f'extends = "{BASE}"\nname = "{name}"\n'
                    f"packages = {json.dumps(packages)}\n")
    return path


def build(env: Env, *args: str) -> list[dict[str, object]]:
    r = env.nspawnbuild("build", "--json", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    summaries: list[dict[str, object]] = json.loads(r.stdout)
    return summaries


def packages(env: Env, name: str) -> set[tuple[str, str, str]]:
    manifest = json.loads((env.out / name / "manifest.json").read_text())
    return {(p["name"], p["version"], p["arch"]) for p in manifest["packages"]}


def entries(cache: Path, kind: str) -> list[Path]:
    d = cache / kind
    return sorted(p for p in d.iterdir() if (p / "info.json").is_file()) if d.is_dir() else []


def bootstrap_runs(env: Env, name: str) -> int:
    """How many times the bootstrapper ran in this recipe's last bootstrap task."""
    log = (env.work / "recipes" / name / "logs" / "bootstrap.log").read_text()
    return log.count("bootstrap (mmdebstrap):")


def tarball_sha(out: Path, name: str) -> str:
    sums = dict(reversed(line.split("  ", 1)) for line in
                (out / name / "SHA256SUMS").read_text().splitlines())
    return sums[f"{name}.tar.gz"]


def test_one_base_for_two_recipes_a_package_added_and_a_cold_build_equal(tmp_path: Path) -> None:
    """One file for the whole cycle, each base bootstrap being the slow part: two recipes
    built side by side on an empty cache, one package added to one of them, a rebuild with
    nothing changed, and the same recipe built cold in an empty cache."""
    env = Env(tmp_path, tmp_path / "out", tmp_path / "work", tmp_path / "cache")
    # (a recipe's packages add to debian-base's: these are two package sets)
    first, side = recipe(env, "layered", ["tree"]), recipe(env, "side", ["file"])
    cold = {s["name"]: s for s in build(env, "-j", "2", str(first), str(side))}
    assert bootstrap_runs(env, "layered") + bootstrap_runs(env, "side") == 1  # one waited
    waited = next(n for n in ("layered", "side") if not bootstrap_runs(env, n))
    said = (env.work / "recipes" / waited / "logs" / "bootstrap.log").read_text()
    # -j builds are threads of one process: the holder is named as another build of this run
    assert "waiting for another build of this run, which is making the base " in said, said
    assert len(entries(env.cache, "bootstrap")) == 1 and len(entries(env.cache, "layers")) == 2
    uses = [s["package_cache"] for s in cold.values()]
    assert all(isinstance(u, dict) for u in uses)
    assert sum(int(u["downloaded"]) for u in uses if isinstance(u, dict)) > 80, uses
    names = {n for n, _v, _a in packages(env, "layered")}
    assert "tree" in names and "file" not in names
    assert "file" in {n for n, _v, _a in packages(env, "side")}
    before = packages(env, "layered")

    # another build's file under a cached package's name, of the same size (apt would take
    # it as downloaded) and used more recently: never offered (the rebuild reinstalls tree
    # from the cache; dpkg would refuse this file, and the count below would be off by one)
    real = next((env.cache / "packages").glob("*/tree_*.deb"))
    fake = env.cache / "packages" / ("0" * 64)
    fake.mkdir()
    (fake / real.name).write_bytes(b"!" * real.stat().st_size)

    # one package more: no bootstrap, only jq and what it pulls in downloaded (counted by the
    # build and checked against the manifest's package lists)
    recipe(env, "layered", ["tree", "jq"])
    again = build(env, str(first))[0]
    assert bootstrap_runs(env, "layered") == 0
    added = packages(env, "layered") - before
    assert ("jq" in {name for name, _v, _a in added}) and packages(env, "layered") >= before
    use = again["package_cache"]
    assert isinstance(use, dict)
    assert use["downloaded"] == len(added), (use, added)
    # every other package of the new layer (the image's, less the base's) came from the cache
    status = (entries(env.cache, "bootstrap")[0] / "root/var/lib/dpkg/status").read_text()
    base = {(p.name, p.version, p.arch) for p in parse_dpkg_status(status)}
    layer = packages(env, "layered") - base
    assert use["from_cache"] == len(layer) - len(added) > 0, (use, len(layer))
    assert 0 < int(use["downloaded_bytes"]) < 5_000_000, use
    assert len(entries(env.cache, "bootstrap")) == 1 and len(entries(env.cache, "layers")) == 3

    # nothing changed: neither layer is made again, nothing installed or downloaded
    same = build(env, str(first))[0]
    assert same["package_cache"] == {"from_cache": 0, "downloaded": 0, "downloaded_bytes": 0}

    # the same recipe in an empty cache (cold: base and layer made, every .deb downloaded)
    # gives the same tarball as the build whose layers came from the cache
    cold_env = Env(tmp_path / "c", tmp_path / "c" / "out", tmp_path / "c" / "work",
                   tmp_path / "c" / "cache")
    cold_env.tmp.mkdir()
    recipe(cold_env, "layered", ["tree", "jq"])
    fresh = build(cold_env, str(cold_env.tmp / "layered.toml"))[0]
    assert isinstance(fresh["package_cache"], dict) and fresh["package_cache"]["from_cache"] == 0
    assert tarball_sha(cold_env.out, "layered") == tarball_sha(env.out, "layered")

    # a layer made on another copy of its base (the base damaged and made again, or pruned
    # before it) holds a package database that describes other files: it is made again
    layer = next(p for p in entries(env.cache, "layers")
                 if "jq" in json.loads((p / "info.json").read_text())["spec"]["packages"])
    info = json.loads((layer / "info.json").read_text())
    info["base"]["contents"] = "0" * 64
    (layer / "info.json").write_text(json.dumps(info))
    (env.tmp / "layered.toml").write_text((env.tmp / "layered.toml").read_text()
                                          + '[[post]]\nrun = "true"\n')
    r = env.nspawnbuild("build", str(first))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "made on another copy of its base" in r.stderr
    assert json.loads((layer / "info.json").read_text())["base"]["contents"] != "0" * 64
