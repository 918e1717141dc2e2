"""Hostile post-steps, for real: escapes tried inside the build's sandbox, against decoys.

Each case is a recipe step written the way an attacker would write it. The escapes aim at the
decoys of tests/sentinels.py (a decoy loop device, a decoy cgroup-v1 hierarchy with its own
``release_agent``, decoy files), never at this machine's real devices; the sentinels are
checked unchanged after every case. A probe that succeeds where it must not writes ESCAPED
into the image, and the tests read the image's tarball.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sentinels
from conftest import ROOT, Env, tarball_of, unpack

pytestmark = pytest.mark.integration

BASE = ROOT / "recipes" / "debian-base.toml"


def recipe(path: Path, body: str, name: str | None = None) -> Path:
    path.write_text(f'extends = "{BASE}"\n' + (f'name = "{name}"\n' if name else "") + body)
    return path


def step(run: str, name: str = "probe") -> str:
    return f'\n[[post]]\nname = "{name}"\nrun = """\n{run}\n"""\n'


def tarball(env: Env, name: str) -> Path:
    return tarball_of(env.out / name)


def sha(path: Path) -> str:
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True,
                          check=True).stdout.split()[0]


def leftover_mounts(path: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(path))]


def probes(s: sentinels.Sentinels) -> str:
    """Escape attempts; each writes its outcome under /probe in the image."""
    major, minor = s.loop_dev or (7, 0)
    return step(f"""
mkdir -p /probe
# 1. the cgroup-v1 release_agent escape, on the decoy hierarchy
mkdir -p /mnt/cg
if mount -t cgroup -o none,name=nbdecoy nbdecoy /mnt/cg 2>/probe/cgroup.err; then
  echo "/probe/evil" > /mnt/cg/release_agent && echo 1 > /mnt/cg/notify_on_release
  echo ESCAPED > /probe/cgroup
else echo refused > /probe/cgroup; fi
# 2. a host block device: the decoy loop device's numbers
if mknod /probe/disk b {major} {minor} 2>/probe/mknod.err; then
  echo ESCAPED > /probe/mknod; echo overwritten > /probe/disk || true
else echo refused > /probe/mknod; fi
# 3. host devices and files that are not bound in
for d in /dev/loop0 /dev/loop-control /dev/vda /dev/sda /dev/mem /dev/kmsg {s.loop or '/dev/loop0'}; do
  test -e "$d" && echo "$d" >> /probe/devices
done
test -e /probe/devices || echo none > /probe/devices
test -e {s.secret} && echo ESCAPED > /probe/secret || echo absent > /probe/secret
# 4. what the step is: capabilities, user namespace, cgroups, processes
grep CapEff /proc/self/status | cut -f2 > /probe/capeff
cat /proc/self/uid_map > /probe/uid_map
cat /proc/self/cgroup > /probe/cgroup_paths
ls /proc | grep -c '^[0-9]' > /probe/pids
# 5. host kernel settings
( echo '|/probe/evil' > /proc/sys/kernel/core_pattern ) 2>/dev/null \\
  && echo ESCAPED > /probe/sysctl || echo refused > /probe/sysctl
( echo b > /proc/sysrq-trigger ) 2>/dev/null && echo ESCAPED > /probe/sysrq || echo refused > /probe/sysrq
# 6. the environment: nothing of the build host's
env > /probe/env
# 7. ownership as the image expects
touch /probe/owned && chown 42:42 /probe/owned
cp /bin/true /probe/suid && chmod 4755 /probe/suid
""", "escapes")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path,
            _sentinels: sentinels.Sentinels) -> tuple[Env, Path]:
    """One image built with every probe; its tree unpacked."""
    tmp = tmp_path_factory.mktemp("hostile")
    env = Env(tmp, tmp / "out", tmp / "work", shared_cache)
    _sentinels.state = _sentinels.snapshot()
    r = env.nspawnbuild("build", str(recipe(tmp / "escapes.toml", probes(_sentinels))))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not _sentinels.check()
    return env, unpack(tarball(env, "escapes"), tmp / "tree")


def probe(hostile: tuple[Env, Path], name: str) -> str:
    return (hostile[1] / "probe" / name).read_text().strip()


def test_cgroup_v1_release_agent_escape_is_refused(hostile: tuple[Env, Path],
                                                  host_sentinels: sentinels.Sentinels) -> None:
    assert host_sentinels.cgroup is not None, "the decoy hierarchy must exist for this case"
    assert probe(hostile, "cgroup") == "refused"
    assert (host_sentinels.cgroup / "release_agent").read_text().strip() == ""


def test_host_block_device_cannot_be_made(hostile: tuple[Env, Path],
                                         host_sentinels: sentinels.Sentinels) -> None:
    assert host_sentinels.loop_dev is not None, "the decoy loop device must exist for this case"
    assert probe(hostile, "mknod") == "refused"
    assert "Operation not permitted" in probe(hostile, "mknod.err")


def test_no_host_device_or_file_is_visible(hostile: tuple[Env, Path],
                                          host_sentinels: sentinels.Sentinels) -> None:
    assert probe(hostile, "devices") == "none"
    assert probe(hostile, "secret") == "absent"


def test_step_has_no_sys_admin_mknod_or_net_raw(hostile: tuple[Env, Path],
                                               host_sentinels: sentinels.Sentinels) -> None:
    caps = int(probe(hostile, "capeff"), 16)
    for bit, name in ((21, "CAP_SYS_ADMIN"), (27, "CAP_MKNOD"), (13, "CAP_NET_RAW")):
        assert not caps & (1 << bit), f"{name} is in the step's effective set"
    assert caps & (1 << 0), "CAP_CHOWN (inside the namespace) is kept for package managers"


def test_step_runs_in_a_user_namespace_of_its_own_range(hostile: tuple[Env, Path],
                                                       host_sentinels: sentinels.Sentinels) -> None:
    inside, outside, count = (int(x) for x in probe(hostile, "uid_map").split())
    assert (inside, count) == (0, 65536)
    assert outside >= 0x70000000, "uid 0 in the step must not be host uid 0"


def test_step_sees_no_host_cgroups_or_processes(hostile: tuple[Env, Path],
                                               host_sentinels: sentinels.Sentinels) -> None:
    paths = [line.split(":", 2)[2] for line in probe(hostile, "cgroup_paths").splitlines()]
    assert paths and all(p == "/" for p in paths), paths  # a cgroup namespace
    assert int(probe(hostile, "pids")) < 10  # a PID namespace: only the step's own


def test_host_kernel_settings_cannot_be_written(hostile: tuple[Env, Path],
                                               host_sentinels: sentinels.Sentinels) -> None:
    assert probe(hostile, "sysctl") == "refused" and probe(hostile, "sysrq") == "refused"
    assert "/probe/evil" not in Path("/proc/sys/kernel/core_pattern").read_text()


def test_step_environment_carries_no_host_secret(hostile: tuple[Env, Path],
                                                host_sentinels: sentinels.Sentinels) -> None:
    env = probe(hostile, "env")
    assert host_sentinels.token not in env and "NSPAWNBUILD_DECOY_TOKEN" not in env
    assert host_sentinels.token.encode() not in tarball(hostile[0], "escapes").read_bytes()


def test_files_a_step_makes_keep_the_image_owners(hostile: tuple[Env, Path],
                                                  host_sentinels: sentinels.Sentinels) -> None:
    owned, suid = (hostile[1] / "probe" / n for n in ("owned", "suid"))
    assert (owned.stat().st_uid, owned.stat().st_gid) == (42, 42)
    assert suid.stat().st_uid == 0 and suid.stat().st_mode & 0o7777 == 0o4755
    listing = subprocess.run(["tar", "-tvf", str(tarball(hostile[0], "escapes")), "--numeric-owner",
                              "./probe/owned", "./etc/passwd"], capture_output=True, text=True)
    assert " 42/42 " in listing.stdout and " 0/0 " in listing.stdout, listing.stdout


def test_in_place_write_into_a_cached_file_never_reaches_the_cache(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """The old hardlink farm shipped such a write to the next recipe on the same base."""
    writer = recipe(env.tmp / "writer.toml", step(
        "printf 'EVIL' | dd of=/usr/bin/dpkg-query bs=1 seek=100 conv=notrunc status=none\n"
        "touch -d @0 /usr/bin/dpkg-query"))
    r = env.nspawnbuild("build", str(writer))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "damaged" not in r.stderr
    clean = recipe(env.tmp / "clean.toml", "")
    r = env.nspawnbuild("build", str(clean))
    assert r.returncode == 0 and "damaged" not in r.stderr, r.stderr
    a = unpack(tarball(env, "writer"), env.tmp / "a") / "usr/bin/dpkg-query"
    b = unpack(tarball(env, "clean"), env.tmp / "b") / "usr/bin/dpkg-query"
    assert b"EVIL" in a.read_bytes() and b"EVIL" not in b.read_bytes()
    entries = [p for p in (env.cache / "bootstrap").iterdir() if p.is_dir() and
               not p.name.startswith(".")]
    assert all(b"EVIL" not in (e / "root/usr/bin/dpkg-query").read_bytes() for e in entries)


def test_concurrent_builds_on_one_base_equal_their_solo_builds(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """Two recipes on one base at the same time, one writing in place into shared files."""
    bodies = {"inplace": step("for f in /usr/bin/dpkg /etc/debian_version; do\n"
                              "  printf X | dd of=$f bs=1 seek=1 conv=notrunc status=none\n"
                              "done\nsleep 2"),
              "reader": step("sleep 2\ncat /usr/bin/dpkg /etc/debian_version | sha256sum "
                             "> /etc/seen")}
    solo = {}
    for name, body in bodies.items():
        path = recipe(env.tmp / f"{name}.toml", body)
        r = env.nspawnbuild("build", str(path), NSPAWNBUILD_OUT=str(env.tmp / "solo"),
                            NSPAWNBUILD_WORK=str(env.tmp / "solo-work"))
        assert r.returncode == 0, r.stdout + r.stderr
        solo[name] = sha(tarball_of(env.tmp / "solo" / name))
    procs = [subprocess.Popen([str(ROOT / ".venv/bin/nspawnbuild"), "build", str(env.tmp / f"{n}.toml")],
                              cwd=env.tmp, env=env.environ(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for n in bodies]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    for name in bodies:
        assert sha(tarball(env, name)) == solo[name], f"{name} differs from its solo build"


def private_cache(env: Env, tmp_path: Path) -> Env:
    """``env`` with a copy of the session's bootstrap cache (a bootstrap is half a minute)."""
    assert env.nspawnbuild("build", str(recipe(env.tmp / "warm.toml", ""))).returncode == 0
    subprocess.run(["cp", "-a", str(env.cache), str(tmp_path / "cache")], check=True)
    return Env(env.tmp, env.out, env.work, tmp_path / "cache")


def _cache_entry(env: Env) -> Path:
    entries = [p for p in (env.cache / "bootstrap").iterdir() if p.is_dir() and
               not p.name.startswith(".")]
    assert len(entries) >= 1
    return max(entries, key=lambda p: (p / "info.json").stat().st_mtime)


def test_damaged_cache_entry_is_dropped_and_rebuilt(env: Env, tmp_path: Path,
                                                    host_sentinels: sentinels.Sentinels) -> None:
    own = private_cache(env, tmp_path)  # we break it
    path = recipe(env.tmp / "victim.toml", "")
    assert own.nspawnbuild("build", str(path)).returncode == 0
    good = sha(tarball(own, "victim"))
    dpkg = _cache_entry(own) / "root/usr/bin/dpkg"
    size = dpkg.stat().st_size
    os.truncate(dpkg, size // 2)
    r = own.nspawnbuild("build", str(recipe(env.tmp / "victim.toml", step("true"))))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is damaged (usr/bin/dpkg: changed since it was cached)" in r.stderr
    assert (_cache_entry(own) / "root/usr/bin/dpkg").stat().st_size == size
    tree = unpack(tarball(own, "victim"), env.tmp / "t")
    assert (tree / "usr/bin/dpkg").stat().st_size == size
    assert good  # the first image was fine too


def test_prune_during_a_build_waits_for_it(env: Env, tmp_path: Path,
                                          host_sentinels: sentinels.Sentinels) -> None:
    own = private_cache(env, tmp_path)
    path = recipe(env.tmp / "slow.toml", "")
    assert own.nspawnbuild("build", str(path)).returncode == 0
    recipe(path, step("sleep 6"))
    build = subprocess.Popen([str(ROOT / ".venv/bin/nspawnbuild"), "build", str(path)], cwd=env.tmp,
                             env=own.environ(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not _running("sleep 6"):
        time.sleep(0.2)
    assert _running("sleep 6"), "the post-step did not start"
    prune = own.nspawnbuild("cache", "prune", "--max-size", "0")
    out = build.communicate(timeout=300)[0]
    assert build.returncode == 0, out
    assert "PythonAction Error" not in out + prune.stdout + prune.stderr
    assert prune.returncode == 0, prune.stdout + prune.stderr
    assert not [p for p in (own.cache / "bootstrap").iterdir() if not p.name.endswith(".lock")]


def _running(pattern: str) -> list[int]:
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def test_sigkill_during_a_step_leaves_no_process_and_no_mount(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    marker = f"sleep {317 + os.getpid() % 100}"
    path = recipe(env.tmp / "killed.toml", step(marker))
    build = subprocess.Popen([str(ROOT / ".venv/bin/nspawnbuild"), "build", str(path)], cwd=env.tmp,
                             env=env.environ(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not _running(marker):
        time.sleep(0.2)
    assert _running(marker), "the post-step did not start"
    os.killpg(build.pid, signal.SIGKILL)
    build.wait()
    gone = time.time() + 5
    while time.time() < gone and _running(marker):
        time.sleep(0.1)
    assert not _running(marker), "the step outlived its build"
    assert leftover_mounts(env.tmp) == []
    recipe(path, step("true"))
    r = env.nspawnbuild("build", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cgroups a killed earlier build of killed left" in (env.out / "killed" / "build.log").read_text()
    assert not list(Path("/sys/fs/cgroup").glob("*/nspawnbuild/killed-*"))


def test_kept_failed_tree_is_a_copy_not_the_cache(env: Env,
                                                  host_sentinels: sentinels.Sentinels) -> None:
    path = recipe(env.tmp / "broken.toml", step(
        "printf BROKEN | dd of=/usr/bin/dpkg-query bs=1 seek=50 conv=notrunc status=none\nexit 4"))
    r = env.nspawnbuild("build", "--keep-rootfs", str(path))
    assert r.returncode == 1 and "exit code 4" in r.stderr
    kept = env.work / "recipes" / "broken" / "rootfs.failed"
    assert b"BROKEN" in (kept / "usr/bin/dpkg-query").read_bytes()
    assert all(b"BROKEN" not in (e / "root/usr/bin/dpkg-query").read_bytes()
               for e in (env.cache / "bootstrap").iterdir() if (e / "root").is_dir())
    assert (kept / "usr/bin/dpkg-query").stat().st_nlink == 1
    json.dumps(r.stderr)  # the message is plain text


def test_fork_bomb_is_held_by_the_pids_limit(env: Env, host_sentinels: sentinels.Sentinels) -> None:
    path = recipe(env.tmp / "bomb.toml", step(
        "i=0; while [ $i -lt 6000 ]; do sleep 30 & i=$((i+1)); done; echo spawned $i", "bomb"))
    r = env.nspawnbuild("build", str(path))
    assert r.returncode == 1 and "post-step 1 (bomb) failed" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    time.sleep(1)
    assert len(_running("sleep 30")) < 5, "step processes outlived the step"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs of the test's own (a full disk without filling the real one)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24M", "nsbsmall", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], check=False)


@pytest.mark.parametrize("where", ["work", "out-read-only"])
def test_full_disk_or_read_only_out_is_one_clear_line(env: Env, small_fs: Path, where: str,
                                                      host_sentinels: sentinels.Sentinels) -> None:
    path = recipe(env.tmp / "nospace.toml", "")
    if where == "work":  # the 56 MiB tarball is written in the work dir: ENOSPC while packing
        extra = {"NSPAWNBUILD_WORK": str(small_fs / "work")}
        expected = "pack failed: No space left on device"
    else:
        (small_fs / "out").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
        extra = {"NSPAWNBUILD_OUT": str(small_fs / "out")}
        expected = "Read-only file system"
    r = env.nspawnbuild("build", str(path), **extra)
    assert r.returncode == 1, r.stdout + r.stderr
    assert expected in r.stderr and "build elsewhere with --out/--work-dir" in r.stderr, r.stderr
    assert "PythonAction Error" not in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert leftover_mounts(env.tmp / "work") == []
