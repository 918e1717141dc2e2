"""The build host: its programs (found, asked for a version, or run for a quick job), its name
and its resolver.

Kept apart from everything that builds, so that any module can ask (a distro for its
bootstrapper, the sandbox for nspawn, the scrubber and the auditor for host state to remove
or find) without importing the modules that do the work. Build steps whose output the user
reads (bootstrappers, steps in the image) run through ``StepLog.run``; the short host jobs
around them (mount, umount, rm, cp) run through :func:`run`, which turns a failure into one
:class:`BuildError` line.
"""

from __future__ import annotations

import platform
import re
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from . import buildenv
from .errors import BuildError, HostToolMissing


def require_tool(tool: str, package: str, why: str) -> str:
    """Return the path of ``tool`` or raise a :class:`HostToolMissing` naming its package."""
    path = shutil.which(tool)
    if path is None:
        raise HostToolMissing(tool, package, why)
    return path


def run(argv: Sequence[str], what: str) -> str:
    """Run a short host job (``umount``, ``rm -rf``); its stdout, or a BuildError that says
    ``could not WHAT`` with the program's own message."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BuildError(f"could not {what}: {argv[0]} is not installed") from None
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip() or f"{argv[0]} exited with {done.returncode}"
        raise BuildError(f"could not {what}: {said}")
    return done.stdout


def succeeds(argv: Sequence[str]) -> bool:
    """Whether a host check (``mountpoint -q PATH``) exits 0; its output is not wanted."""
    try:
        return subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              check=False).returncode == 0
    except FileNotFoundError:
        return False


def machine_arch() -> str:
    """The build host's architecture as the kernel names it and rpm and apk do (x86_64,
    aarch64), for distros whose [base] arch defaults to the host's."""
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())


def tool_version(argv: list[str]) -> str:
    """The first version number a program prints for ``argv`` (``mmdebstrap --version``),
    asked in the build's environment (it goes into the plan: no caller's locale in it)."""
    out = subprocess.run(argv, capture_output=True, text=True, check=False,
                         env=buildenv.environment()).stdout
    m = re.search(r"(\d+(?:\.\d+)+\S*)", out)
    return m.group(1) if m else out.strip() or "unknown"


def host_state() -> tuple[str | None, bytes | None]:
    """The build host's hostname and resolv.conf, to recognise them in an image."""
    try:
        resolv = Path("/etc/resolv.conf").read_bytes().strip() or None
    except OSError:
        resolv = None
    return socket.gethostname() or None, resolv


def host_machine_id() -> bytes | None:
    """The build host's machine-id, to recognise it at any path of an image."""
    try:
        value = Path("/etc/machine-id").read_bytes().strip()
    except OSError:
        return None
    return value if value and value != b"uninitialized" else None
