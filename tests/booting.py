"""Booting a built image in the tests: systemd-nspawn -b on this host, where systemd is not
PID 1 (see test_integration_boot's ``cgroup`` and ``netns`` fixtures): in the test's own
cgroup and network namespace, on a pty from script(1), its console written to a file."""

from __future__ import annotations

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


def wait_for(boot: subprocess.Popen[bytes], console: Path, text: str,
             timeout: float = 120) -> str:
    """The console once ``text`` is on it; fails with its tail when the boot ends or times out."""
    deadline = time.monotonic() + timeout
    while text not in screen(console):
        assert boot.poll() is None, screen(console)[-3000:]
        assert time.monotonic() < deadline, screen(console)[-3000:]
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
