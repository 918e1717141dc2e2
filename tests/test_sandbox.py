"""The sandbox's host-side pieces, on the real kernel: UID ranges, step cgroups, shared locks."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from nspawnbuild import sandbox
from nspawnbuild.errors import BuildError
from nspawnbuild.imagefs import MAX_READ, read_text_in_root
from nspawnbuild.lock import hold_shared, release_shared


def test_uid_ranges_are_distinct_and_outside_nspawn_and_systemd_ranges() -> None:
    a, fa = sandbox.pick_uid_base("web")
    b, fb = sandbox.pick_uid_base("web")  # the same name in the same process: another range
    try:
        assert a != b
        for base in (a, b):
            assert base >= 0x70000000 and base % 0x10000 == 0
            assert base + 0x10000 <= 0x7FFE0000  # below systemd's foreign range
    finally:
        os.close(fa)
        os.close(fb)


def _unlocked(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_shared_lock_is_held_until_its_last_holder_releases_it(tmp_path: Path) -> None:
    lock = tmp_path / "entry.lock"
    hold_shared(lock, what="entry")
    hold_shared(lock, what="entry")  # a second recipe of the same build (-j)
    release_shared(lock)
    assert not _unlocked(lock), "one holder's release dropped the other's lock"
    release_shared(lock)
    assert _unlocked(lock)


@pytest.mark.skipif(not Path("/sys/fs/cgroup/pids").is_dir(), reason="needs a v1 pids hierarchy")
def test_stale_cgroups_are_matched_by_exact_recipe_name() -> None:
    live = subprocess.Popen(["sleep", "30"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    own = Path("/sys/fs/cgroup/pids") / Path("/proc/self/cgroup").read_text().split(
        ":pids:")[1].splitlines()[0].strip("/")
    base = own / "nspawnbuild"
    other = base / f"nsbtest-2024-{live.pid}-1"  # a live step of recipe "nsbtest-2024"
    stale = base / f"nsbtest-{dead.pid}-1"  # left by a killed build of "nsbtest"
    try:
        for d in (other, stale):
            d.mkdir(parents=True)
        removed = sandbox.reap_stale_cgroups("nsbtest")
        assert removed == [str(stale)] and other.is_dir() and not stale.exists()
        assert live.poll() is None
    finally:
        live.kill()
        for d in (other, stale):
            if d.exists():
                d.rmdir()


def test_image_files_read_into_memory_are_bounded(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    with open(status, "wb") as fh:
        fh.truncate(MAX_READ + 1)  # sparse: costs no disk
    with pytest.raises(BuildError, match="more than the 256 MiB"):
        read_text_in_root(tmp_path, "/var/lib/dpkg/status")
