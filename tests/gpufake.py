"""A fake GPU host: device nodes made with mknod, stand-in driver libraries that the real
``ldconfig`` caches, a stand-in ``nvidia-smi``, the module's version file and, when asked, a
CDI spec from tests/fixtures/cdi. Used by the GPU unit and integration tests as the host root
of ``install --root DIR``; nothing of it is on the real host.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

from conftest import ROOT

CDI = ROOT / "tests" / "fixtures" / "cdi"
VERSION = "550.163.01"
OLD = "535.104.05"  # a previous driver's leftovers, which must not be bound
LIBDIR = "/usr/lib/x86_64-linux-gnu"
NODES = {"/dev/nvidia0": (195, 0), "/dev/nvidia1": (195, 1), "/dev/nvidiactl": (195, 255),
         "/dev/nvidia-modeset": (195, 254), "/dev/nvidia-uvm": (510, 0),
         "/dev/nvidia-uvm-tools": (510, 1), "/dev/nvidia-caps/nvidia-cap12": (237, 12),
         "/dev/nvidia-caps/nvidia-cap13": (237, 13),
         "/dev/kfd": (235, 0), "/dev/dri/renderD128": (226, 128),
         "/dev/dri/renderD129": (226, 129), "/dev/dri/card0": (226, 0)}
SMI = f"#!/bin/sh\necho 'NVIDIA-SMI {VERSION} (stand-in)'\n"


def stand_in_library(path: Path, soname: str, work: Path) -> None:
    """A real shared object with ``soname``, so ldconfig caches it as the driver's would be."""
    source = work / "stub.c"
    source.write_text("int nspawnbuild_stand_in(void) { return 42; }\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(path), f"-Wl,-soname,{soname}",
                    str(source)], check=True)


def make_host(root: Path, *, spec: str | None = None, render_gid: int = 992,
              render_mode: int = 0o660) -> Path:
    """A host root under ``root``: the nodes, driver files and ld.so.cache of driver VERSION."""
    work = root.parent / f"{root.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    for node, (major, minor) in NODES.items():
        path = root / node.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    for node in ("/dev/kfd", "/dev/dri/renderD128", "/dev/dri/renderD129"):
        os.chown(root / node.lstrip("/"), 0, render_gid)
        os.chmod(root / node.lstrip("/"), render_mode)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/group").write_text(f"root:x:0:\nvideo:x:44:\nrender:x:{render_gid}:\n")
    lib = root / LIBDIR.lstrip("/")
    for name in ("libcuda", "libnvidia-ml"):
        stand_in_library(lib / f"{name}.so.{VERSION}", f"{name}.so.1", work)
    stand_in_library(lib / f"libnvidia-opencl.so.{OLD}", "libnvidia-opencl.so.1", work)
    stand_in_library(lib / "libunrelated.so.3.1", "libunrelated.so.3", work)
    (root / "etc/ld.so.conf").write_text(f"{LIBDIR}\n")
    subprocess.run(["ldconfig", "-r", str(root)], check=True)
    smi = root / "usr/bin/nvidia-smi"
    smi.parent.mkdir(parents=True, exist_ok=True)
    smi.write_text(SMI)
    smi.chmod(0o755)
    firmware = root / f"lib/firmware/nvidia/{VERSION}"
    firmware.mkdir(parents=True)
    (firmware / "gsp_ga10x.bin").write_bytes(b"\0" * 16)
    version = root / "sys/module/nvidia/version"
    version.parent.mkdir(parents=True)
    version.write_text(f"{VERSION}\n")
    sock = root / "run/nvidia-persistenced/socket"
    sock.parent.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()
    if spec:
        (root / "etc/cdi").mkdir(parents=True, exist_ok=True)
        shutil.copy(CDI / spec, root / "etc/cdi" / spec)
    shutil.rmtree(work)
    return root
