"""What Debian's reprotest varies, one variation per test case: same tarball as the reference.

One reference build of ``recipes/debian-base.toml`` in a plain environment (umask 022,
TZ=UTC, LC_ALL=C.UTF-8, HOME=/root, all CPUs, the host's names, the real clock), then one cold
build per variation (its own out, work and cache directories, so the bootstrap runs again
under the variation), each of which must give the reference's tarball, byte for byte. The
variations are applied from outside, with the real tools, the way a tester would:

- build path: other, deeper directories and another working directory;
- umask 077 (``sh -c 'umask 077; exec ...'``);
- TZ=Pacific/Kiritimati (UTC+14);
- locale: LC_ALL=C (ASCII), LANG=fr_CH.UTF-8, LANGUAGE=fr_CH:fr;
- CPU count: ``taskset -c 0``;
- host and domain name: ``unshare --uts`` with both set;
- HOME=/nonexistent/second-build;
- extra variables (PYTHONHASHSEED, TERM, SHELL, MAKEFLAGS, ...), USER and LOGNAME removed;
- time: ``faketime -f +1y``, a real-time clock a year ahead (the monotonic clock is left alone:
  faked, it makes Python's timed waits hang). libfaketime reaches nspawnbuild's own
  process (planning, packing, the manifest: the test checks that build.log's start date is a
  year ahead); the bootstrapper and the steps keep the kernel's clock, because the build's
  fixed environment drops LD_PRELOAD, and nothing short of a VM or the host's clock shifts the
  kernel's clock (``unshare --time`` shifts only the monotonic and boot-time clocks);
- file ordering: the cache directory on disorderfs with shuffled directory entries: the base's
  bootstrap (dpkg, maintainer scripts of ~90 packages) writes and reads its tree there. The
  package layer cannot: its sandbox needs ID-mapped layers, which FUSE refuses, so when the
  build says so it runs again on the directory below disorderfs, where it finds the base
  already made (as ``--check-reproducible`` does). Not the work directory: overlayfs refuses
  an upper layer on FUSE (no tmpfile, no RENAME_WHITEOUT).

The builds run two at a time (each its own directories and UID range) to keep the file's time
down; each test case waits for its own build. A last case builds a recipe with a post-step
that writes what the step sees (umask, environment, names) under the varied environment.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import BIN, ROOT, tar_stream, tarball_of, unpack
from nspawnbuild import buildenv, reproduce
from nspawnbuild.tree import remove_tree

pytestmark = pytest.mark.integration

NAME = "debian-base"
RECIPE = ROOT / "recipes" / f"{NAME}.toml"
#: the reference build's environment, set whatever the caller's (CI's or a developer's)
REFERENCE_ENV = {"TZ": "UTC", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": "/root"}
UMASK_077 = ["sh", "-c", 'umask 077 && exec "$@"', "sh"]
UTS = ["unshare", "--uts", "sh", "-c",
       "echo reprotest-other-host > /proc/sys/kernel/hostname && "
       'echo reprotest.invalid > /proc/sys/kernel/domainname && exec "$@"', "sh"]
FAKETIME = ["faketime", "-f", "+1y"]


@dataclass(frozen=True)
class Variation:
    name: str
    wrap: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    path: str = "build"
    disorder: bool = False
    #: the host program the variation needs (its Debian package)
    needs: tuple[str, str] | None = None


VARIATIONS = [
    Variation("build-path", path="a/much/deeper/build/path/than/the/reference/build"),
    Variation("umask-077", wrap=tuple(UMASK_077)),
    Variation("tz", env={"TZ": "Pacific/Kiritimati"}),
    Variation("locale", env={"LC_ALL": "C", "LANG": "fr_CH.UTF-8", "LANGUAGE": "fr_CH:fr"}),
    Variation("cpu-count", wrap=("taskset", "-c", "0")),
    Variation("hostname-domainname", wrap=tuple(UTS)),
    Variation("home", env={"HOME": "/nonexistent/second-build"}),
    Variation("environment", env=dict(reproduce.EXTRA_ENV), drop=("USER", "LOGNAME")),
    # the real-time clock only: a faked monotonic clock makes Python's timed waits (threading,
    # subprocess) compute deadlines a year away, and nspawnbuild hangs in the first one
    Variation("time", wrap=tuple(FAKETIME), env={"FAKETIME_DONT_FAKE_MONOTONIC": "1"},
              needs=("faketime", "faketime")),
    Variation("file-ordering", disorder=True, needs=("disorderfs", "disorderfs")),
]


@dataclass
class Built:
    out: Path
    cache: Path
    returncode: int
    output: str

    @property
    def tarball(self) -> Path:
        return tarball_of(self.out / NAME)

    def digest(self) -> str:
        assert self.returncode == 0, self.output
        return hashlib.sha256(self.tarball.read_bytes()).hexdigest()


@contextlib.contextmanager
def cache_dir(base: Path, disorder: bool) -> Iterator[Path]:
    if not disorder:
        yield base / "cache"
        return
    with reproduce.disordered(base / "cache.backing", base / "cache"):
        yield base / "cache"


def reference_umask() -> None:
    os.umask(0o022)  # the reference's, whatever pytest's; the umask variation sets its own


def build(base: Path, v: Variation | None, recipe: Path = RECIPE, cache: Path | None = None,
          keep_cache: bool = False) -> Built:
    """One build of ``recipe`` under ``base``, varied by ``v`` (None: the reference)."""
    v = v or Variation("reference")
    where = base / v.path
    where.mkdir(parents=True, exist_ok=True)
    env = {k: val for k, val in os.environ.items()
           if k not in v.drop and not k.startswith("NSPAWNBUILD_") and k != "SOURCE_DATE_EPOCH"}
    env.update(REFERENCE_ENV)
    env.update(v.env)
    def run(c: Path) -> subprocess.CompletedProcess[str]:
        argv = [*v.wrap, str(BIN / "nspawnbuild"), "build", str(recipe), "--out",
                str(where / "out"), "--work-dir", str(where / "work"), "--cache-dir", str(c)]
        return subprocess.run(argv, cwd=where, env=env, capture_output=True, text=True,
                              timeout=1200, preexec_fn=reference_umask)

    with cache_dir(where, v.disorder) as own_cache:
        c = cache or own_cache
        r = run(c)
    if v.disorder and r.returncode != 0 and reproduce.IDMAP_REFUSED in r.stderr:
        # the base was bootstrapped on disorderfs; the package layer's sandbox needs its
        # layers ID-mapped, which FUSE refuses: it is made on the directory below, as
        # --check-reproducible does
        c = where / "cache.backing"
        r = run(c)
    remove_tree(where / "work")  # the tarball is what is compared; the trees take the disk
    if not keep_cache:
        remove_tree(where / ("cache.backing" if v.disorder else "cache"))
    return Built(where / "out", c, r.returncode, r.stdout + r.stderr)


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, concurrent.futures.Future[Built]]]:
    """The reference build and the build of every selected variation, two at a time."""
    selected = {item.callspec.params["variation"].name for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")
                and "variation" in item.callspec.params}
    top = tmp_path_factory.mktemp("reprotest")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {"reference": pool.submit(build, top / "reference", None, keep_cache=True)}
        for v in VARIATIONS:
            if v.name in selected and (v.needs is None or shutil.which(v.needs[0])):
                futures[v.name] = pool.submit(build, top / v.name, v)
        yield futures
        for f in futures.values():
            f.cancel()


def differences(a: Built, b: Built, tmp: Path) -> str:
    """The paths that differ between two builds' tarballs, for the assertion message."""
    ta, tb = unpack(a.tarball, tmp / "a"), unpack(b.tarball, tmp / "b")
    diffs = reproduce.compare_trees(ta, tb, json.loads(
        (a.out / NAME / "manifest.json").read_text())["source_date_epoch"])
    return "\n".join(str(d) for d in diffs[:40]) or "the trees are the same; the packer differs"


@pytest.mark.parametrize("variation", VARIATIONS, ids=[v.name for v in VARIATIONS])
def test_variation_gives_the_reference_tarball(
        variation: Variation, matrix: dict[str, concurrent.futures.Future[Built]],
        tmp_path: Path) -> None:
    if variation.needs and not shutil.which(variation.needs[0]):
        pytest.skip(f"needs {variation.needs[0]} (apt-get install {variation.needs[1]}; CI has it)")
    reference = matrix["reference"].result()
    varied = matrix[variation.name].result()
    assert varied.returncode == 0, varied.output
    assert varied.digest() == reference.digest(), differences(reference, varied, tmp_path)
    if variation.name == "time":
        # libfaketime was in effect for nspawnbuild's own process: build.log says so
        started = [line for line in (varied.out / NAME / "build.log").read_text().splitlines()
                   if "started" in line]
        year = [line for line in (reference.out / NAME / "build.log").read_text().splitlines()
                if "started" in line]
        assert started and year, "build.log names no start time"
        assert str(int(year[0].split("started")[1].split()[0][:4]) + 1) in started[0], started


STEP = '''
[[post]]
name = "what a step sees"
network = false
run = """
{ umask; date +%Z; uname -n; cat /proc/sys/kernel/domainname; echo "$HOME";
  env | grep -v -e '^container_uuid=' -e '^PWD=' -e '^SHLVL=' -e '^_=' | sort; } > /etc/step-env
"""
'''


def test_steps_see_the_fixed_environment_under_every_variation(
        matrix: dict[str, concurrent.futures.Future[Built]], tmp_path: Path) -> None:
    """A post-step's view (umask, time zone, names, HOME, variables) is the build's fixed
    environment, not the caller's: the same image under all the variations at once. Both
    builds use the reference's cache (the bootstrap's variations are the cases above)."""
    reference = matrix["reference"].result()
    assert reference.returncode == 0, reference.output
    recipe = tmp_path / "stepenv.toml"
    recipe.write_text(f'extends = "{RECIPE}"\nname = "stepenv"\n{STEP}')
    all_at_once = Variation(
        "all", wrap=(*UMASK_077, *UTS, "taskset", "-c", "0"),
        env={"TZ": "Pacific/Kiritimati", "LC_ALL": "C", "LANG": "fr_CH.UTF-8",
             "HOME": "/nonexistent/second-build", **reproduce.EXTRA_ENV},
        drop=("USER", "LOGNAME"), path="other/path")
    plain = build(tmp_path / "plain", None, recipe, cache=reference.cache, keep_cache=True)
    varied = build(tmp_path / "varied", all_at_once, recipe, cache=reference.cache,
                   keep_cache=True)
    seen = {}
    for which, b in (("plain", plain), ("varied", varied)):
        assert b.returncode == 0, b.output
        with tar_stream(tarball_of(b.out / "stepenv")) as tar:
            for m in tar:
                if m.name == "./etc/step-env":
                    f = tar.extractfile(m)
                    assert f is not None
                    seen[which] = f.read().decode()
    lines = seen["varied"].splitlines()
    assert lines[:5] == ["0022", "UTC", "stepenv", buildenv.DOMAINNAME, "/root"], lines
    env = dict(line.split("=", 1) for line in lines[5:])
    assert {k: env[k] for k in ("LANG", "LC_ALL", "TZ", "SOURCE_DATE_EPOCH")} == {
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "SOURCE_DATE_EPOCH": "1704067200"}
    assert not set(env) & set(reproduce.EXTRA_ENV), env
    assert seen["varied"] == seen["plain"]
    a = hashlib.sha256(tarball_of(plain.out / "stepenv").read_bytes()).hexdigest()
    b = hashlib.sha256(tarball_of(varied.out / "stepenv").read_bytes()).hexdigest()
    assert a == b
