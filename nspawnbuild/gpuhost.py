"""The host's NVIDIA driver, for an image built with ``driver = "host"``: what to bind in.

An image that carries NVIDIA's user-space must match the host's kernel module exactly, and
breaks at the host's next driver upgrade. The container ecosystem binds the host's own driver
files in instead, as listed by a CDI spec (``nvidia-ctk cdi generate``); without one, they are
found the way NVIDIA's container toolkit finds them: the driver's libraries in the host's
linker cache whose file names carry the module's version, its programs on the usual paths,
its firmware, and the device nodes. Everything is looked up under the host root (``/``, or
``install --root DIR``); the settings name host paths as the running host sees them.

The container's half: the bound libraries are found by its linker once ``ldconfig`` has run
over their directories at boot (the image's ``nspawnbuild-gpu-ldconfig.service``), after
tmpfiles made the symlinks the spec's hooks would have made.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import cdi
from .errors import BuildError
from .hostneeds import HostContext, HostSettings
from .settings import Setting

KIND = "nvidia.com/gpu"
VERSION_FILE = "/sys/module/nvidia/version"
CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                 "/dev/nvidia-modeset")
#: the driver's libraries a compute container uses (the toolkit's "compute" and "utility"
#: capabilities), by the name before ``.so``
LIBRARIES = ("libcuda", "libcudadebugger", "libnvidia-ml", "libnvidia-ptxjitcompiler",
             "libnvidia-nvvm", "libnvidia-opencl", "libnvidia-gpucomp", "libnvidia-cfg",
             "libnvidia-allocator", "libnvidia-pkcs11", "libnvidia-pkcs11-openssl3")
PROGRAMS = ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
            "nvidia-cuda-mps-server")
PROGRAM_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin")
PERSISTENCED_SOCKET = "/run/nvidia-persistenced/socket"
#: what the container's boot reads: the host-made files written into the installed tree
LDCONFIG_CONF = "/etc/ld.so.conf.d/00-nspawnbuild-host-gpu.conf"
TMPFILES_CONF = "/etc/tmpfiles.d/nspawnbuild-host-gpu.conf"
ENVIRONMENT_CONF = "/etc/systemd/system.conf.d/50-nspawnbuild-host-gpu.conf"
#: paths a .nspawn Bind= line and a tmpfiles line can hold as they are
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]*$")
# systemd expands $ and % in ExecStartPre=: $$ is a literal $, %i the instance (machine) name
CHECK = ("/bin/sh -c 'want={want}; have=$$(cat {file} 2>/dev/null || echo none); "
         "[ \"$$have\" = \"$$want\" ] && exit 0; [ \"$$have\" = none ] && {{ echo \"nspawnbuild: "
         "container %i needs the NVIDIA kernel module, which is not loaded: load it (modprobe "
         "nvidia) before starting the container\" >&2; exit 1; }}; echo \"nspawnbuild: container "
         "%i was installed for NVIDIA driver $$want but the host kernel module is now $$have; "
         "run nspawnbuild install again to bind the new driver files\" >&2; exit 1'")


@dataclass(frozen=True)
class Found:
    edits: cdi.Edits
    version: str
    source: str  # where the list came from, for the user


def under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def driver_version(root: Path) -> str:
    file = under(root, VERSION_FILE)
    try:
        text = file.read_text().strip()
    except OSError:
        raise BuildError(f"no NVIDIA kernel module is loaded on this host ({file} is missing): "
                         "load it (modprobe nvidia) or install the driver, then install the "
                         "image again") from None
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", text):
        raise BuildError(f"{file} says {text[:40]!r}, not a driver version")
    return text


def _char_device(root: Path, path: str) -> bool:
    try:
        return stat.S_ISCHR(os.lstat(under(root, path)).st_mode)
    except OSError:
        return False


def _gpu_nodes(root: Path, devices: str | list[str]) -> list[str]:
    """The /dev/nvidiaN nodes chosen by index (no CDI spec: indices are the nodes' numbers)."""
    if devices == "all":
        found = sorted((p.name for p in under(root, "/dev").glob("nvidia[0-9]*")
                        if p.name[6:].isdigit()), key=lambda n: int(n[6:]))
        nodes = [f"/dev/{n}" for n in found if _char_device(root, f"/dev/{n}")]
        if not nodes:
            raise BuildError(f"no NVIDIA GPU device node on this host ({under(root, '/dev')}"
                             "/nvidia0 ...): is the driver loaded?")
        return nodes
    nodes = []
    for device in devices:
        if not device.isdigit():
            raise BuildError(f"GPU '{device}' is not an index: choosing GPUs by UUID or MIG "
                             "device needs the host's CDI spec (nvidia-ctk cdi generate "
                             "--output=/etc/cdi/nvidia.yaml)")
        node = f"/dev/nvidia{device}"
        if not _char_device(root, node):
            raise BuildError(f"this host has no GPU {device}: {under(root, node)} is not a "
                             "character device (nvidia-smi -L lists the GPUs)")
        nodes.append(node)
    return nodes


def _ld_cache(root: Path) -> list[str]:
    """Library paths in the host's linker cache, as the host sees them."""
    cache = under(root, "/etc/ld.so.cache")
    if not cache.is_file():
        raise BuildError(f"no linker cache at {cache}: run ldconfig on the host, or give the "
                         "driver's files with a CDI spec")
    listing = subprocess.run(["ldconfig", "-p", "-C", str(cache)], capture_output=True,
                             text=True, check=False)
    if listing.returncode != 0:
        raise BuildError(f"ldconfig -p -C {cache} failed: {listing.stderr.strip()[:200]}")
    return [line.rsplit(" => ", 1)[1].strip() for line in listing.stdout.splitlines()
            if " => " in line]


def _real(root: Path, path: str) -> str | None:
    """``path`` with its symlinks resolved inside ``root``, as the host sees it."""
    here = Path(path)
    for _ in range(16):
        full = under(root, str(here))
        if not full.is_symlink():
            return str(here) if full.is_file() else None
        target = Path(os.readlink(full))
        here = Path(os.path.normpath(here.parent / target))
    return None


def discover(root: Path, devices: str | list[str], version: str) -> cdi.Edits:
    """The driver's files and nodes found without a CDI spec, as the container toolkit does."""
    out = cdi.Edits()
    for node in _gpu_nodes(root, devices) + [n for n in CONTROL_NODES if _char_device(root, n)]:
        out.device_nodes.append((node, node))
    if "/dev/nvidiactl" not in {n for n, _ in out.device_nodes}:
        raise BuildError(f"{under(root, '/dev/nvidiactl')} is missing: the NVIDIA driver is not "
                         "set up on this host")
    for path in _ld_cache(root):
        name = PurePosixPath(path).name
        if name.split(".so", 1)[0] not in LIBRARIES:
            continue
        real = _real(root, path)
        if real is None or not real.endswith(f".so.{version}"):
            continue  # another driver's leftovers, or a dangling link
        mount = cdi.Mount(real, real, read_only=True)
        if mount not in out.mounts:
            out.mounts.append(mount)
        if name != PurePosixPath(real).name:  # the SONAME link the cache knows it by
            link = (str(PurePosixPath(real).parent / name), PurePosixPath(real).name)
            if link not in out.symlinks:
                out.symlinks.append(link)
        folder = str(PurePosixPath(real).parent)
        if folder not in out.ldconfig_dirs:
            out.ldconfig_dirs.append(folder)
    if not out.mounts:
        raise BuildError(f"the linker cache {under(root, '/etc/ld.so.cache')} lists no NVIDIA "
                         f"library of driver {version} (libcuda.so.{version} ...): is the "
                         "driver's user-space installed on the host?")
    cuda = next((m.container_path for m in out.mounts
                 if PurePosixPath(m.container_path).name.startswith("libcuda.so.")), None)
    dev_link = str(PurePosixPath(cuda).parent / "libcuda.so") if cuda else None
    if dev_link and dev_link not in {link for link, _ in out.symlinks}:
        out.symlinks.append((dev_link, "libcuda.so.1"))  # the toolkit's: dlopen("libcuda.so")
    for program in PROGRAMS:
        for d in PROGRAM_DIRS:
            path = f"{d}/{program}"
            if under(root, path).is_file() and not under(root, path).is_symlink():
                out.mounts.append(cdi.Mount(path, path, read_only=True))
                break
    firmware = f"/lib/firmware/nvidia/{version}"
    if under(root, firmware).is_dir():
        out.mounts.append(cdi.Mount(firmware, firmware, read_only=True))
    if under(root, PERSISTENCED_SOCKET).is_socket():
        out.mounts.append(cdi.Mount(PERSISTENCED_SOCKET, PERSISTENCED_SOCKET, read_only=False))
    return out


def cdi_names(devices: str | list[str]) -> list[str]:
    return ["all"] if devices == "all" else list(devices)


#: the driver's own libraries, whose file names carry the driver's version: a spec listing
#: another version's is stale (others, such as libnvidia-egl-wayland.so.1.1.13, version apart)
VERSIONED = ("libcuda.so.", "libnvidia-ml.so.", "libnvidia-ptxjitcompiler.so.")


def find(root: Path, devices: str | list[str]) -> Found:
    """The host's driver files and nodes for ``devices``: from its CDI spec, or discovered."""
    version = driver_version(root)
    specs = cdi.find(root, KIND)
    if specs:
        edits, used = cdi.select(specs, cdi_names(devices))
        source = "the host's CDI spec " + ", ".join(f"{s.path} (cdiVersion {s.version})"
                                                    for s in used)
    else:
        edits = discover(root, devices, version)
        source = "the host's linker cache and /dev (no CDI spec in /etc/cdi or /var/run/cdi)"
    for host, _ in edits.device_nodes:
        if not _char_device(root, host):
            raise BuildError(f"{under(root, host)} is not a character device although "
                             f"{source} lists it: regenerate the spec")
    for mount in edits.mounts:
        if not os.path.lexists(under(root, mount.host_path)):
            raise BuildError(f"{under(root, mount.host_path)} is missing although {source} "
                             "lists it: regenerate the spec after a driver change")
        name = PurePosixPath(mount.host_path).name
        if name.startswith(VERSIONED) and not name.endswith(f".so.{version}"):
            raise BuildError(f"{source} lists {mount.host_path}, another driver's file than "
                             f"the loaded module's {version}: the spec is stale; regenerate it "
                             "(nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)")
    return Found(edits, version, source)


def settings(found: Found, *, check: bool = True) -> HostSettings:
    """The installed .nspawn's binds, the drop-in's DeviceAllow= and version check, and the
    tree's ld.so.conf, tmpfiles and environment entries for ``found``."""
    e = found.edits
    out = HostSettings(notes=[f"GPU: bound the NVIDIA driver {found.version} from {found.source}"])
    for host_path, inside in e.device_nodes:
        if not host_path.startswith("/dev/"):  # all DeviceAllow= can name, besides classes
            raise BuildError(f"{found.source} names device node {host_path}, outside /dev: "
                             "the unit's DeviceAllow= can allow only nodes in /dev")
        bind = _bind_path(host_path) + ("" if inside == host_path
                                        else ":" + _bind_path(inside))
        out.nspawn.append(Setting("Files", "Bind", bind, "gpu-nvidia"))
        out.unit.append(Setting("Service", "DeviceAllow", f"{host_path} rw", "gpu-nvidia"))
    if not any(inside == "/dev/nvidia-uvm" for _, inside in e.device_nodes):
        out.notes.append("GPU: no /dev/nvidia-uvm on this host: CUDA needs it; create it at "
                         "boot with nvidia-modprobe -u -c=0, then install again")
    for m in e.mounts:
        bind = _bind_path(m.host_path) + (
            "" if m.container_path == m.host_path else ":" + _bind_path(m.container_path))
        out.nspawn.append(Setting("Files", "BindReadOnly" if m.read_only else "Bind", bind,
                                  "gpu-nvidia"))
    env = []
    for entry in e.env:
        name, _, value = entry.partition("=")
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and re.fullmatch(r"[^\s\"'\\%$]*", value):
            env.append(entry)
        else:
            out.notes.append(f"GPU: environment entry {entry[:60]!r} left out (not a plain "
                             "NAME=VALUE)")
    if env:  # the container's manager passes it to every service (Environment= reaches PID 1 only)
        out.files[ENVIRONMENT_CONF] = (
            "# Written by nspawnbuild install: the GPU driver's CDI environment\n[Manager]\n"
            + "".join(f'DefaultEnvironment="{entry}"\n' for entry in env))
    if check:
        out.unit.append(Setting("Service", "ExecStartPre",
                                CHECK.format(want=found.version, file=VERSION_FILE),
                                "gpu-nvidia"))
    if e.ldconfig_dirs:
        out.files[LDCONFIG_CONF] = ("# Written by nspawnbuild install: where the host's GPU "
                                    "driver libraries are bound\n"
                                    + "".join(f"{_tmpfiles_path(d)}\n" for d in e.ldconfig_dirs))
    if e.symlinks:
        out.files[TMPFILES_CONF] = (
            "# Written by nspawnbuild install: the links the GPU driver's CDI hooks make\n"
            + "".join(f"L {_tmpfiles_path(link)} - - - - {_tmpfiles_path(target)}\n"
                      for link, target in e.symlinks))
    out.notes += [f"GPU: hook not run (nspawn runs no OCI hooks): {h}" for h in e.skipped_hooks]
    return out


def _bind_path(path: str) -> str:
    """``path`` as a .nspawn Bind= source or destination takes it: plain characters only
    (``:`` separates the fields, ``%`` and ``\\`` would be read as escapes)."""
    if not _PLAIN_PATH.match(path) or "/../" in path + "/" or "//" in path:
        raise BuildError(f"path {path!r} has characters a .nspawn Bind= line cannot hold as "
                         "they are; nspawnbuild binds only plain paths")
    return path


def _tmpfiles_path(path: str) -> str:
    """A path or link target as a tmpfiles.d or ld.so.conf line takes it: no whitespace (the
    field separator), no control characters, no ``%`` (a specifier), no ``\\`` (an escape).
    ``:`` is fine there (the toolkit's /dev/dri/by-path/pci-0000:52:00.0-card links)."""
    if not path or re.search(r"[\s\x00-\x1f\x7f%\\]", path):
        raise BuildError(f"path {path!r} has characters a tmpfiles.d line cannot hold as they "
                         "are (whitespace, control characters, % or \\)")
    return path


# -- AMD (ROCm) ------------------------------------------------------------------------------

#: the host groups an AMD compute device may belong to, which the image has (gpu-amd makes them)
AMD_GROUPS = ("render", "video")


def render_nodes(root: Path) -> list[str]:
    """The host's DRM render nodes (/dev/dri/renderD128 ...), for ``render_nodes = "all"``."""
    found = sorted(p.name for p in under(root, "/dev/dri").glob("renderD[0-9]*"))
    nodes = [f"/dev/dri/{n}" for n in found if _char_device(root, f"/dev/dri/{n}")]
    if not nodes:
        raise BuildError(f"this host has no DRM render node ({under(root, '/dev/dri')}"
                         "/renderD128 ...): is the amdgpu driver loaded?")
    return nodes


def _host_groups(root: Path) -> dict[int, str]:
    """The host's groups by id: /etc/group, and /usr/lib/group where the system's groups live
    apart (image-based hosts); an id in both is /etc's."""
    groups: dict[int, str] = {}
    for table in ("/usr/lib/group", "/etc/group"):
        try:
            text = under(root, table).read_text()
        except OSError:
            continue
        groups.update({int(f[2]): f[0] for f in (line.split(":") for line in text.splitlines())
                       if len(f) == 4 and f[2].isdigit()})
    return groups


def amd_settings(host: HostContext, nodes: list[str], *, private_users: bool) -> HostSettings:
    """What an AMD compute container needs of this host: its device nodes present, and each
    node's group given to the image's group of that name, so that the container's members
    of render/video open them as the host's members do. With private users the container
    cannot hold a host group: the nodes must then be open to all (mode 0666)."""
    out = HostSettings()
    names = _host_groups(host.root)
    for node in nodes:
        path = under(host.root, node)
        if not _char_device(host.root, node):
            raise BuildError(f"this host has no {node} ({path} is not a character device): "
                             "load the amdgpu driver (modprobe amdgpu), or install ROCm's "
                             "kernel driver")
        st = os.stat(path)
        if st.st_mode & 0o006 == 0o006:
            continue  # open to every user: no group needed
        if private_users:
            raise BuildError(f"{node} is mode {stat.S_IMODE(st.st_mode):o}, group {st.st_gid}, "
                             "and the image runs with private users, whose processes cannot "
                             "hold a host group: turn private users off for this machine, or "
                             "make the node mode 0666 with a udev rule on the host")
        group = names.get(st.st_gid)
        if group not in AMD_GROUPS:
            raise BuildError(f"{node} belongs to group {group or st.st_gid} on this host, not "
                             f"to {' or '.join(AMD_GROUPS)}, the groups the image's users are "
                             "in: change the host's udev rule, or the node's group")
        if out.group_ids.get(group, st.st_gid) != st.st_gid:
            raise BuildError(f"the host's AMD device nodes belong to two groups named {group}")
        out.group_ids[group] = st.st_gid
    for group, gid in sorted(out.group_ids.items()):
        out.notes.append(f"GPU: the image's {group} group gets the host's id {gid}, the group "
                         f"of the AMD device nodes")
    return out
