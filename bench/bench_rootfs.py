#!/usr/bin/env python3
"""The rootfs stage on an overlay of the read-only cache against the old hardlink farm.

    .venv/bin/python bench/bench_rootfs.py [--runs 5] [--old COMMIT]

Both in the same run, on the same cached debian-base bootstrap (built first if missing):

1. *stage fixed cost*: what the stage does besides the recipe's own work. Old: ``cp -al`` of
   the entry plus real copies of the directories tools edit in place, and a stat fingerprint
   of the entry before and after (to notice in-place writes). New: the contents check of the
   entry, overlay mount and unmount.
2. *one post-step*: the same ``true`` post-step run with the old nspawn command line on the
   farm, and through the new sandbox (user namespace, ID-mapped overlay, own cgroup).
3. *whole rebuild after a post-step change*: ``nspawnbuild build`` of the old commit (a git
   worktree) against this checkout, alternating, with a fresh post-step each run.

Needs root. Prints medians and ranges (min-max) and the ratio new/old; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
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

from nspawnbuild import cache  # noqa: E402
from nspawnbuild.namespaces import enter_private_mount_namespace  # noqa: E402
from nspawnbuild.overlay import ImageTree  # noqa: E402
from nspawnbuild.plan import make_plan  # noqa: E402
from nspawnbuild.recipe.load import load_recipe  # noqa: E402
from nspawnbuild.sandbox import Sandbox, nspawn_argv  # noqa: E402
from nspawnbuild.steplog import StepLog  # noqa: E402

#: what the old link_tree() copied instead of linking
PRIVATE_DIRS = ("etc", "root", "home", "var/lib/dpkg", "var/cache/debconf", "var/log",
                "var/lib/systemd", "var/spool")


def fingerprint(root: Path) -> int:
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.lstat(os.path.join(dirpath, name))
            n += 1
    return n


def old_stage(entry: Path, dest: Path) -> None:
    fingerprint(entry / "root")
    subprocess.run(["cp", "-al", "--", str(entry / "root"), str(dest)], check=True)
    for sub in PRIVATE_DIRS:
        if (entry / "root" / sub).is_dir():
            subprocess.run(["rm", "-rf", "--", str(dest / sub)], check=True)
            subprocess.run(["cp", "-a", "--", str(entry / "root" / sub), str(dest / sub)], check=True)
    fingerprint(entry / "root")


def new_stage(entry: Path, work: Path) -> ImageTree:
    assert not cache.verify_contents(entry, None)
    tree = ImageTree(entry / "root", work / "layer", work / "rootfs")
    tree.create()
    tree.mount()
    return tree


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def row(label: str, old: list[float], new: list[float]) -> str:
    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):.3f} s ({min(xs):.3f}-{max(xs):.3f})"
    ratios = [n / o for n, o in zip(new, old, strict=True)]
    return (f"| {label} | {fmt(old)} | {fmt(new)} | {statistics.median(new) / statistics.median(old):.2f}"
            f" ({min(ratios):.2f}-{max(ratios):.2f}) |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--old", default="e93887e", help="the commit with the hardlink farm")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rootfs-"))
    env = dict(os.environ, NSPAWNBUILD_OUT=str(tmp / "out"), NSPAWNBUILD_WORK=str(tmp / "work"))
    recipe = load_recipe(ROOT / "recipes" / "debian-base.toml")
    subprocess.run([str(BIN / "nspawnbuild"), "build", "--quiet", str(recipe.path)], env=env,
                   check=True)
    entry = Path(env.get("NSPAWNBUILD_CACHE") or Path.home() / ".cache/nspawnbuild") / \
        "bootstrap" / make_plan(recipe).bootstrap_key
    assert enter_private_mount_namespace()
    rows = []

    old_t, new_t = [], []
    for i in range(args.runs):
        dest = tmp / f"farm{i}"
        old_t.append(timed(lambda d=dest: old_stage(entry, d)))
        shutil.rmtree(dest)
        work = tmp / f"ov{i}"
        t = time.monotonic()
        tree = new_stage(entry, work)
        tree.umount()
        new_t.append(time.monotonic() - t)
    rows.append(row("rootfs stage, fixed cost", old_t, new_t))

    old_t, new_t = [], []
    log = StepLog(tmp / "step.log")
    for i in range(args.runs):
        dest = tmp / f"farm-step{i}"
        old_stage(entry, dest)
        argv = nspawn_argv(dest, "bench", ["/bin/true"], network=False)
        old_t.append(timed(lambda a=argv: subprocess.run(a, check=True, capture_output=True)))
        shutil.rmtree(dest)
        tree = new_stage(entry, tmp / f"ov-step{i}")
        with Sandbox(tree, "bench") as sandbox:
            new_t.append(timed(lambda s=sandbox: s.run(log, ["/bin/true"], step="bench",
                                                       network=False)))
        tree.umount()
    rows.append(row("one post-step (`true`)", old_t, new_t))

    old_tree = tmp / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old_tree),
                    args.old], check=True)
    (old_tree / "nspawnbuild_plugins").symlink_to(old_tree / "plugins")
    try:
        old_t, new_t = [], []
        for i in range(args.runs):
            for which, times in (("old", old_t), ("new", new_t)):
                child = tmp / f"child-{which}.toml"
                child.write_text(f'extends = "{recipe.path}"\nname = "child-{which}"\n'
                                 f'[[post]]\nrun = "echo {i} > /etc/bench"\n')
                e = dict(env, PYTHONPATH=str(old_tree)) if which == "old" else env
                t = time.monotonic()
                subprocess.run([str(BIN / "nspawnbuild"), "build", "--quiet", str(child)], env=e,
                               check=True, cwd=tmp)
                times.append(time.monotonic() - t)
        rows.append(row("whole rebuild after a post-step change", old_t, new_t))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)])
    print(f"rootfs on an overlay vs the hardlink farm of {args.old}, {args.runs} runs, "
          f"{os.cpu_count()} CPUs\n")
    print("| case | hardlink farm (old) | overlay + sandbox (new) | ratio new/old |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    subprocess.run(["rm", "-rf", "--one-file-system", str(tmp)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
