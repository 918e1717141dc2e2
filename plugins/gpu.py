"""GPUs: NVIDIA (device binds, DeviceAllow=, a pinned user-space matching the host's kernel
module) and DRI (Intel/AMD, /dev/dri).

systemd-nspawn@.service runs with ``DevicePolicy=closed``: a GPU needs both the Bind= in a
trusted .nspawn and the DeviceAllow= in the unit drop-in. The NVIDIA user-space libraries in
the image must be the exact version of the host's kernel module, so the drop-in refuses to
start the container, naming both versions, when /sys/module/nvidia/version differs.
"""

from __future__ import annotations

from typing import Any

from nspawnbuild import hookimpl
from nspawnbuild.distro import Distro
from nspawnbuild.errors import BuildError
from nspawnbuild.features import fail
from nspawnbuild.recipe import Recipe
from nspawnbuild.rootfs import RootfsContext
from nspawnbuild.settings import Setting

NVIDIA_CONTROL = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
VERSION_FILE = "/sys/module/nvidia/version"
# systemd expands $ and % in ExecStartPre=: $$ is a literal $, %i the instance (machine) name
CHECK = ("/bin/sh -c 'want={want}; have=$$(cat {file} 2>/dev/null || echo none); "
         "[ \"$$have\" = \"$$want\" ] || {{ echo \"nspawnbuild: container %i has NVIDIA "
         "user-space $$want but the host kernel module is $$have; rebuild the image with "
         "[features.gpu-nvidia] driver_version = $$have\" >&2; exit 1; }}'")


@hookimpl
def nspawnbuild_feature_schemas() -> dict[str, Any]:
    return {
        "gpu-nvidia": {
            "type": "object", "additionalProperties": False, "required": ["driver_version"],
            "properties": {
                "driver_version": {
                    "type": "string", "pattern": r"^\d+\.\d+(\.\d+)?$",
                    "x-hint": "the host's `cat /sys/module/nvidia/version`, e.g. 535.309.01"},
                "devices": {"anyOf": [
                    {"const": "all"},
                    {"type": "array", "minItems": 1, "uniqueItems": True,
                     "items": {"type": "integer", "minimum": 0, "maximum": 63}}],
                    "x-hint": 'a list of GPU indices such as [0, 1], or "all" with count'},
                "count": {"type": "integer", "minimum": 1, "maximum": 64,
                          "description": 'how many GPUs the host has, with devices = "all"'},
                "check_host_version": {"type": "boolean"},
            },
        },
        "gpu-dri": {"type": "object", "additionalProperties": False, "properties": {}},
    }


def _nvidia_devices(table: dict[str, Any]) -> list[str]:
    devices = table.get("devices", [0])
    indices = range(table.get("count", 1)) if devices == "all" else devices
    return [f"/dev/nvidia{i}" for i in indices] + list(NVIDIA_CONTROL)


@hookimpl
def nspawnbuild_validate(recipe: Recipe) -> None:
    table = recipe.feature("gpu-nvidia")
    if table is None:
        return
    if table.get("devices") == "all" and "count" not in table:
        fail(recipe, "features.gpu-nvidia.count", 'devices = "all" needs count, the number of '
             "GPUs on the hosts", "see `nvidia-smi -L` on the host")
    from nspawnbuild.plan import make_distro

    distro = make_distro(recipe)
    try:
        distro.nvidia_packages(table["driver_version"])
    except NotImplementedError as e:
        fail(recipe, "features.gpu-nvidia", str(e))
    needed = distro.nonfree_component
    if needed and needed not in recipe.base.get("components", []):
        fail(recipe, "base.components", f"NVIDIA's user-space is in the '{needed}' component, "
             "which is not enabled", f'use components = ["main", "{needed}"]')


@hookimpl
def nspawnbuild_packages(recipe: Recipe, distro: Distro) -> list[str]:
    table = recipe.feature("gpu-nvidia")
    return distro.nvidia_packages(table["driver_version"]) if table else []


@hookimpl
def nspawnbuild_nspawn_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    out = []
    table = recipe.feature("gpu-nvidia")
    if table is not None:
        out += [Setting("Files", "Bind", dev, "gpu-nvidia") for dev in _nvidia_devices(table)]
    if recipe.feature("gpu-dri") is not None:
        out.append(Setting("Files", "Bind", "/dev/dri", "gpu-dri"))
    return out


@hookimpl
def nspawnbuild_unit_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    out = []
    table = recipe.feature("gpu-nvidia")
    if table is not None:
        out += [Setting("Service", "DeviceAllow", f"{dev} rw", "gpu-nvidia")
                for dev in _nvidia_devices(table)]
        if table.get("check_host_version", True):
            out.append(Setting("Service", "ExecStartPre",
                               CHECK.format(want=table["driver_version"], file=VERSION_FILE),
                               "gpu-nvidia"))
    if recipe.feature("gpu-dri") is not None:
        out.append(Setting("Service", "DeviceAllow", "char-drm rw", "gpu-dri"))
    return out


@hookimpl
def nspawnbuild_finalize_rootfs(ctx: RootfsContext) -> None:
    """Check that what was installed is the version the drop-in will demand of the host."""
    table = ctx.recipe.feature("gpu-nvidia")
    if table is None:
        return
    want = table["driver_version"]
    names = {ctx.distro.spec_name(p) for p in ctx.distro.nvidia_packages(want)}
    found = {p.name: p.version for p in ctx.distro.list_packages(ctx.root) if p.name in names}
    wrong = {n: v for n, v in found.items() if not ctx.distro.version_matches(v, want)}
    if wrong or len(found) != len(names):
        raise BuildError(f"NVIDIA user-space {want} was asked for but the image has "
                         f"{found or 'none of ' + ', '.join(sorted(names))}")
