"""Booting a built image in the tests: systemd-nspawn -b on this host, where systemd is not
PID 1 (see test_integration_boot's ``cgroup`` and ``netns`` fixtures): in the test's own
cgroup and network namespace, on a pty from script(1), its console written to a file."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from pathlib import Path


def screen(console: Path) -> str:
    """The console's text so far without its colours (systemd colours unit names)."""
    text = console.read_text(errors="replace") if console.exists() else ""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def start(tree: Path, machine: str, netns: str, cgroup: str, console: Path) -> subprocess.Popen[bytes]:
    """``systemd-nspawn -b`` of ``tree``; its trusted .nspawn, if any, is the caller's to put in
    /run/systemd/nspawn. nsenter, not ``ip netns exec`` (which remounts /sys)."""
    command = (f"for f in {cgroup}; do echo $$ > $f; done; exec systemd-nspawn -b "
               f"-D {tree} -M {machine} --register=no --keep-unit")
    return subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{netns}", "script", "-qfec", f"sh -c '{command}'",
         str(console)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def nspawn_below(pid: int) -> list[int]:
    """The systemd-nspawn processes anywhere below ``pid``. How many shells stand between
    script(1) and nspawn depends on the caller's SHELL and on whether that shell execs its
    last command (CI found one more level than this machine has), so the tree is walked."""
    found, todo = [], children(pid)
    while todo:
        p = todo.pop()
        try:
            comm = Path(f"/proc/{p}/comm").read_text().strip()
        except FileNotFoundError:
            continue
        if comm == "systemd-nspawn":
            found.append(p)  # its own children are the container: not searched
        else:
            todo.extend(children(p))
    return found


def inside(boot: subprocess.Popen[bytes], *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` run in the booted container (all its namespaces), found below ``boot``."""
    nspawn = nspawn_below(boot.pid)
    assert len(nspawn) == 1, nspawn
    init = children(nspawn[0])
    assert len(init) == 1, init
    return subprocess.run(["nsenter", "-t", str(init[0]), "-a", *argv],
                          capture_output=True, text=True, timeout=60)


def wait_booted(boot: subprocess.Popen[bytes], console: Path,
                target: str = "multi-user.target", timeout: float = 120) -> str:
    """The console once the container's manager has reached ``target``.

    The console alone is not enough: the "Reached target" line can be lost when the getty
    on that console hangs it up (vhangup) just as systemd writes it; CI saw a boot whose
    console ended at the login prompt while the target had been reached. So the manager is
    asked as well; on a timeout the failure shows its pending jobs and the console's tail."""
    deadline = time.monotonic() + timeout
    while f"Reached target {target}" not in screen(console):
        assert boot.poll() is None, screen(console)[-3000:]
        if len(nspawn_below(boot.pid)) == 1:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                if inside(boot, "systemctl", "is-active", target).stdout.strip() == "active":
                    break
        if time.monotonic() >= deadline:
            jobs = ""
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                jobs = inside(boot, "systemctl", "list-jobs", "--no-pager").stdout
            raise AssertionError(f"{target} not reached in {timeout} s; pending jobs:\n{jobs}\n"
                                 f"console:\n{screen(console)[-3000:]}")
        time.sleep(1)
    return screen(console)


def stop(boot: subprocess.Popen[bytes], timeout: float) -> None:
    """End a boot that is still running: SIGTERM (nspawn's poweroff request), then SIGKILL."""
    if boot.poll() is None:
        boot.terminate()
        try:
            boot.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            boot.kill()
