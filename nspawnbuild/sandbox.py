"""Run commands inside an image with systemd-nspawn, never on the host.

Post-steps and feature commands are code from the image (maintainer scripts, the recipe's
shell); running them in a container means nothing of the host is visible to them except what
is bound in on purpose, and the host's /dev, /proc and /home cannot be touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .distro import require_tool
from .steplog import StepLog

#: environment every command in the sandbox gets
BASE_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}


#: run a host tool (a bootstrapper) in private mount and PID namespaces: its mounts of /proc,
#: /sys and /dev in the new tree are invisible to the host and vanish with it, and if the build
#: is killed (even with SIGKILL) every process of the tool dies with it (--kill-child)
ISOLATE = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
           "--mount-proc", "--"]


def isolated(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped in :data:`ISOLATE`."""
    require_tool("unshare", "util-linux", "to isolate the bootstrapper's mounts")
    return [*ISOLATE, *argv]


def nspawn_argv(
    root: Path,
    machine: str,
    command: Sequence[str],
    *,
    network: bool = True,
    env: Mapping[str, str] | None = None,
    binds_ro: Sequence[tuple[Path, str]] = (),
) -> list[str]:
    """The systemd-nspawn command line that runs ``command`` inside ``root``.

    - ``--register=no --keep-unit``: no machined needed, no transient unit on the host;
    - ``--private-users=no``: files the step creates belong to the image's own root;
    - ``--resolv-conf=bind-host``: the host's resolv.conf is *bound* for name lookups, never
      copied into the tree (``off`` without network);
    - ``--timezone=off``: the host's timezone is not copied into the image;
    - ``--link-journal=no``: nothing of the guest journal leaks to the host;
    - ``--as-pid2``: a stub init reaps the step's zombies and forwards signals.
    """
    nspawn = require_tool("systemd-nspawn", "systemd-container", "to run steps inside the image")
    argv = [
        nspawn, "--quiet", "--register=no", "--keep-unit", "--as-pid2", "--console=pipe",
        f"--directory={root}", f"--machine={machine}", "--private-users=no",
        "--timezone=off", "--link-journal=no",
        "--resolv-conf=bind-host" if network else "--resolv-conf=off",
    ]
    if not network:
        argv.append("--private-network")
    for host_path, guest_path in binds_ro:
        argv.append(f"--bind-ro={_bind_escape(str(host_path))}:{_bind_escape(guest_path)}")
    for key, value in sorted({**BASE_ENV, **(env or {})}.items()):
        argv.append(f"--setenv={key}={value}")
    argv.append("--")
    argv.extend(command)
    return argv


def _bind_escape(path: str) -> str:
    """A path for ``--bind-ro=SRC:DEST``: nspawn reads ``\\:`` as ':' and ``\\\\`` as '\\'."""
    return path.replace("\\", "\\\\").replace(":", "\\:")


def run_in_root(
    log: StepLog,
    root: Path,
    machine: str,
    command: Sequence[str],
    *,
    step: str,
    network: bool = True,
    env: Mapping[str, str] | None = None,
    shown_command: str | None = None,
    binds_ro: Sequence[tuple[Path, str]] = (),
) -> None:
    """Run ``command`` inside the image at ``root``; raise BuildError naming ``step`` on failure."""
    argv = nspawn_argv(root, machine, command, network=network, env=env, binds_ro=binds_ro)
    log.run(argv, step=step, shown_command=shown_command)
