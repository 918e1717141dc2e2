"""A real target host for the tests: a Debian VM under QEMU whose root filesystem nspawnbuild
builds from tests/vm/host-*.toml, reached over ssh, with a second disk (the payload) that
carries this run's ssh key and the repository's nspawnbuild; the artifacts to install are
copied onto it (``VM.push``) once the VM is up, so that the hosts boot while they are built.

Why a VM: the rest of the suite runs ``systemd-import`` and ``systemd-nspawn`` directly on the
build host, without machined or importd as a host's PID 1 runs them; the README's install
commands (``machinectl import-tar``, ``start``, ``pull-tar``, ``enable``) only work there.

Network rule: the VM's only network is QEMU's user network (slirp) told to use 192.0.2.128/25
(IPv6 off); the guest gets a static address and no gateway, so it reaches that subnet alone,
where 192.0.2.130 is the build host's loopback (slirp connects it to 127.0.0.1) and ssh comes
in through a forward from 127.0.0.1. The lower half, 192.0.2.0/25, is the containers' (veth).

TCG, not KVM: this machine's /dev/kvm exists but is too slow to be of use, and CI machines
may have none; TCG boots in one to two minutes on two cores.

The host images are cached between runs (``vm_cache_dir()``) under a key made from the stage
documents of the recipe's plan (what the build's own caches key on) and this harness's
``IMAGE_FORMAT``: a changed recipe, file or package list builds a new image, anything else
reuses the disk. The disk is booted with ``snapshot=on``, so a run never changes the cache.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nspawnbuild import digests, reproduce

VM_DIR = Path(__file__).resolve().parent
ROOT = VM_DIR.parent.parent

#: bump when the way a disk is made from the tree changes (mkfs options, the size rule)
IMAGE_FORMAT = 1
#: the guest side of slirp: network, the build host as the guest sees it, the guest's address
SLIRP_NET, SLIRP_HOST, GUEST_ADDRESS = "192.0.2.128/25", "192.0.2.130", "192.0.2.140"
#: free space left on the root disk for the images the scenarios import (sparse file)
ROOT_SLACK = 3 << 30


@dataclass(frozen=True)
class HostSpec:
    """One kind of target host: its recipe and what its systemd must say (that version, or at
    least it where ``exact`` is false: a moving release)."""

    name: str
    recipe: Path
    codename: str
    systemd: int
    exact: bool = True


#: every kind of host the harness can make
ALL_HOSTS = {
    "debian12": HostSpec("vmhost-bookworm", VM_DIR / "host-bookworm.toml", "bookworm", 252),
    "debian13": HostSpec("vmhost-trixie", VM_DIR / "host-trixie.toml", "trixie", 257),
    "debian-sid": HostSpec("vmhost-sid", VM_DIR / "host-sid.toml", "forky", 258, exact=False),
    "ubuntu2404": HostSpec("vmhost-noble", VM_DIR / "host-noble.toml", "noble", 255),
}
#: what CI boots; ``NSPAWNBUILD_VM_HOSTS`` (names of ALL_HOSTS, comma-separated) chooses others
DEFAULT_HOSTS = ("debian12", "debian13")


def selected_hosts() -> dict[str, HostSpec]:
    """The hosts this run boots: ``$NSPAWNBUILD_VM_HOSTS``, else :data:`DEFAULT_HOSTS`."""
    names = [n.strip() for n in os.environ.get("NSPAWNBUILD_VM_HOSTS", "").split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL_HOSTS))
    if unknown:
        raise SystemExit(f"NSPAWNBUILD_VM_HOSTS: unknown host {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(ALL_HOSTS))}")
    return {n: ALL_HOSTS[n] for n in (names or DEFAULT_HOSTS)}


HOSTS = selected_hosts()


def vm_cache_dir() -> Path:
    """Where host images live between runs: ``$NSPAWNBUILD_VM_CACHE``, else under the user's
    cache directory; never in the repository (a disk is hundreds of MiB)."""
    if os.environ.get("NSPAWNBUILD_VM_CACHE"):
        return Path(os.environ["NSPAWNBUILD_VM_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nspawnbuild-tests" / "vmhost"


def image_key(recipe: Path) -> str:
    """The recipe's digest as the build sees it (its five stage documents) and IMAGE_FORMAT."""
    from nspawnbuild.plan import make_plan
    from nspawnbuild.recipe.load import load_recipe

    plan = make_plan(load_recipe(str(recipe)))
    return digests.digest({"plan": plan.documents(), "format": IMAGE_FORMAT})


@dataclass(frozen=True)
class HostImage:
    """A cached host disk with the kernel and initrd taken from its /boot."""

    disk: Path
    kernel: Path
    initrd: Path


def _run(cmd: list[str], what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    assert r.returncode == 0, f"{what} failed ({r.returncode}): {r.stdout[-3000:]}{r.stderr[-3000:]}"
    return r  # type: ignore[no-any-return]


def tree_size(tree: Path) -> int:
    r = _run(["du", "-sb", "--apparent-size", str(tree)], "du")
    return int(r.stdout.split()[0])


def make_ext4(tree: Path, image: Path, label: str, slack: int) -> None:
    """An ext4 image of ``tree`` (owners, modes, xattrs kept: mkfs.ext4 -d copies them), its
    size the tree's plus ``slack``, a sparse file."""
    size = tree_size(tree) * 13 // 10 + slack
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size)
    _run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0", "-d", str(tree),
          str(image)], f"mkfs.ext4 -d {tree}")


def _boot_file(tree: Path, pattern: str) -> Path:
    found = sorted((tree / "boot").glob(pattern))
    assert found, f"the host image has no /boot/{pattern}: is linux-image-amd64 in its recipe?"
    return found[-1]


def host_image(spec: HostSpec, build: Path) -> HostImage:
    """The cached disk of ``spec``, built (nspawnbuild build, unpack, mkfs.ext4 -d) when the
    cache has no entry for its key. ``build`` is a scratch directory, removed afterwards with
    the build's bootstrap cache: the disk is what is kept."""
    key = image_key(spec.recipe)
    top = vm_cache_dir()
    entry = top / f"{spec.name}-{key[:20]}"
    image = HostImage(entry / "root.img", entry / "vmlinuz", entry / "initrd.img")
    if (entry / "complete").is_file():
        return image
    top.mkdir(parents=True, exist_ok=True)
    for old in top.glob(f"{spec.name}-*"):  # other keys of this host: stale, and large
        shutil.rmtree(old, ignore_errors=True)
    try:
        env = dict(os.environ, NSPAWNBUILD_OUT=str(build / "out"),
                   NSPAWNBUILD_WORK=str(build / "work"), NSPAWNBUILD_CACHE=str(build / "cache"))
        env.pop("SOURCE_DATE_EPOCH", None)
        _run([str(Path(sys.executable).parent / "nspawnbuild"), "build", "--quiet", str(spec.recipe)],
             f"nspawnbuild build {spec.recipe.name}", env=env, timeout=1800)
        tarball = build / "out" / spec.name / f"{spec.name}.tar.zst"
        tree = reproduce.unpack(tarball, build / "tree")
        staging = top / f".{spec.name}-{key[:20]}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shutil.copy(_boot_file(tree, "vmlinuz-*"), staging / "vmlinuz")
        shutil.copy(_boot_file(tree, "initrd.img-*"), staging / "initrd.img")
        make_ext4(tree, staging / "root.img", "root", ROOT_SLACK)
        (staging / "complete").write_text(key + "\n")
        staging.rename(entry)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(build)], check=False)
    return image


def payload_python(dest: Path) -> None:
    """The repository's nspawnbuild and plugins as the launcher in the image imports them
    (PYTHONPATH), with an egg-info whose entry points register the plugins as pip would."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "nspawnbuild", dest / "nspawnbuild", ignore=ignore)
    shutil.copytree(ROOT / "plugins", dest / "nspawnbuild_plugins", ignore=ignore)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    info = dest / "nspawnbuild.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    points = project["entry-points"]
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in points.items()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VM:
    """One QEMU guest: started by ``boot``, reached by ``ssh``, always killed by ``close``."""

    def __init__(self, image: HostImage, payload: Path, key: Path, workdir: Path):
        self.image, self.payload, self.key, self.workdir = image, payload, key, workdir
        self.console = workdir / "console.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def command(self) -> list[str]:
        nic = (f"user,model=virtio-net-pci,net={SLIRP_NET},host={SLIRP_HOST},"
               f"dns=192.0.2.131,dhcpstart=192.0.2.144,ipv6=off,"
               f"hostfwd=tcp:127.0.0.1:{self.port}-{GUEST_ADDRESS}:22")
        return ["qemu-system-x86_64", "-accel", "tcg", "-smp", "2", "-m", "2048",
                "-nodefaults", "-display", "none", "-no-reboot",
                "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
                "-append", "root=/dev/vda rw console=ttyS0 panic=-1",
                "-drive", f"file={self.image.disk},format=raw,if=virtio,snapshot=on",
                # snapshot=on here too: both hosts boot at once from the one payload disk, and
                # neither may write to the other's view of it
                "-drive", f"file={self.payload},format=raw,if=virtio,snapshot=on",
                "-nic", nic, "-serial", f"file:{self.console}"]

    def boot(self, deadline_s: float = 420) -> None:
        self.start()
        self.wait_booted(deadline_s)

    def start(self) -> None:
        """Start QEMU; :meth:`wait_booted` waits for the guest (several can boot at once)."""
        self.port = free_port()
        # snapshot=on keeps the guest's writes in a temporary file under TMPDIR: ours
        env = dict(os.environ, TMPDIR=str(self.workdir))
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=(self.workdir / "qemu.log").open("wb"),
                                     stderr=subprocess.STDOUT, env=env)
        self.started = time.monotonic()

    def wait_booted(self, deadline_s: float = 420) -> None:
        """Until ssh answers and systemd says the boot is done; an assertion with the
        console's tail when QEMU exits or ``deadline_s`` (from the start) passes."""
        assert self.proc is not None, "start() first"
        deadline = self.started + deadline_s
        last = ""
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited with {self.proc.returncode}: "
                                     f"{(self.workdir / 'qemu.log').read_text(errors='replace')}"
                                     f"\n--- console ---\n{self.console_tail()}")
            try:
                probe = self.ssh("systemctl is-system-running --wait >/dev/null; echo up",
                                 timeout=60, connect_timeout=10)
                if probe.stdout.strip().endswith("up"):
                    return
                last = probe.stderr
            except subprocess.TimeoutExpired as e:
                last = f"ssh timed out: {e}"
            if time.monotonic() > deadline:
                raise AssertionError(f"no ssh into the VM within {deadline_s:.0f}s (last: {last!r})"
                                     f"\n--- console ---\n{self.console_tail()}")
            time.sleep(3)

    def console_tail(self, chars: int = 4000) -> str:
        try:
            return self.console.read_text(errors="replace")[-chars:]
        except OSError as e:
            return f"(no console log: {e})"

    def ssh_argv(self, command: str, connect_timeout: int = 20) -> list[str]:
        return ["ssh", "-p", str(self.port), "-i", str(self.key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR",
                "-o", "ServerAliveInterval=15", "root@127.0.0.1",
                "bash -e -o pipefail -c " + _quote(command)]

    def ssh(self, command: str, timeout: float = 300,
            connect_timeout: int = 20) -> subprocess.CompletedProcess[str]:
        """``command`` as root in the VM, through bash -e (-o pipefail)."""
        return subprocess.run(self.ssh_argv(command, connect_timeout), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def push(self, src: Path, dest: str, timeout: float = 600) -> None:
        """Copy the directory ``src`` to ``dest`` in the VM (tar over ssh)."""
        tar = subprocess.Popen(["tar", "-C", str(src), "-cf", "-", "."], stdout=subprocess.PIPE)
        try:
            r = subprocess.run(self.ssh_argv(f"mkdir -p {dest} && tar -xf - -C {dest}"),
                               stdin=tar.stdout, capture_output=True, text=True, timeout=timeout)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=60)
        assert r.returncode == 0 and tar.returncode == 0, \
            f"copying {src} to the VM's {dest} failed: {r.stderr[-2000:]}"

    def must(self, command: str, timeout: float = 300) -> str:
        """stdout of ``command``; an assertion naming it, its output and the console if not 0."""
        r = self.ssh(command, timeout=timeout)
        assert r.returncode == 0, (f"in the VM: {command!r} exited {r.returncode}\n"
                                   f"stdout: {r.stdout[-3000:]}\nstderr: {r.stderr[-3000:]}")
        return r.stdout

    def close(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


@contextmanager
def running(image: HostImage, payload: Path, key: Path, workdir: Path) -> Iterator[VM]:
    """A booted VM, killed afterwards whatever happened."""
    vm = VM(image, payload, key, workdir)
    try:
        vm.boot()
        yield vm
    finally:
        vm.close()
