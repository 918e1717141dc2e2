"""``build --check-reproducible``: build twice, the second time with what a reproducibility
tester varies, compare, explain.

The first build runs in a plain, fixed environment; the second varies, from inside the tool,
what Debian's reprotest varies (:data:`VARIATIONS`): the build path, the umask, the time zone,
the locale, the CPU count, the host and domain name (a UTS namespace), ``$HOME``, extra
environment variables, the clock (libfaketime, when installed) and the order of directory
entries (disorderfs, when installed). Each build has a cache of its own, so the bootstrap runs
twice too. The variations used are printed by name, with those that could not be applied and
why. When the tarballs differ, the two trees are compared path by path and each difference is
named (content, mode, owner, mtime, xattr, link target), followed by the diffoscope command
for the two trees and, when diffoscope is installed, its report.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import buildenv
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
    #: the build's directories below the run's own: another path, another depth
    path: str = "."
    #: host and domain name the build sees (a UTS namespace); None: the caller's
    uts: tuple[str, str] | None = None
    #: libfaketime's FAKETIME for nspawnbuild's own process; None: the real clock
    faketime: str | None = None
    #: the cache on disorderfs (shuffled directory entries)
    disorder: bool = False
    #: variables of the caller's the build does not get
    drop: tuple[str, ...] = field(default=())


#: the second build's time shift (libfaketime syntax): a clock a year ahead
CLOCK_AHEAD = "+1y"
#: what the second build varies, as (name, first build, second build); the CPU, clock and file
#: ordering lines are completed when the build runs (they depend on this host)
VARIATIONS = (
    ("build path", "DIR/0/", "DIR/1/second/build/in/a/deeper/path/"),
    ("umask", "0022", "0077"),
    ("time zone", "TZ=UTC", "TZ=Pacific/Kiritimati (UTC+14)"),
    ("locale", "LANG=LC_ALL=C.UTF-8", "LANG=LC_ALL=fr_CH.UTF-8, LANGUAGE=fr_CH:fr"),
    ("host and domain name", "the caller's", "reprotest-second-build / reprotest.invalid "
     "(a UTS namespace)"),
    ("HOME", "the caller's", "/nonexistent/second-build"),
    ("environment", "the caller's", "the caller's plus REPROTEST_CAPTURE_ENVIRONMENT, "
     "PYTHONHASHSEED=4242, SHELL, TERM, LD_LIBRARY_PATH, MAKEFLAGS, DEB_BUILD_OPTIONS, "
     "SYSTEMD_LOG_LEVEL; without USER, LOGNAME"),
)
EXTRA_ENV = {
    "REPROTEST_CAPTURE_ENVIRONMENT": "i_capture_the_environment",
    "PYTHONHASHSEED": "4242",
    "SHELL": "/bin/false",
    "TERM": "xterm-256color",
    "LD_LIBRARY_PATH": "/nonexistent/lib",
    "MAKEFLAGS": "-j7",
    "DEB_BUILD_OPTIONS": "parallel=7",
    "SYSTEMD_LOG_LEVEL": "debug",
}
FIRST = Variant(0o022, {"TZ": "UTC", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}, single_cpu=False)
SECOND = Variant(
    0o077,
    {"TZ": "Pacific/Kiritimati", "LC_ALL": "fr_CH.UTF-8", "LANG": "fr_CH.UTF-8",
     "LANGUAGE": "fr_CH:fr", "HOME": "/nonexistent/second-build", **EXTRA_ENV},
    single_cpu=True, path="second/build/in/a/deeper/path",
    uts=("reprotest-second-build", "reprotest.invalid"), faketime=CLOCK_AHEAD, disorder=True,
    drop=("USER", "LOGNAME"))
VARIANTS = (FIRST, SECOND)


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


# -- what this host can vary ------------------------------------------------------------------

def libfaketime() -> Path | None:
    """libfaketime's library (Debian's ``faketime`` package), or None when not installed."""
    for pattern in ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                    "/usr/local/lib/faketime/libfaketime.so.1"):
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    return None


def disorderfs_missing() -> str | None:
    """Why disorderfs cannot be used here, or None when it can."""
    if shutil.which("disorderfs") is None:
        return "disorderfs is not installed (apt-get install disorderfs)"
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing (FUSE is not available here)"
    return None


def cpu_line() -> str:
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        return "not varied: this process may run on one CPU only"
    return f"{cpus} CPUs, then 1 (CPU affinity)"


def clock_line() -> str:
    if libfaketime() is None:
        return "not varied: libfaketime is not installed (apt-get install faketime)"
    return (f"the real clock, then {CLOCK_AHEAD} (libfaketime) for nspawnbuild's own process "
            "(planning, packing, manifest); the bootstrapper and the steps keep the kernel's "
            "clock: the build's fixed environment drops LD_PRELOAD, and nothing changes the "
            "kernel's clock short of a VM")


def variations_used(disorder: str) -> list[tuple[str, str]]:
    """``(name, what)`` for every variation the second build applies (or why not)."""
    lines = [(name, f"{first}, then {second}") for name, first, second in VARIATIONS]
    lines.append(("CPU count", cpu_line()))
    lines.append(("clock", clock_line()))
    lines.append(("file ordering", disorder))
    return lines


# -- the two builds ---------------------------------------------------------------------------

def _child_env(variant: Variant) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in variant.drop}
    env.update(variant.env)
    lib = libfaketime() if variant.faketime else None
    if lib is not None and variant.faketime is not None:
        # the real-time clock only: with a faked monotonic clock, Python's timed waits
        # (threading, subprocess) compute their deadlines a year away and never return
        env.update(LD_PRELOAD=str(lib), FAKETIME=variant.faketime,
                   FAKETIME_DONT_RESET="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
    return env


def _build(ref: str, base: Path, variant: Variant,
           cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    """One build of ``ref`` by a child nspawnbuild, all its directories under ``base`` (given
    as options, so nothing of this run's layout leaks in), in the variant's environment."""
    def prepare() -> None:
        os.umask(variant.umask)
        if variant.single_cpu:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        if variant.uts is not None:
            buildenv.enter_uts_namespace(*variant.uts)

    return run_captured(
        [sys.executable, "-m", "nspawnbuild.cli", "build", ref, "--out", str(base / "out"),
         "--work-dir", str(base / "work"), "--cache-dir", str(cache or base / "cache")],
        env=_child_env(variant), prepare=prepare, cwd=Path.cwd())


@contextlib.contextmanager
def disordered(backing: Path, mountpoint: Path) -> Iterator[None]:
    """``backing`` seen at ``mountpoint`` through disorderfs, directory entries shuffled."""
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    run(["disorderfs", "--quiet", "--multi-user=yes", "--shuffle-dirents=yes",
         str(backing), str(mountpoint)], f"mount disorderfs at {mountpoint}")
    try:
        yield
    finally:
        run(["umount", str(mountpoint)], f"unmount disorderfs at {mountpoint}")
        mountpoint.rmdir()


#: what the rootfs stage says when the cache is on a file system without ID-mapped mounts
IDMAP_REFUSED = "ID-map "


def _second_build(ref: str, base: Path, variant: Variant) -> tuple[
        subprocess.CompletedProcess[str], str]:
    """The varied build, and what its file-ordering variation was."""
    why = disorderfs_missing() if variant.disorder else "not asked for"
    if why is not None:
        return _build(ref, base, variant), f"not varied: {why}"
    backing, cache = base / "cache.disorderfs-backing", base / "cache"
    with disordered(backing, cache):
        r = _build(ref, base, variant)
    if r.returncode == 0:
        return r, "directory entries shuffled (disorderfs) under the cache: the bootstrap, " \
                  "the image's lower layer and the packer read them so"
    if IDMAP_REFUSED not in r.stderr:
        return r, "directory entries shuffled (disorderfs) under the cache"
    # a step needs the cache ID-mapped, which FUSE refuses: the bootstrap ran on disorderfs,
    # the rest runs on the directory below it
    r = _build(ref, base, variant, cache=backing)
    return r, ("directory entries shuffled (disorderfs) under the cache for the bootstrap only: "
               "build steps need ID-mapped mounts, which disorderfs (FUSE) does not offer")


def check(ref: str, name: str, epoch: int, parent: Path, keep: bool = False) -> int:
    """Build ``ref`` twice under ``parent``; print the verdict; 0 when reproducible."""
    parent.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(prefix=f"repro-{name}-", dir=parent))
    bases = [top / "0", top / "1" / SECOND.path]
    try:
        manifests = []
        print(f"build 1 of 2 in {bases[0]} ...", flush=True)
        r = _build(ref, bases[0], FIRST)
        disorder = "not varied"
        if r.returncode == 0:
            print(f"build 2 of 2 in {bases[1]}, varied ...", flush=True)
            r, disorder = _second_build(ref, bases[1], SECOND)
        print("varied between the two builds:")
        for what, how in variations_used(disorder):
            print(f"  {what}: {how}")
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            print(f"error: a build of {name} failed; see above", file=sys.stderr)
            return 1
        for base in bases:
            manifests.append(json.loads((base / "out" / name / "manifest.json").read_text()))
        a, b = (m["artifacts"] for m in manifests)
        if a["tarball"]["sha256"] == b["tarball"]["sha256"]:
            print(f"reproducible: {a['tarball']['sha256']}  {a['tarball']['file']}")
            return 0
        print(f"NOT reproducible: {a['tarball']['sha256']} vs {b['tarball']['sha256']}")
        trees = [unpack(base / "out" / name / m["artifacts"]["tarball"]["file"], base / "tree")
                 for base, m in zip(bases, manifests, strict=True)]
        for line in explain(trees[0], trees[1], epoch):
            print(line)
        print(f"  the two trees are kept in {trees[0]} and {trees[1]}" if keep else
              "  run again with --keep to keep the two trees")
        return 1
    finally:
        if not keep:
            remove_tree(top)


#: lines of the per-path list and of diffoscope's report that are shown
SHOWN_DIFFERENCES = 200
SHOWN_DIFFOSCOPE_LINES = 300


def explain(a: Path, b: Path, epoch: int) -> list[str]:
    """What differs between the unpacked trees ``a`` and ``b``: each differing path and what
    of it, the diffoscope command for the two trees and, when diffoscope is installed, the
    first lines of its report."""
    diffs = compare_trees(a, b, epoch)
    lines = [f"  {d}" for d in diffs[:SHOWN_DIFFERENCES]]
    if len(diffs) > SHOWN_DIFFERENCES:
        lines.append(f"  ... and {len(diffs) - SHOWN_DIFFERENCES} more")
    if not diffs:
        lines.append("  the trees are identical: the packer or compressor differs between the runs")
    command = ["diffoscope", "--no-progress", "--text", "-", str(a), str(b)]
    lines.append(f"  diffoscope: {' '.join(command)}")
    if shutil.which("diffoscope") is None:
        lines.append("  (diffoscope is not installed: apt-get install diffoscope-minimal)")
        return lines
    done = run_captured(command, env=buildenv.environment())
    report = done.stdout.splitlines()
    if done.returncode not in (0, 1):
        lines.append(f"  diffoscope failed (exit code {done.returncode}): "
                     f"{done.stderr.strip()[-500:]}")
    lines.append(f"  diffoscope's report ({len(report)} lines):")
    lines.extend(f"    {line}" for line in report[:SHOWN_DIFFOSCOPE_LINES])
    if len(report) > SHOWN_DIFFOSCOPE_LINES:
        lines.append(f"    ... and {len(report) - SHOWN_DIFFOSCOPE_LINES} more lines")
    return lines


def unpack(tarball: Path, dest: Path) -> Path:
    """The tree of a built tarball, with owners, modes and xattrs (a build's own tree is an
    overlay that exists only while the build runs, in its own mount namespace)."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["tar", "-x", "--numeric-owner", "--xattrs", "--xattrs-include=*",
         "-C", str(dest), "-f", str(tarball)], f"unpack {tarball}")
    return dest
