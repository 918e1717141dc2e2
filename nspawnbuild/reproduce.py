"""``build --check-reproducible``: build twice in separate directories, compare, explain.

The second build runs with another umask, time zone and locale and on a single CPU, with a
cache of its own (so the bootstrap runs twice too). When the tarballs differ, the two trees are
compared path by path and each difference is named (content, mode, owner, mtime, xattr, link
target), so a user can find the cause without diffoscope.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .digests import sha256_file
from .host import run
from .pack import walk_sorted
from .steplog import run_captured
from .tree import remove_tree


@dataclass(frozen=True)
class Variant:
    """How one of the two builds runs: what differs between them is what must not matter."""

    umask: int
    env: dict[str, str]
    single_cpu: bool


#: how the two builds' environments differ
VARIANTS = (
    Variant(0o022, {"TZ": "UTC", "LC_ALL": "C.UTF-8"}, single_cpu=False),
    Variant(0o077, {"TZ": "Pacific/Chatham", "LC_ALL": "C"}, single_cpu=True),
)


@dataclass(frozen=True)
class Difference:
    path: str
    what: str
    a: str
    b: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what} differs ({self.a} vs {self.b})"


def _describe(path: Path, epoch: int) -> dict[str, str]:
    st = path.lstat()
    kind = stat.S_IFMT(st.st_mode)
    out = {"type": {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}.get(
        kind, oct(kind)), "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "owner": f"{st.st_uid}:{st.st_gid}", "mtime": str(min(int(st.st_mtime), epoch))}
    if stat.S_ISLNK(st.st_mode):
        out["link target"] = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        out["content"] = f"sha256:{sha256_file(path)[:16]}"
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
        out["xattr"] = ",".join(f"{n}={os.getxattr(path, n, follow_symlinks=False).hex()}"
                                for n in names) or "-"
    except OSError:
        out["xattr"] = "-"
    return out


def compare_trees(a: Path, b: Path, epoch: int) -> list[Difference]:
    """Every difference between two image trees that would change the tarball."""
    left = {name: path for name, path in walk_sorted(a)}
    right = {name: path for name, path in walk_sorted(b)}
    diffs: list[Difference] = []
    for name in sorted(left.keys() | right.keys()):
        shown = "/" + name.removeprefix("./")
        if name not in right:
            diffs.append(Difference(shown, "presence", "present", "missing"))
            continue
        if name not in left:
            diffs.append(Difference(shown, "presence", "missing", "present"))
            continue
        da, db = _describe(left[name], epoch), _describe(right[name], epoch)
        for key in da.keys() | db.keys():
            if da.get(key) != db.get(key):
                diffs.append(Difference(shown, key, da.get(key, "-"), db.get(key, "-")))
    return sorted(diffs, key=lambda d: (d.path, d.what))


def _build(ref: str, base: Path, variant: Variant) -> subprocess.CompletedProcess[str]:
    """One build of ``ref`` by a child nspawnbuild, all its directories under ``base`` (given
    as options, so nothing of this run's layout leaks in), in the variant's environment."""
    def prepare() -> None:
        os.umask(variant.umask)
        if variant.single_cpu:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    return run_captured(
        [sys.executable, "-m", "nspawnbuild.cli", "build", ref, "--out", str(base / "out"),
         "--work-dir", str(base / "work"), "--cache-dir", str(base / "cache")],
        env={**os.environ, **variant.env}, prepare=prepare, cwd=Path.cwd())


def check(ref: str, name: str, epoch: int, parent: Path, keep: bool = False) -> int:
    """Build ``ref`` twice under ``parent``; print the verdict; 0 when reproducible."""
    parent.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(prefix=f"repro-{name}-", dir=parent))
    try:
        manifests = []
        for i, variant in enumerate(VARIANTS):
            print(f"build {i + 1} of 2 in {top / str(i)} ...", flush=True)
            r = _build(ref, top / str(i), variant)
            if r.returncode != 0:
                sys.stderr.write(r.stderr)
                print(f"error: build {i + 1} of {name} failed; see above", file=sys.stderr)
                return 1
            manifests.append(json.loads((top / str(i) / "out" / name / "manifest.json").read_text()))
        a, b = (m["artifacts"] for m in manifests)
        if a["tarball"]["sha256"] == b["tarball"]["sha256"]:
            print(f"reproducible: {a['tarball']['sha256']}  {a['tarball']['file']}")
            return 0
        print(f"NOT reproducible: {a['tarball']['sha256']} vs {b['tarball']['sha256']}")
        trees = [unpack(top / str(i) / "out" / name / m["artifacts"]["tarball"]["file"],
                         top / str(i) / "tree") for i, m in enumerate(manifests)]
        diffs = compare_trees(trees[0], trees[1], epoch)
        for d in diffs[:200]:
            print(f"  {d}")
        if len(diffs) > 200:
            print(f"  ... and {len(diffs) - 200} more")
        if not diffs:
            print("  the trees are identical: the packer or compressor differs between the runs")
        print(f"  the two trees are kept in {top}" if keep else
              "  run again with --keep to inspect the two trees")
        return 1
    finally:
        if not keep:
            remove_tree(top)


def unpack(tarball: Path, dest: Path) -> Path:
    """The tree of a built tarball, with owners, modes and xattrs (a build's own tree is an
    overlay that exists only while the build runs, in its own mount namespace)."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["tar", "-x", "--numeric-owner", "--xattrs", "--xattrs-include=*",
         "-C", str(dest), "-f", str(tarball)], f"unpack {tarball}")
    return dest
