#!/usr/bin/env python3
"""Benchmark nspawnbuild against the raw tools, measured in the same run; prints markdown.

    .venv/bin/python bench/bench.py [--runs 3] [--recipe debian-base]

Needs root, mmdebstrap, tar and zstd, and the Debian mirror. Each case is run --runs times
and the median is reported, as a ratio to the raw tools where the case has one. This is a
benchmark, not a test: nothing here fails a build.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from nspawnbuild.pack import SUFFIXES  # noqa: E402
from nspawnbuild.plan import collect_packages, make_plan  # noqa: E402
from nspawnbuild.recipe.load import load_recipe  # noqa: E402
from nspawnbuild.reproduce import unpack  # noqa: E402

PACK_PROBE = """
import json, resource, sys, time
from pathlib import Path
from nspawnbuild.pack import pack
t = time.monotonic()
r = pack(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[5], int(sys.argv[4]))
print(json.dumps({"seconds": time.monotonic() - t, "size": r.size,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def timed(argv: list[str], **kw: object) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    took = time.monotonic() - start
    if r.returncode != 0:
        sys.exit(f"benchmark step failed: {' '.join(map(str, argv))}\n{r.stdout}{r.stderr}")
    return took, r


def sh(cmd: str) -> float:
    return timed(["bash", "-o", "pipefail", "-c", cmd])[0]


def build(recipe: Path | str, base: Path) -> tuple[float, str]:
    took, r = timed([str(BIN / "nspawnbuild"), "build", "--json", str(recipe),
                     "--out", str(base / "out"),
                     "--work-dir", str(base / "work"), "--cache-dir", str(base / "cache")],
                    cwd=ROOT)
    return took, r.stdout


#: the raw compressor for each [output] compression, as the raw side of a comparison
RAW = {"zstd": "zstd -q -T0 -{level}", "gzip": "gzip -n -{level}", "xz": "xz -T0 -{level}",
       "none": "cat"}


def raw_tar_zstd(tree: Path, dest: Path, level: int, epoch: int, comp: str = "zstd") -> float:
    return sh(f"tar --sort=name --numeric-owner --xattrs --xattrs-include='*' --mtime=@{epoch} "
              f"--clamp-mtime -C {tree} -cf - . | {RAW[comp].format(level=level)} > {dest}")


def med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--recipe", default="debian-base")
    ap.add_argument("--levels", default="3,6,9,12,15,19")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe)
    plan = make_plan(recipe)
    base = plan.bootstrap["base"]
    # the recipe's own compression (debian-base's target systemd 257 makes it gzip), and on the
    # raw side the same compressor at the same level
    comp, level, epoch = recipe.output.compression, recipe.output.level, recipe.epoch
    suffix = SUFFIXES[comp]
    # the bootstrap spec holds the base layer's packages only: the image has them all
    pkgs = ",".join(collect_packages(recipe))
    mm = (f"mmdebstrap --mode=root --variant={base['variant']} --architectures={base['arch']} "
          f"--components={','.join(base['components'])} --include={pkgs} --skip=output/dev")
    tmp = Path(tempfile.mkdtemp(prefix="nspawnbuild-bench-"))
    rows: list[tuple[str, str, str, str, str]] = []
    try:
        # 1. cold build vs mmdebstrap + tar | zstd
        ours, raw = [], []
        for i in range(args.runs):
            ours.append(build(recipe.path, tmp / f"cold{i}")[0])
            t_mm = sh(f"SOURCE_DATE_EPOCH={epoch} {mm} {base['release']} {tmp / f'raw{i}'}")
            t_tar = raw_tar_zstd(tmp / f"raw{i}", tmp / f"raw{i}{suffix}", level, epoch, comp)
            raw.append(t_mm + t_tar)
            shutil.rmtree(tmp / f"raw{i}")
        cold = med(ours)
        rows.append((f"cold build vs mmdebstrap, then tar --sort=name | {RAW[comp].format(level=level)}",
                     f"{cold:.1f} s", f"{med(raw):.1f} s", f"{cold / med(raw):.2f}×", "≤ 1.10×"))

        # 2-4. rebuilds, in the first cold build's directories
        b0 = tmp / "cold0"
        noop = [build(recipe.path, b0)[0] for _ in range(args.runs)]
        rows.append(("rebuild with nothing changed", f"{med(noop):.2f} s", "", "", "≤ 0.5 s"))

        child = tmp / "child.toml"
        tarball = b0 / "out" / recipe.name / f"{recipe.name}{suffix}"
        nspawn_times, post_times, untouched, downloads = [], [], True, False
        body = f'extends = "{recipe.path}"\nname = "{recipe.name}"\n'
        child.write_text(body)
        build(child, b0)
        for i in range(args.runs):
            before = tarball.stat().st_mtime_ns
            child.write_text(body + f"[nspawn.Exec]\nLimitNOFILE = {1024 + i}\n")
            nspawn_times.append(build(child, b0)[0])
            untouched &= tarball.stat().st_mtime_ns == before
        for i in range(args.runs):
            child.write_text(body + f'[[post]]\nrun = "echo {i} > /etc/bench"\n')
            took, out = build(child, b0)
            post_times.append(took)
            downloads |= json.loads(out)[0].get("package_cache", {}).get("downloaded", 0) > 0
        rows.append(("rebuild after an [nspawn]-only change", f"{med(nspawn_times):.2f} s", "", "",
                     f"≤ 1 s, tarball {'untouched' if untouched else 'REWRITTEN'}"))
        rows.append(("rebuild after a post-step change", f"{med(post_times):.1f} s", f"{cold:.1f} s",
                     f"{100 * med(post_times) / cold:.0f} %",
                     f"≤ 25 %, {'no download' if not downloads else 'DOWNLOADED'}"))

        # 5, 7. packing alone vs tar | zstd on the same tree; peak RSS of the packer
        # the build's own tree is an overlay that ends with it: pack its unpacked tarball
        tree = unpack(next((b0 / "out" / recipe.name).glob("*.tar.*")), tmp / "tree")
        ours_pack, raw_pack, rss = [], [], []
        for i in range(args.runs):
            _, r = timed([sys.executable, "-c", PACK_PROBE, str(tree), str(tmp / f"p{i}{suffix}"),
                          str(epoch), str(level), comp], cwd=ROOT)
            probe = json.loads(r.stdout)
            ours_pack.append(probe["seconds"])
            rss.append(probe["maxrss_kib"] / 1024)
            raw_pack.append(raw_tar_zstd(tree, tmp / f"t{i}{suffix}", level, epoch, comp))
        rows.append((f"packing alone vs tar --sort=name --numeric-owner | "
                     f"{RAW[comp].format(level=level)}",
                     f"{med(ours_pack):.1f} s", f"{med(raw_pack):.1f} s",
                     f"{med(ours_pack) / med(raw_pack):.2f}×", "≤ 1.2×"))

        # 6. size vs mmdebstrap's own tarball of the same compression (its default level)
        sh(f"SOURCE_DATE_EPOCH={epoch} {mm} {base['release']} {tmp / ('mm' + suffix)}")
        ours_size, mm_size = tarball.stat().st_size, (tmp / ("mm" + suffix)).stat().st_size
        rows.append((f"compressed size vs mmdebstrap's own {suffix}", f"{ours_size / 2**20:.1f} MiB",
                     f"{mm_size / 2**20:.1f} MiB", f"{ours_size / mm_size:.2f}×", "≤ 1.0×"))
        rows.append(("peak RSS of the packing process", f"{max(rss):.0f} MiB", "", "", "≤ 256 MiB"))

        print(f"## nspawnbuild benchmark: {recipe.name}, medians of {args.runs} runs\n")
        print("| case | nspawnbuild | raw tools | ratio | target |")
        print("|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")

        # compression level table
        tree_mib = sum(f.stat().st_size for f in tree.rglob("*")
                       if f.is_file() and not f.is_symlink()) / 2**20
        print(f"\n## zstd level → pack time and size ({recipe.name} tree, {tree_mib:.0f} MiB)\n")
        print("| level | pack time | size |")
        print("|---|---|---|")
        for lv in (int(x) for x in args.levels.split(",")):
            _, r = timed([sys.executable, "-c", PACK_PROBE, str(tree), str(tmp / f"l{lv}.tar.zst"),
                          str(epoch), str(lv), "zstd"], cwd=ROOT)
            probe = json.loads(r.stdout)
            print(f"| {lv} | {probe['seconds']:.1f} s | {probe['size'] / 2**20:.1f} MiB |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
