#!/usr/bin/env python3
"""Benchmark the two cached layers (base, package layer) and the package cache; prints markdown.

    .venv/bin/python bench/bench_layers.py [--runs 3] [--recipe debian-base]

Needs root, mmdebstrap, tar and zstd, and the Debian mirror. Every case is a ratio of two
times measured in the same run, each run in fresh temporary directories:

- add one package: a child recipe built cold, then the same child with one more package
  (--add, default jq) rebuilt in the same directories; against that child's cold build;
- second recipe on an already-built base: the recipe built (its base is then in the cache),
  then the child, which installs other packages, in the same cache; against the child's cold
  build;
- warm package cache: the child built cold in a cache that holds only a copy of cache/packages
  from the child's earlier cold build (no cache/bootstrap, no cache/layers); against the cold
  build with an empty cache;
- raw tools: the recipe built cold (with zstd at the level nspawnbuild uses for zstd, so both
  sides make the same format) against mmdebstrap with the same variant, architecture,
  components and --include of every package of the image, then tar --sort=name | zstd -T0.

Medians of --runs runs with (min-max), ratios of the medians. The peak RSS of a build is the
ru_maxrss that wait4 reports for the nspawnbuild process: the largest resident set of any one
process in its tree (itself, or a child it waited for, such as mmdebstrap, apt or dpkg), not a
sum. This is a benchmark, not a test: nothing here fails a build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from nspawnbuild.plan import collect_packages, make_plan  # noqa: E402
from nspawnbuild.recipe.defaults import DEFAULT_LEVELS  # noqa: E402
from nspawnbuild.recipe.load import load_recipe  # noqa: E402


@dataclass
class Run:
    """One measured process: wall time, peak RSS (MiB), the build's package-cache counts."""

    seconds: float
    rss_mib: float
    cache: dict[str, int] = field(default_factory=dict)


def run(argv: list[str], log: Path) -> tuple[Run, str]:
    """Run ``argv`` to the end, timed; its rusage from wait4 (the tree's largest process)."""
    with open(log, "w") as err, tempfile.TemporaryFile("w+") as out:
        start = time.monotonic()
        p = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        took = time.monotonic() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if p.returncode != 0:
        sys.exit(f"benchmark step failed ({p.returncode}): {' '.join(argv)}\n"
                 f"{stdout[-2000:]}{log.read_text()[-4000:]}")
    return Run(took, usage.ru_maxrss / 1024), stdout


def build(recipe: Path, d: Path) -> Run:
    """``nspawnbuild build --json`` of ``recipe`` in ``d``'s out, work and cache directories."""
    r, stdout = run([str(BIN / "nspawnbuild"), "build", "--json", str(recipe),
                     "--out", str(d / "out"), "--work-dir", str(d / "work"),
                     "--cache-dir", str(d / "cache")], d.parent / f"{d.name}.{recipe.stem}.log")
    r.cache = json.loads(stdout)[0].get("package_cache", {})
    return r


def stats(values: list[float], unit: str = "s", fmt: str = ".1f") -> str:
    return (f"{statistics.median(values):{fmt}} {unit} "
            f"({min(values):{fmt}}–{max(values):{fmt}})")


def med(runs: list[Run]) -> float:
    return statistics.median(r.seconds for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--recipe", default="debian-base")
    ap.add_argument("--child-packages", default="curl",
                    help="what the child recipe installs beyond the recipe (comma-separated)")
    ap.add_argument("--add", default="jq", help="the one package added to the child")
    args = ap.parse_args()
    load_start = os.getloadavg()
    recipe = load_recipe(args.recipe)
    level = recipe.output.level if recipe.output.compression == "zstd" \
        else DEFAULT_LEVELS["zstd"]
    tmp = Path(tempfile.mkdtemp(prefix="nspawnbuild-bench-layers-", dir="/var/tmp"))
    # the recipe itself, made zstd at nspawnbuild's zstd level (a target_systemd below 258
    # defaults to gzip): the same format and level as the raw tools' side
    zrec = tmp / "bench-z.toml"
    zrec.write_text(f'extends = "{recipe.path}"\nname = "bench-z"\n'
                    f'[output]\ncompression = "zstd"\nlevel = {level}\n')
    child_pkgs = [p for p in args.child_packages.split(",") if p]
    child = tmp / "bench-child.toml"
    child_body = f'extends = "{zrec}"\nname = "bench-child"\n'
    child.write_text(child_body + f"packages = {json.dumps(child_pkgs)}\n")
    zr = load_recipe(str(zrec))
    base = make_plan(zr).bootstrap["base"]
    all_pkgs = collect_packages(zr)
    mm = (f"mmdebstrap --mode=root --variant={base['variant']} --architectures={base['arch']} "
          f"--components={','.join(base['components'])} --include={','.join(all_pkgs)} "
          f"--skip=output/dev")
    epoch = zr.epoch
    cold_c: list[Run] = []   # the child, cold, empty cache
    add: list[Run] = []      # the child plus one package, in the same directories
    cold_z: list[Run] = []   # the recipe (zstd), cold, empty cache: the base for `second`
    second: list[Run] = []   # the child on the already-built base
    warm: list[Run] = []     # the child, cold, with a warm package cache only
    raw: list[Run] = []      # mmdebstrap + tar | zstd
    raw_mm: list[float] = []
    try:
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs} (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
            a, b, w = tmp / f"a{i}", tmp / f"b{i}", tmp / f"w{i}"
            # A: the child cold; its package cache copied for W; then one package more
            child.write_text(child_body + f"packages = {json.dumps(child_pkgs)}\n")
            cold_c.append(build(child, a))
            shutil.copytree(a / "cache" / "packages", w / "cache" / "packages", symlinks=True)
            child.write_text(child_body + f"packages = {json.dumps(child_pkgs + [args.add])}\n")
            add.append(build(child, a))
            child.write_text(child_body + f"packages = {json.dumps(child_pkgs)}\n")
            shutil.rmtree(a)
            # B: the recipe cold (the base is then built), then the child on that base
            cold_z.append(build(zrec, b))
            second.append(build(child, b))
            shutil.rmtree(b)
            # raw tools, right after our cold build of the same package set
            tree, tarball = tmp / f"raw{i}", tmp / f"raw{i}.tar.zst"
            t_mm, _ = run(["bash", "-o", "pipefail", "-c",
                           f"SOURCE_DATE_EPOCH={epoch} {mm} {base['release']} {tree}"],
                          tmp / f"raw{i}.mm.log")
            t_tar, _ = run(["bash", "-o", "pipefail", "-c",
                            f"tar --sort=name --numeric-owner --xattrs --xattrs-include='*' "
                            f"--mtime=@{epoch} --clamp-mtime -C {tree} -cf - . "
                            f"| zstd -q -T0 -{level} -o {tarball} -f"], tmp / f"raw{i}.tar.log")
            raw.append(Run(t_mm.seconds + t_tar.seconds, max(t_mm.rss_mib, t_tar.rss_mib)))
            raw_mm.append(t_mm.seconds)
            shutil.rmtree(tree)
            tarball.unlink()
            # W: the child cold with the warm package cache only
            warm.append(build(child, w))
            shutil.rmtree(w)
        load_end = os.getloadavg()

        def row(case: str, ours: list[Run], ref: list[Run], target: float) -> str:
            ratio = med(ours) / med(ref)
            return (f"| {case} | {stats([r.seconds for r in ours])} | "
                    f"{stats([r.seconds for r in ref])} | {ratio:.2f} | ≤ {target:.2f} "
                    f"{'met' if ratio <= target else 'MISSED'} | "
                    f"{max(r.rss_mib for r in ours):.0f} MiB / "
                    f"{max(r.rss_mib for r in ref):.0f} MiB |")

        extra = ", ".join(child_pkgs)
        print(f"## nspawnbuild layers and package cache: {recipe.name}, medians of {args.runs} "
              f"runs (min–max)\n")
        print("| case | measured | reference | ratio of medians | target | peak RSS "
              "(measured / reference) |")
        print("|---|---|---|---|---|---|")
        print(row(f"add one package ({args.add}) to a recipe, rebuilt in its directories "
                  f"(vs that recipe's cold build)", add, cold_c, 0.25))
        print(row(f"second recipe (+ {extra}) on an already-built base (vs its cold build)",
                  second, cold_c, 0.5))
        print(row("cold build with a warm package cache (vs an empty one)", warm, cold_c, 0.6))
        print(row(f"cold build, zstd -{level} (vs mmdebstrap + tar --sort=name \\| zstd -T0 "
                  f"-{level})", cold_z, raw, 1.10))
        print(f"\nraw mmdebstrap alone: {stats(raw_mm)}; packages in the image: {len(all_pkgs)}")
        print("\npackage cache, per build (from `nspawnbuild build --json`, first run):\n")
        print("| build | from_cache | downloaded | downloaded MiB |")
        print("|---|---|---|---|")
        for name, runs in (("child, cold", cold_c), (f"child + {args.add}", add),
                           ("recipe, cold", cold_z), ("child on the built base", second),
                           ("child, warm package cache", warm)):
            c: dict[str, Any] = runs[0].cache
            print(f"| {name} | {c.get('from_cache', 0)} | {c.get('downloaded', 0)} | "
                  f"{c.get('downloaded_bytes', 0) / 2**20:.1f} |")
        print("\nPeak RSS: ru_maxrss from wait4 of the build process, i.e. the largest single "
              "process in its tree (for the raw tools: of mmdebstrap, or of tar | zstd), the "
              "maximum over the runs.")
        print(f"\nload average (1, 5, 15 min): start {' '.join(f'{x:.2f}' for x in load_start)}, "
              f"end {' '.join(f'{x:.2f}' for x in load_end)}; {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
