"""Shared fixtures: an isolated out/work/cache layout per test, one bootstrap cache per session."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import sentinels
from nspawnbuild import reproduce, tarread

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_space() -> str:
    """Free space where the tests' trees go: a run that fills the disk fails every later
    test's tmp_path with an error, so the header and the summary say how much there was."""
    import shutil
    import tempfile
    free = shutil.disk_usage(tempfile.gettempdir()).free
    return f"free space in {tempfile.gettempdir()}: {free / 2**30:.1f} GiB"


def pytest_report_header() -> str:
    return _free_space()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(_free_space() + " (at the end)")


@dataclass
class Env:
    """Where one test's builds go, and how to run the tools against that layout."""

    tmp: Path
    out: Path
    work: Path
    cache: Path

    def environ(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(NSPAWNBUILD_OUT=str(self.out), NSPAWNBUILD_WORK=str(self.work),
                   NSPAWNBUILD_CACHE=str(self.cache))
        env.pop("SOURCE_DATE_EPOCH", None)
        env.update(extra)
        return env

    def nspawnbuild(self, *args: str, cwd: Path | None = None,
                    **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "nspawnbuild"), *args], cwd=cwd or self.tmp,
                              env=self.environ(**extra), capture_output=True, text=True,
                              timeout=1200)

    def package_cache_use(self, recipe: Path, where: str, cache: Path,
                          **extra: str) -> dict[str, int]:
        """Build ``recipe`` into its own out and work dirs (``where``) with ``cache``; what its
        ``--json`` summary says of the package cache."""
        r = self.nspawnbuild("build", "--json", str(recipe), NSPAWNBUILD_OUT=str(self.tmp / where),
                             NSPAWNBUILD_WORK=str(self.tmp / f"work-{where}"),
                             NSPAWNBUILD_CACHE=str(cache), **extra)
        assert r.returncode == 0, r.stdout + r.stderr
        use: dict[str, int] = json.loads(r.stdout)[0]["package_cache"]
        return use

    def doit(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """``doit`` from the project root, the way the README tells a user to run it."""
        return subprocess.run([str(BIN / "doit"), *args], cwd=ROOT, env=self.environ(**extra),
                              capture_output=True, text=True, timeout=1200)


def artifact_digests(out: Path) -> dict[str, str]:
    """sha256 of every artifact under out/NAME; build.log (the log of the last run) is not one."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "build.log"}


def import_tarball(tarball: Path, images: Path, machine: str) -> Path:
    """Import with the real ``systemd-import tar`` (what ``machinectl import-tar`` runs): it
    reads gzip and xz itself; zstd is decompressed through a pipe, as systemd < 258 needs;
    returns the image's tree."""
    images.mkdir(parents=True, exist_ok=True)
    if tarball.suffix != ".zst":
        imp = subprocess.run(["/lib/systemd/systemd-import", "tar", f"--image-root={images}",
                              str(tarball), machine], capture_output=True, text=True)
        assert imp.returncode == 0, imp.stderr
        return images / machine
    zstd = subprocess.Popen(["zstd", "-dc", str(tarball)], stdout=subprocess.PIPE)
    imp = subprocess.run(["/lib/systemd/systemd-import", "tar", f"--image-root={images}", "-",
                          machine], stdin=zstd.stdout, capture_output=True, text=True)
    zstd.wait()
    assert imp.returncode == 0 and zstd.returncode == 0, imp.stderr
    return images / machine


def tarball_of(out: Path) -> Path:
    """The tarball a build published in out/NAME: its name follows the compression, which
    follows the recipe's target systemd (gzip below 258, zstd from it)."""
    manifest = json.loads((out / "manifest.json").read_text())
    return out / manifest["artifacts"]["tarball"]["file"]


@contextmanager
def tar_stream(tarball: Path) -> Iterator[tarfile.TarFile]:
    """The tarball as a streamed TarFile, whatever its compression (the project's reader)."""
    with tarread.open_stream(tarball) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        yield tar


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bootstrap cache for the whole session: recipes on the same base bootstrap once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def env(tmp_path: Path, shared_cache: Path) -> Iterator[Env]:
    e = Env(tmp_path, tmp_path / "out", tmp_path / "work", shared_cache)
    yield e


@pytest.fixture(scope="session")
def _sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sentinels.Sentinels]:
    s = sentinels.setup(tmp_path_factory.mktemp("decoys"))
    os.environ["NSPAWNBUILD_DECOY_TOKEN"] = s.token  # as a CI secret would be
    yield s
    os.environ.pop("NSPAWNBUILD_DECOY_TOKEN", None)
    sentinels.teardown(s)


@pytest.fixture
def host_sentinels(_sentinels: sentinels.Sentinels) -> Iterator[sentinels.Sentinels]:
    """Decoy host files, a decoy loop device and a decoy cgroup release_agent, checked unchanged
    after the test (see tests/sentinels.py)."""
    _sentinels.state = _sentinels.snapshot()
    yield _sentinels
    changed = _sentinels.check()
    assert not changed, f"a hostile case changed host sentinels: {changed}"


def assert_token_absent(s: sentinels.Sentinels, *paths: Path) -> None:
    """No artifact (decompressed when it is a tarball) contains the decoy token."""
    for p in paths:
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            if ".tar" in f.suffixes:
                with tarread.open_stream(f) as raw:
                    data = raw.read()
            else:
                data = f.read_bytes()
            assert s.token.encode() not in data, f"{f} carries the decoy token"


unpack = reproduce.unpack  # the image tree of a built tarball
