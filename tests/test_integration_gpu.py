"""GPU images installed on a (fake) GPU host and booted: the host's driver bound in for real.

A real image with ``[features.gpu-nvidia] driver = "host"`` and ``[features.gpu-amd]`` is
built, installed with ``nspawnbuild install --root DIR`` on a fake host root (tests/gpufake.py:
the module's version file, AMD nodes of group render, and a CDI spec in the toolkit's format),
and booted with systemd-nspawn reading the installed ``.nspawn``. The spec's host paths point
into a directory of the test's own (stand-in libraries cached by ldconfig, a stand-in
``nvidia-smi``, nodes made with mknod), which the fake root reaches through a symlink, so that
the paths install writes are real on this machine and nspawn binds them. This machine has no
AMD GPU: the two AMD binds (/dev/kfd, /dev/dri) are left out of the copy nspawn boots with,
and what install did for AMD (the render group's id) is checked in the booted tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import booting
import pytest
import yaml
from gpufake import CDI, SMI, VERSION, make_host, stand_in_library
from test_integration_boot import cgroup, netns  # noqa: F401 (fixtures)

from conftest import Env

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("gcc"),
                                 reason="needs root and gcc")]

BASE = Path(__file__).resolve().parent.parent / "recipes" / "debian-base.toml"
LIB = "/usr/lib/x86_64-linux-gnu"
INSIDE = "/usr/lib/nvidia-host"  # where the container gets the driver's libraries


def driver_files(files: Path) -> None:
    """The host's driver, as the spec's host paths will name it: below ``files``."""
    files.mkdir()
    for name in ("libcuda", "libnvidia-ml"):
        stand_in_library(files / LIB.lstrip("/") / f"{name}.so.{VERSION}", f"{name}.so.1", files)
    (files / "stub.c").unlink()
    smi = files / "usr/bin/nvidia-smi"
    smi.parent.mkdir(parents=True)
    smi.write_text(SMI)
    smi.chmod(0o755)
    fw = files / f"lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin"
    fw.parent.mkdir(parents=True)
    fw.write_bytes(b"\0" * 16)


def spec_into(files: Path) -> dict[str, object]:
    """The fixture spec with the driver's files moved below ``files`` (container paths kept;
    the device nodes stay in /dev, all a unit's DeviceAllow= can name)."""
    doc = yaml.safe_load((CDI / "nvidia.yaml").read_text())
    for edits in [doc["containerEdits"]] + [d["containerEdits"] for d in doc["devices"]]:
        for mount in edits.get("mounts", []):
            mount["hostPath"] = f"{files}{mount['hostPath']}"
            # in the container, outside the linker's default directories: only the spec's
            # update-ldcache folder (our ld.so.conf file and boot unit) puts them in its cache
            mount["containerPath"] = mount["containerPath"].replace(LIB, INSIDE)
        for hook in edits.get("hooks", []):
            hook["args"] = [a.replace(LIB, INSIDE) for a in hook["args"]]
    return dict(doc)


def test_host_driver_image_installed_and_booted_finds_the_bound_driver(
        env: Env, netns: str, cgroup: str) -> None:  # noqa: F811 (fixtures)
    machine = f"nsbg-{uuid.uuid4().hex[:6]}"
    recipe = env.tmp / "gpu.toml"
    recipe.write_text(f'''extends = "{BASE}"
name = "{machine}"

[features.gpu-nvidia]
driver = "host"
devices = ["GPU-4b3c9d2e-1f0a-4e8b-9c7d-6a5b4c3d2e1f"]

[features.gpu-amd]
users = ["worker"]

[[features.users.accounts]]
name = "worker"

[features.private-users]
mode = "no"  # so that the container's render group is the host's: see README "GPU"

[audit]
allow = ["nspawn-private-users:{machine}.nspawn:PrivateUsers=no"]

[features.network]
mode = "host"
''')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    out = env.out / machine
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["host_needs"] == {
        "gpu-amd": {"nodes": "all"},
        "gpu-nvidia": {"driver": "host", "check": True,
                       "devices": ["GPU-4b3c9d2e-1f0a-4e8b-9c7d-6a5b4c3d2e1f"]}}
    assert not [p for p in manifest["packages"] if "nvidia" in p["name"] or "cuda" in p["name"]]
    built = (out / f"{machine}.nspawn").read_text()
    assert "nvidia" not in built and "Bind=/dev/kfd\n" in built

    files = env.tmp / "hostfiles"
    driver_files(files)
    root = make_host(env.tmp / "host", render_gid=992)
    (root / "etc/cdi").mkdir(parents=True)
    (root / "etc/cdi/nvidia.yaml").write_text(yaml.safe_dump(spec_into(files)))
    link = root / str(files).lstrip("/")  # the fake root sees the files where the host does
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(files)

    # what a host that installs by hand is told to add: the lines install then adds
    told = env.nspawnbuild("gpu-binds", str(out), "--root", str(root))
    assert told.returncode == 0, told.stdout + told.stderr

    r = env.nspawnbuild("install", str(out), "--root", str(root))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"GPU: bound the NVIDIA driver {VERSION} from the host's CDI spec" in r.stdout
    assert "GPU: hook not run (nspawn runs no OCI hooks): nvidia-ctk hook chmod" in r.stdout
    assert "GPU: the image's render group gets the host's id 992" in r.stdout
    installed = (root / f"etc/systemd/nspawn/{machine}.nspawn").read_text()
    assert installed.startswith(built)
    assert "Bind=/dev/nvidia0\n" in installed and "Bind=/dev/nvidiactl\n" in installed
    assert f"BindReadOnly={files}{LIB}/libcuda.so.{VERSION}:{INSIDE}/libcuda.so.{VERSION}\n" \
        in installed
    dropin_dir = root / f"etc/systemd/system/systemd-nspawn@{machine}.service.d"
    dropin = next(dropin_dir.glob("*.conf")).read_text()
    added = installed.removeprefix(built) + dropin.removeprefix(
        (out / f"systemd-nspawn@{machine}.service.d" / "50-nspawnbuild.conf").read_text())
    for line in added.splitlines():
        if line and not line.startswith("#"):
            assert line in told.stdout.splitlines(), line
    assert "# in the machine's /etc/group: give group render the id 992" in told.stdout
    assert "DeviceAllow=/dev/nvidia0 rw\n" in dropin and "want=550.163.01;" in dropin

    # systemd's own checks of the installed drop-in
    verify = subprocess.run(["systemd-analyze", "verify", f"systemd-nspawn@{machine}.service"],
                            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{root}/etc/systemd/system:"},
                            capture_output=True, text=True, timeout=120)
    assert verify.stderr == "", verify.stderr

    tree = root / "var/lib/machines" / machine
    group = {f[0]: f for f in (line.split(":") for line in (tree / "etc/group").read_text().split())}
    assert group["render"][2] == "992" and "worker" in group["render"][3].split(",")
    assert "worker" in group["video"][3].split(",")

    # The boot, with the installed .nspawn as it is but for the device nodes this machine
    # lacks: the AMD binds are left out, the NVIDIA nodes bound from the fake root's mknods.
    def boot_line(line: str) -> str:
        if line in ("Bind=/dev/kfd\n", "Bind=/dev/dri\n"):
            return ""
        if line.startswith("Bind=/dev/nvidia"):
            node = line.removeprefix("Bind=").strip()
            return f"Bind={root}{node}:{node}\n"
        return line

    trusted = Path("/run/systemd/nspawn") / f"{machine}.nspawn"
    trusted.parent.mkdir(parents=True, exist_ok=True)
    trusted.write_text("".join(boot_line(line) for line in installed.splitlines(keepends=True)))
    console = env.tmp / "console.log"
    boot = booting.start(tree, machine, netns, cgroup, console)
    try:
        log = booting.wait_booted(boot, console)
        assert f"{machine}.nspawn" not in log, log[-3000:]  # no complaint about the settings
        assert "FAILED" not in log, log[-3000:]  # ldconfig.service and ours both ran
        pids = subprocess.run(["pgrep", "-f", f"systemd-nspawn -b -D {tree}"],
                              capture_output=True, text=True).stdout.split()
        nspawn = [p for p in pids if Path(f"/proc/{p}/comm").read_text().strip()
                  == "systemd-nspawn"]
        assert len(nspawn) == 1, pids
        init = subprocess.run(["pgrep", "-P", nspawn[0]], capture_output=True,
                              text=True).stdout.split()
        assert len(init) == 1, init

        def inside(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["nsenter", "-t", init[0], "-a", *argv],
                                  capture_output=True, text=True, timeout=60)

        # our unit ran (its condition held: the ld.so.conf file install wrote) and succeeded
        unit = inside("systemctl", "show", "-p", "ConditionResult,Result,ExecMainStatus,"
                      "ExecMainExitTimestampMonotonic", "nspawnbuild-gpu-ldconfig.service").stdout
        props = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)
        assert props["ConditionResult"] == "yes" and props["Result"] == "success", unit
        assert props["ExecMainStatus"] == "0" and props["ExecMainExitTimestampMonotonic"] != "0"
        cache = inside("ldconfig", "-p").stdout
        assert f"libcuda.so.1 (libc6,x86-64) => {INSIDE}/libcuda.so.1" in cache, cache
        assert f"libnvidia-ml.so.1 (libc6,x86-64) => {INSIDE}/libnvidia-ml.so.1" in cache, cache
        assert inside("readlink", f"{INSIDE}/libcuda.so").stdout.strip() == "libcuda.so.1"
        assert inside("readlink", "-f", f"{INSIDE}/libcuda.so.1").stdout.strip() == \
            f"{INSIDE}/libcuda.so.{VERSION}"
        assert inside("/usr/bin/nvidia-smi").stdout.strip() == f"NVIDIA-SMI {VERSION} (stand-in)"
        assert inside("test", "-c", "/dev/nvidia0").returncode == 0
        assert inside("test", "-e", "/dev/nvidia1").returncode != 0  # not the chosen GPU
        # the spec's environment reaches the services, through the manager's defaults
        assert "NVIDIA_VISIBLE_DEVICES=void" in \
            inside("systemctl", "show-environment").stdout.splitlines()
        assert inside("getent", "group", "render").stdout.split(":")[2] == "992"
    finally:
        trusted.unlink(missing_ok=True)
        booting.stop(boot, 60)
