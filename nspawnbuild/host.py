"""Facts about the build host: its programs, their versions, its name and its resolver.

Kept apart from everything that builds, so that any module can ask (a distro for its
bootstrapper, the sandbox for nspawn, the scrubber and the auditor for host state to remove
or find) without importing the modules that do the work.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

from .errors import HostToolMissing


def require_tool(tool: str, package: str, why: str) -> str:
    """Return the path of ``tool`` or raise a :class:`HostToolMissing` naming its package."""
    path = shutil.which(tool)
    if path is None:
        raise HostToolMissing(tool, package, why)
    return path


def tool_version(argv: list[str]) -> str:
    """The first version number a program prints for ``argv`` (``mmdebstrap --version``)."""
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
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
