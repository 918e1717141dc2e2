"""What a person sees while building: live stage lines on a terminal, plain lines in a pipe,
the full log in out/NAME/build.log, and --keep-rootfs for a look at a failed tree."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from conftest import BIN, ROOT, Env

pytestmark = pytest.mark.integration

BASE = ROOT / "recipes" / "debian-base.toml"
FAILING = f'''extends = "{BASE}"
name = "failing"
[[post]]
name = "break it"
run = """
echo marker-from-step > /etc/left-by-step
echo about to fail
ls /no-such-dir
"""
'''


def in_pty(env: Env, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run nspawnbuild on a pseudo-terminal (util-linux ``script``), as a person would."""
    command = shlex.join([str(BIN / "nspawnbuild"), *args])
    return subprocess.run(["script", "-qec", command, "/dev/null"], cwd=env.tmp,
                          env=env.environ(TERM="xterm-256color", COLUMNS="200", **extra),
                          capture_output=True, text=True, timeout=1200)


def test_terminal_gets_a_live_coloured_display_and_a_pipe_gets_plain_lines(env: Env) -> None:
    tty = in_pty(env, "build", "debian-base")
    assert tty.returncode == 0, tty.stdout
    assert "\x1b[" in tty.stdout  # colours and cursor movement
    assert "✓" in tty.stdout and "debian-base" in tty.stdout
    assert "  rootfs:debian-base ..." not in tty.stdout  # the plain format is for pipes
    assert "\x1b[?25h" in tty.stdout  # the cursor is shown again at the end

    env.nspawnbuild("clean", "debian-base")
    pipe = env.nspawnbuild("build", "debian-base")
    assert pipe.returncode == 0, pipe.stderr
    assert "\x1b" not in pipe.stdout + pipe.stderr
    assert "  rootfs:debian-base ..." in pipe.stdout
    assert "sha256" not in pipe.stderr
    # the summary: every artifact with its full sha256, then how to install it
    sums = dict(reversed(line.split("  ")) for line in
                (env.out / "debian-base" / "SHA256SUMS").read_text().splitlines())
    for name, digest in sums.items():
        assert any(name in line and digest in line for line in pipe.stdout.splitlines()), name
    # gzip (the default for trixie's 257): machinectl reads it itself, and every host pulls it
    assert "/debian-base.tar.gz debian-base" in pipe.stdout and "machinectl import-tar" in pipe.stdout
    assert "every systemd host can pull it" in pipe.stdout

    # NO_COLOR is honoured on a terminal; --quiet prints nothing there either
    env.nspawnbuild("clean", "debian-base")
    no_color = in_pty(env, "build", "debian-base", NO_COLOR="1")
    assert no_color.returncode == 0 and "✓" in no_color.stdout
    assert "\x1b[32m" not in no_color.stdout and "\x1b[36m" not in no_color.stdout
    assert "\x1b[32m" in tty.stdout
    env.nspawnbuild("clean", "debian-base")
    quiet = in_pty(env, "build", "debian-base", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout.strip() == ""


def test_build_log_holds_every_stage_and_is_not_an_artifact(env: Env) -> None:
    r = env.nspawnbuild("build", "debian-base")
    assert r.returncode == 0, r.stderr
    out = env.out / "debian-base"
    log = (out / "build.log").read_text()
    for stage in ("resolve", "bootstrap", "rootfs", "pack", "configure", "manifest"):
        assert f"== {stage}: " in log, stage
    assert "build.log" not in (out / "SHA256SUMS").read_text()
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True)
    assert check.returncode == 0
    # nothing to do: the log of the build that did the work stays
    again = env.nspawnbuild("build", "debian-base")
    assert again.returncode == 0 and (out / "build.log").read_text() == log


def test_failed_step_log_and_keep_rootfs(env: Env) -> None:
    recipe = env.tmp / "failing.toml"
    recipe.write_text(FAILING)
    work = env.work / "recipes" / "failing"

    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 1
    assert "post-step 1 (break it) failed" in r.stderr and "about to fail" in r.stderr
    log_path = env.out / "failing" / "build.log"
    assert f"build log: {log_path}" in r.stderr
    log = log_path.read_text()
    assert "== rootfs: failed" in log and "about to fail" in log and "No such file" in log
    assert sorted(p.name for p in (env.out / "failing").iterdir()) == ["build.log"]
    assert not (work / "rootfs.failed").exists() and not (work / "layer.new").exists()

    kept = env.nspawnbuild("build", "--keep-rootfs", str(recipe))
    assert kept.returncode == 1
    tree = work / "rootfs.failed"
    assert f"is kept (--keep-rootfs): {tree}" in kept.stderr
    assert (tree / "etc" / "left-by-step").read_text() == "marker-from-step\n"
    assert not (work / "layer.new").exists()
    # the command the message suggests works, and does not change the kept tree
    suggested = next(line.split(": ", 1)[1] for line in kept.stderr.splitlines()
                     if "look inside without changing it" in line)
    look = subprocess.run([*shlex.split(suggested), "sh", "-c",
                           "cat /etc/left-by-step; echo changed > /etc/left-by-step"],
                          capture_output=True, text=True, timeout=120)
    assert look.returncode == 0 and "marker-from-step" in look.stdout, look.stderr
    assert (tree / "etc" / "left-by-step").read_text() == "marker-from-step\n"

    recipe.write_text(FAILING.replace("ls /no-such-dir", "true"))  # fixed: the kept tree goes
    assert env.nspawnbuild("build", str(recipe)).returncode == 0
    assert not tree.exists()
