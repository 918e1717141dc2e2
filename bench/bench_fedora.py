#!/usr/bin/env python3
"""Benchmark the Fedora path against raw ``dnf --installroot`` + ``tar | zstd``, same run.

    .venv/bin/python bench/bench_fedora.py [--runs 5]

Fedora's mirrors cannot be reached from our machines, so both sides install the same few
packages from a signed local repository (built with rpmbuild, rpmsign and createrepo_c, as in
the tests). With so little to install, the figures measure nspawnbuild's own cost per build
(plan, isolation, scrub, audit, manifest) on top of dnf, not dnf's download speed. Needs root,
dnf, rpm, createrepo-c, gpg, zstd. Prints markdown with medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))

from rpmrepo import FEDORA_LIKE, build_repo  # noqa: E402

from bench import build, raw_tar_zstd, sh  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nspawnbuild-bench-fedora-"))
    try:
        repo = build_repo(tmp / "repo", FEDORA_LIKE)
        recipe = tmp / "fedbench.toml"
        recipe.write_text(repo.recipe("fedbench"))
        conf = tmp / "conf"
        (conf / "repos").mkdir(parents=True)
        (conf / "dnf.conf").write_text("[main]\ngpgcheck=1\ninstall_weak_deps=False\n")
        (conf / "repos" / "local.repo").write_text(
            f"[local]\nname=local\nbaseurl={repo.url}\ngpgcheck=1\ngpgkey={repo.key.as_uri()}\n")
        (conf / ".rpmmacros").write_text("%_dbpath /usr/lib/sysimage/rpm\n")
        ours, raw, noop = [], [], []
        for i in range(args.runs):
            ours.append(build(recipe, tmp / f"cold{i}")[0])
            noop.append(build(recipe, tmp / f"cold{i}")[0])
            root = tmp / f"raw{i}"
            t_dnf = sh(f"HOME={conf} dnf -y -q --installroot={root} --releasever=44 "
                       f"--config={conf / 'dnf.conf'} --setopt=reposdir={conf / 'repos'} "
                       "install fedora-release systemd hello-nspawnbuild")
            raw.append(t_dnf + raw_tar_zstd(root, tmp / f"raw{i}.tar.zst", 9, 1704067200))
        print(f"## nspawnbuild benchmark: Fedora from a local repository, medians of {args.runs}\n")
        print("| case | nspawnbuild | raw tools | ratio |")
        print("|---|---|---|---|")
        print(f"| cold build vs dnf --installroot, then tar --sort=name \\| zstd -T0 -9 | "
              f"{statistics.median(ours):.2f} s | {statistics.median(raw):.2f} s | "
              f"{statistics.median(ours) / statistics.median(raw):.2f}× |")
        print(f"| rebuild with nothing changed | {statistics.median(noop):.2f} s | | |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
