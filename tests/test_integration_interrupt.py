"""Killed, interrupted and concurrent builds never hurt the host or the published artifacts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_integration_build import write_recipe

from conftest import BIN, ROOT, Env, artifact_digests

pytestmark = pytest.mark.integration


def start(env: Env, recipe: Path, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "nspawnbuild"), "build", str(recipe)], cwd=env.tmp,
                            env=env.environ(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[str],
             timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"build ended before {what}: {out}{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def mounts_under(*paths: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        found += [point for p in paths if point.startswith(str(p))]
    return found


def processes_under(*paths: Path) -> list[str]:
    """Processes whose command line names one of ``paths`` (a stray bootstrapper or nspawn)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found += [f"{proc.name}: {cmd}" for p in paths if str(p) in cmd]
    return found


def assert_host_clean(env: Env) -> None:
    # PDEATHSIG and --kill-child act at once; a process in uninterruptible I/O exits when its
    # I/O ends: one CI run on the loaded 2-core machine saw a killed bootstrap's apt-helper still
    # there after 5 s (three reruns, one under CPU and disk load: gone within 5 s)
    deadline = time.monotonic() + 10
    while processes_under(env.tmp, env.cache) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert processes_under(env.tmp, env.cache) == []
    assert mounts_under(env.tmp, env.cache) == []


def sums_ok(out: Path) -> bool:
    return subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out,
                          capture_output=True).returncode == 0


SLOW_STEP = '[[post]]\nrun = "touch /etc/step-started; sleep 300"\n'


def test_sigkill_during_bootstrap_leaves_nothing_behind(env: Env) -> None:
    # a cache of its own, so that this build really bootstraps (a package set of its own is
    # only another package layer on the session's cached base)
    env = Env(env.tmp, env.out, env.work, env.tmp / "own-cache")
    recipe = write_recipe(env.tmp / "killboot.toml", 'packages = ["hello"]\n')
    proc = start(env, recipe)
    boot = env.cache / "bootstrap"
    wait_for("the bootstrap to install packages",
             lambda: any(boot.glob(".*.tmp-*/root/var/lib/dpkg/status")), proc)
    proc.kill()
    proc.wait()
    assert_host_clean(env)
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not list(boot.glob(".*.tmp-*")), "the killed build's half bootstrap is still there"
    assert not list((env.cache / "layers").glob(".*.tmp-*"))
    assert not list(env.work.glob("recipes/*/.layer-build"))


def test_sigkill_during_a_post_step_leaves_nothing_behind(env: Env) -> None:
    recipe = write_recipe(env.tmp / "killstep.toml", SLOW_STEP)
    proc = start(env, recipe)
    # the tree is an overlay in the build's own mount namespace: look at its upper layer
    marker = env.work / "recipes" / "killstep" / "layer.new" / "upper" / "etc" / "step-started"
    wait_for("the post-step to run", marker.exists, proc)
    proc.kill()
    proc.wait()
    assert_host_clean(env)
    write_recipe(recipe, '[[post]]\nrun = "true"\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr


def test_sigkill_during_pack_keeps_the_published_artifacts(env: Env) -> None:
    recipe = write_recipe(env.tmp / "killpack.toml", '[[post]]\nrun = "echo 1 > /etc/v"\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    out = env.out / "killpack"
    before = artifact_digests(out)

    write_recipe(recipe, '[[post]]\nrun = "echo 2 > /etc/v"\n')
    proc = start(env, recipe)
    stage = env.work / "recipes" / "killpack" / "stage"
    wait_for("packing", lambda: any(stage.glob(".killpack.tar.*.tmp-*")), proc)
    proc.kill()
    proc.wait()
    assert_host_clean(env)
    assert artifact_digests(out) == before and sums_ok(out)
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    assert artifact_digests(out) != before and sums_ok(out)
    assert not list(stage.glob(".*.tmp-*"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_stops_children_promptly_and_keeps_artifacts(env: Env, signum: int) -> None:
    recipe = write_recipe(env.tmp / "interrupted.toml", '[[post]]\nrun = "true"\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    out = env.out / "interrupted"
    before = artifact_digests(out)

    write_recipe(recipe, SLOW_STEP)
    proc = start(env, recipe)
    marker = env.work / "recipes" / "interrupted" / "layer.new" / "upper" / "etc" / "step-started"
    wait_for("the post-step to run", marker.exists, proc)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 20
    assert proc.returncode == 128 + signum
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: interrupted by {signal.Signals(signum).name} during rootfs; "
        "the previous artifacts are unchanged")
    assert_host_clean(env)
    assert artifact_digests(out) == before and sums_ok(out)
    assert not (env.work / "recipes" / "interrupted" / "layer.new").exists()


def test_a_second_build_of_the_same_recipe_is_refused(env: Env) -> None:
    recipe = write_recipe(env.tmp / "busy.toml", SLOW_STEP)
    first = start(env, recipe)
    marker = env.work / "recipes" / "busy" / "layer.new" / "upper" / "etc" / "step-started"
    try:
        wait_for("the post-step to run", marker.exists, first)
        second = env.nspawnbuild("build", str(recipe))
        assert second.returncode == 1
        assert f"recipe busy is being built by process {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert_host_clean(env)


def running(pattern: str) -> list[str]:
    """Processes whose command line contains ``pattern`` (something unique to the test)."""
    return [line for line in processes_under(Path(pattern))]


def assert_gone_within(seconds: float, pattern: str) -> None:
    deadline = time.monotonic() + seconds
    while running(pattern) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running(pattern) == [], f"still running {seconds} s after the build died"


@pytest.fixture(scope="module")
def hello_plugin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The third-party test plugin, whose [features.hello] run = "..." runs inside the image."""
    target = tmp_path_factory.mktemp("site")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--target", str(target),
                          str(ROOT / "tests" / "fixtures" / "nspawnbuild-hello")],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    return {"PYTHONPATH": str(target)}


def test_sigkill_during_a_feature_command_leaves_nothing_behind(env: Env,
                                                                hello_plugin: dict[str, str]) -> None:
    marker = f"sleep {400 + os.getpid() % 97}"
    recipe = write_recipe(env.tmp / "killfeature.toml",
                          f'[features.hello]\ngreeting = "hi"\nrun = "{marker}"\n')
    proc = start(env, recipe, **hello_plugin)
    wait_for("the feature command to run", lambda: bool(running(marker)), proc)
    proc.kill()
    proc.wait()
    assert_gone_within(5, marker)
    assert_host_clean(env)
    write_recipe(recipe, '[features.hello]\ngreeting = "hi"\n')
    r = env.nspawnbuild("build", str(recipe), **hello_plugin)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sigkill_during_sources_extraction_leaves_nothing_behind(env: Env) -> None:
    """The archive is unpacked by the image's tar inside the container: kill the build then."""
    data = env.tmp / "src" / "blob"
    data.parent.mkdir()
    with open(data, "wb") as fh:  # incompressible, so that unpacking takes a while
        for _ in range(384):
            fh.write(os.urandom(1 << 20))
    archive = env.tmp / "big.tar.gz"
    subprocess.run(["tar", "-C", str(data.parent), "-cf", str(archive), "-I", "gzip -1", "blob"],
                   check=True)
    digest = subprocess.run(["sha256sum", str(archive)], capture_output=True, text=True,
                            check=True).stdout.split()[0]
    recipe = write_recipe(env.tmp / "killsource.toml",
                          f'[[sources]]\nurl = "file://{archive}"\nsha256 = "{digest}"\n'
                          'dest = "/opt/big"\nextract = true\n')
    proc = start(env, recipe)
    wait_for("the archive to be unpacked", lambda: bool(running("/run/nspawnbuild-source")), proc,
             timeout=600)
    proc.kill()
    proc.wait()
    assert_gone_within(5, "/run/nspawnbuild-source")
    assert_host_clean(env)
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
