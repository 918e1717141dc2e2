"""Run commands inside an image with systemd-nspawn, in a sandbox, never on the host.

Post-steps, feature commands and archive extraction are code from the recipe and the image
(maintainer scripts, the recipe's shell): untrusted code run as "root". Each command runs

- in a **user namespace** of its own UID range (``base .. base+65535``, locked per build, outside
  the range nspawn's ``pick`` uses), so the container's root has capabilities only over the
  container's own namespaces: it cannot mount a cgroup-v1 hierarchy (the ``release_agent``
  escape), create device nodes, load modules or write to host kernel settings;
- on the image's overlay bound through **ID-mapped layers** (see :mod:`nspawnbuild.overlay`), so
  uid 0 in the container is uid 0 in the tree and the tarball, file capabilities, setuid bits
  and xattrs survive;
- without ``CAP_SYS_ADMIN``, ``CAP_MKNOD`` and ``CAP_NET_RAW`` even inside that namespace;
- in a **cgroup of its own** (every hierarchy nspawn uses) with a closed device policy (the v1
  devices controller: only null, zero, full, random, urandom, tty, ptmx and ptys), a pids
  limit, and nspawn's cgroup namespace, so the container sees nothing of the host's cgroups;
- in a **PID namespace that dies with the build**: ``unshare --pid --kill-child`` around nspawn,
  itself killed by the kernel when nspawnbuild dies (even by SIGKILL), so no step outlives it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from . import buildenv
from .errors import BuildError
from .host import require_tool
from .imagefs import make_dirs, resolve_in_root, write_file
from .namespaces import UserNamespace
from .overlay import ImageTree
from .steplog import StepLog

#: environment every command in the sandbox gets (besides nspawn's own defaults and the
#: recipe's SOURCE_DATE_EPOCH): locale, time zone, no dialogs (see nspawnbuild.buildenv)
BASE_ENV = buildenv.CONTAINER


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
    uid_base: int | None = None,
) -> list[str]:
    """The systemd-nspawn command line that runs ``command`` inside ``root``.

    - ``--register=no --keep-unit``: no machined needed, no transient unit on the host;
    - ``--private-users=BASE:65536 --private-users-ownership=off``: a user namespace; the tree is
      already ID-mapped to it (:meth:`ImageTree.idmapped`), nspawn must not chown or re-map it;
    - ``--drop-capability``: no mounts, device nodes or raw sockets even inside the namespace;
    - ``--resolv-conf=bind-host``: the host's resolv.conf is *bound* for name lookups, never
      copied into the tree (``off`` without network);
    - ``--timezone=off``: the host's timezone is not copied into the image;
    - ``--link-journal=no``: nothing of the guest journal leaks to the host;
    - ``--as-pid2``: a stub init reaps the step's zombies and forwards signals.
    """
    nspawn = require_tool("systemd-nspawn", "systemd-container", "to run steps inside the image")
    users = (["--private-users=no"] if uid_base is None else
             [f"--private-users={uid_base}:{RANGE}", "--private-users-ownership=off"])
    argv = [
        nspawn, "--quiet", "--register=no", "--keep-unit", "--as-pid2", "--console=pipe",
        f"--directory={root}", f"--machine={machine}", *users,
        f"--drop-capability={','.join(DROPPED_CAPABILITIES)}",
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


#: capabilities a step never gets, even inside its user namespace
DROPPED_CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_MKNOD", "CAP_NET_RAW")
#: size of a build's UID range (what an image's ids may use: 0..65535)
RANGE = 0x10000
#: UID ranges nspawnbuild picks from: above the range ``--private-users=pick`` uses
#: (0x00080000..0x6FFF0000), so a build never shares ids with a booted container
#: and below systemd's "foreign" range (0x7FFE0000..0x7FFEFFFF, systemd >= 257)
FIRST_BASE, SLOTS = 0x70000000, 0xFFE
LOCK_DIR = Path("/run/nspawnbuild/uid")
#: device nodes a step may open (v1 devices controller syntax); everything else is denied
ALLOWED_DEVICES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                   "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm")
PIDS_MAX = 4096
CGROUP_ROOT = Path("/sys/fs/cgroup")


def pick_uid_base(machine: str) -> tuple[int, int]:
    """A UID range no other build holds: ``(base, fd of its lock)``, held until closed."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    start = int.from_bytes(hashlib.sha256(f"{machine}:{os.getpid()}".encode()).digest()[:4]) % SLOTS
    for i in range(SLOTS):
        base = FIRST_BASE + ((start + i) % SLOTS) * RANGE
        fd = os.open(LOCK_DIR / f"{base:08x}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return base, fd
    raise BuildError(f"no free UID range for a build under {LOCK_DIR}; too many builds at once")


def _hierarchies() -> list[tuple[Path, str]]:
    """``(directory, controllers)``: this process's own cgroup in every hierarchy it is in.

    Step cgroups are made below the build's own, so limits put on the build (a CI runner's
    slice, ``systemd-run -p TasksMax=``) hold for its steps too.
    """
    out = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, own = line.split(":", 2)
        if controllers == "":
            mnt = CGROUP_ROOT / "unified" if (CGROUP_ROOT / "unified").is_dir() else CGROUP_ROOT
        elif controllers.startswith("name="):
            mnt = CGROUP_ROOT / controllers.removeprefix("name=")
        else:
            mnt = CGROUP_ROOT / controllers
        mnt = mnt / own.strip("/") if own.strip("/") else mnt
        if mnt.is_dir() and (controllers == "" or controllers == "name=systemd"
                             or controllers in ("devices", "pids")):
            out.append((mnt, controllers))
    return out


@contextlib.contextmanager
def step_cgroup(name: str) -> Iterator[list[Path]]:
    """A fresh cgroup for one step, in the hierarchies nspawn and the policy need; yields the
    ``cgroup.procs`` files the step's process joins. Whatever is left in it afterwards is
    killed, then the cgroup is removed."""
    made: list[Path] = []
    try:
        for mnt, controllers in _hierarchies():
            d = mnt / "nspawnbuild" / name
            d.mkdir(parents=True, exist_ok=True)
            made.append(d)
            with contextlib.suppress(OSError):  # nspawn hands the container a subtree
                (d / "cgroup.max.descendants").write_text("64\n")
            if controllers == "devices":
                (d / "devices.deny").write_text("a\n")
                for rule in ALLOWED_DEVICES:
                    (d / "devices.allow").write_text(rule + "\n")
            elif controllers == "pids":
                (d / "pids.max").write_text(f"{PIDS_MAX}\n")
        yield [d / "cgroup.procs" for d in made]
    finally:
        for d in made:
            _remove_cgroup(d)


def _remove_cgroup(d: Path) -> None:
    subs = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for cg in [*subs, d]:
        if (cg / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (cg / "cgroup.kill").write_text("1\n")
        for _ in range(100):
            procs = [int(p) for p in (cg / "cgroup.procs").read_text().split()] \
                if (cg / "cgroup.procs").exists() else []
            if not procs:
                break
            for pid in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        with contextlib.suppress(OSError):
            cg.rmdir()


#: joins the cgroups named before ``--``, then runs the rest: the step's process is in its own
#: cgroup before systemd-nspawn starts, so nspawn (--keep-unit) sets the container up in it
JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
#: a PID namespace around nspawn: when nspawn dies (it gets SIGKILL when unshare dies, and
#: unshare when nspawnbuild dies) the kernel kills everything in it, the container included
#: (--mount-proc: nspawn reads and writes /proc/PID of its children, which must be this
#: namespace's PIDs)
DIE_WITH_BUILD = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--"]


def reap_stale_cgroups(machine: str) -> list[str]:
    """Remove the step cgroups a killed earlier build of ``machine`` left (its process is gone:
    the kernel killed the step with it, the empty cgroup stays); returns what was removed."""
    removed = []
    for mnt, _controllers in _hierarchies():
        for d in sorted((mnt / "nspawnbuild").glob(f"{machine}-*-*")):
            owner, pid, _n = d.name.rsplit("-", 2)  # machine names may contain "-DIGITS"
            if owner == machine and pid.isdigit() and int(pid) != os.getpid() \
                    and not Path(f"/proc/{pid}").exists():
                _remove_cgroup(d)
                removed.append(str(d))
    return removed


class Sandbox:
    """Runs one build's commands in its image: its UID range, its overlay, a cgroup per step."""

    def __init__(self, tree: ImageTree, machine: str):
        self.tree, self.machine = tree, machine
        self.stale = reap_stale_cgroups(machine)
        self.uid_base, self._lock = pick_uid_base(machine)
        self._userns = UserNamespace(self.uid_base, RANGE)
        self._steps = 0

    def close(self) -> None:
        self._userns.close()
        os.close(self._lock)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        log: StepLog,
        command: Sequence[str],
        *,
        step: str,
        network: bool = True,
        env: Mapping[str, str] | None = None,
        shown_command: str | None = None,
        binds_ro: Sequence[tuple[Path, str]] = (),
    ) -> None:
        """Run ``command`` inside the image; raise BuildError naming ``step`` on failure."""
        require_tool("unshare", "util-linux", "to tie steps to the build's life")
        self._steps += 1
        _mount_points(self.tree.merged)
        placeholder = network and _resolv_placeholder(self.tree.merged)
        try:
            self._run(log, command, step=step, network=network, env=env,
                      shown_command=shown_command, binds_ro=binds_ro)
        finally:
            if placeholder:
                _drop_placeholder(self.tree.merged)

    def _run(self, log: StepLog, command: Sequence[str], *, step: str, network: bool,
             env: Mapping[str, str] | None, shown_command: str | None,
             binds_ro: Sequence[tuple[Path, str]]) -> None:
        with self.tree.idmapped(self._userns) as root, \
                step_cgroup(f"{self.machine}-{os.getpid()}-{self._steps}") as procs:
            argv = nspawn_argv(root, self.machine, command, network=network, env=env,
                               binds_ro=binds_ro, uid_base=self.uid_base)
            log.run([*DIE_WITH_BUILD, "sh", "-c", JOIN, "sh", *map(str, procs), "--", *argv],
                    step=step, shown_command=shown_command or " ".join(command),
                    stop=signal.SIGKILL)  # unshare ignores SIGTERM; the tree is discarded anyway


#: directories systemd-nspawn mounts on in the container; it cannot create them itself (it runs
#: as host root, which has no uid in the ID-mapped tree), so they are made first, as nspawn
#: would have made them (an Alpine minirootfs has no /sys, say)
MOUNT_POINTS = ("/proc", "/sys", "/dev", "/run", "/tmp")


def _mount_points(root: Path) -> None:
    for path in MOUNT_POINTS:
        target = resolve_in_root(root, path)
        if not target.exists() and not target.is_symlink():
            make_dirs(root, path)
            os.chmod(target, 0o1777 if path == "/tmp" else 0o755)


def _resolv_placeholder(root: Path) -> bool:
    """An empty /etc/resolv.conf for nspawn to bind the host's over, if the image has none.

    nspawn runs as host root, which cannot create files through the ID-mapped tree; the empty
    file is removed again after the step (and scrub() removes any empty resolv.conf).
    """
    target = resolve_in_root(root, "/etc/resolv.conf", follow_final=False)
    if target.exists() or target.is_symlink() or not target.parent.is_dir():
        return False
    write_file(root, "/etc/resolv.conf", b"")
    return True


def _drop_placeholder(root: Path) -> None:
    target = resolve_in_root(root, "/etc/resolv.conf", follow_final=False)
    if target.is_file() and not target.is_symlink() and target.stat().st_size == 0:
        target.unlink()
