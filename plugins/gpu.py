"""GPUs: NVIDIA (device binds, DeviceAllow=, a pinned user-space matching the host's kernel
module) and DRI (Intel/AMD, /dev/dri).

systemd-nspawn@.service runs with ``DevicePolicy=closed``: a GPU needs both the Bind= in a
trusted .nspawn and the DeviceAllow= in the unit drop-in. The NVIDIA user-space libraries in
the image must be the exact version of the host's kernel module, so the drop-in refuses to
start the container, naming both versions, when /sys/module/nvidia/version differs.

Which packages carry NVIDIA's user-space is the distro's ``gpu-nvidia`` trait ``packages``:
install specs with ``{version}`` (the driver version) and ``{branch}`` (its first component)
filled in, spelt the Debian way (``name=1.2-*``, ``spec_style = "deb"``) or the RPM way
(``name-1.2``, ``"rpm"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from nspawnbuild.errors import BuildError, Problem
from nspawnbuild.feature import AnyFeature, Feature, NoConfig, NoTraits, Tuples
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.rootfs import RootfsContext
from nspawnbuild.settings import Setting

NVIDIA_CONTROL = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
VERSION_FILE = "/sys/module/nvidia/version"
# systemd expands $ and % in ExecStartPre=: $$ is a literal $, %i the instance (machine) name
CHECK = ("/bin/sh -c 'want={want}; have=$$(cat {file} 2>/dev/null || echo none); "
         "[ \"$$have\" = \"$$want\" ] || {{ echo \"nspawnbuild: container %i has NVIDIA "
         "user-space $$want but the host kernel module is $$have; rebuild the image with "
         "[features.gpu-nvidia] driver_version = $$have\" >&2; exit 1; }}'")


@dataclass(frozen=True)
class NvidiaConfig(Tuples):
    driver_version: str
    devices: Literal["all"] | tuple[int, ...] = (0,)
    #: how many GPUs the host has, with devices = "all"
    count: int | None = None
    check_host_version: bool = True

    def device_nodes(self) -> list[str]:
        """The /dev nodes the container gets: the chosen GPUs and the control nodes."""
        indices = range(self.count or 1) if self.devices == "all" else self.devices
        return [f"/dev/nvidia{i}" for i in indices] + list(NVIDIA_CONTROL)


@dataclass(frozen=True)
class NvidiaTraits(Tuples):
    #: install specs of NVIDIA's user-space, with {version} and {branch} to fill in
    packages: tuple[str, ...] = ()
    #: why the distro cannot have NVIDIA's user-space at all ("" = it can)
    unsupported: str = ""
    #: the archive component that must be enabled for NVIDIA's user-space, if any
    nonfree_component: str | None = None
    #: how a spec names its package: "deb" (``name=version``) or "rpm" (``name-version``)
    spec_style: str = "deb"


def spec_name(spec: str, style: str) -> str:
    """The package name in an install spec with a pinned version."""
    return spec.rsplit("-", 1)[0] if style == "rpm" else spec.split("=")[0]


def version_matches(installed: str, wanted: str) -> bool:
    """Whether an installed version (as ``list_packages`` gives it) is upstream ``wanted``."""
    return installed.split(":", 1)[-1].startswith(f"{wanted}-")


class GpuNvidia(Feature[NvidiaConfig, NvidiaTraits]):
    """NVIDIA GPUs: device binds and DeviceAllow=, the user-space pinned to the host's module."""

    name = "gpu-nvidia"
    config_class = NvidiaConfig
    traits_class = NvidiaTraits
    order = 60
    required = ("driver_version",)
    properties = {
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
    }

    def specs(self) -> list[str]:
        """The install specs of the user-space, pinned to ``driver_version``."""
        version = self.config.driver_version
        return [spec.format(version=version, branch=version.split(".")[0])
                for spec in self.traits.packages]

    def validate(self, recipe: Recipe[AnyFeature]) -> list[Problem]:
        sources = recipe.sources
        problems: list[Problem] = []
        if self.config.devices == "all" and self.config.count is None:
            problems.append(sources.problem(
                "features.gpu-nvidia.count", 'devices = "all" needs count, the number of '
                "GPUs on the hosts", "see `nvidia-smi -L` on the host"))
        if self.traits.unsupported:
            problems.append(sources.problem("features.gpu-nvidia", self.traits.unsupported))
        elif not self.traits.packages:
            problems.append(sources.problem(
                "features.gpu-nvidia",
                f"{recipe.distro.name} has no NVIDIA user-space packages configured"))
        needed = self.traits.nonfree_component
        if needed and needed not in recipe.distro.components():
            problems.append(sources.problem(
                "base.components", f"NVIDIA's user-space is in the '{needed}' component, "
                "which is not enabled", f'use components = ["main", "{needed}"]'))
        return problems

    def packages(self, recipe: Recipe[AnyFeature]) -> list[str]:
        return self.specs()

    def nspawn_settings(self, recipe: Recipe[AnyFeature]) -> list[Setting]:
        return [Setting("Files", "Bind", dev, "gpu-nvidia") for dev in self.config.device_nodes()]

    def unit_settings(self, recipe: Recipe[AnyFeature]) -> list[Setting]:
        out = [Setting("Service", "DeviceAllow", f"{dev} rw", "gpu-nvidia")
               for dev in self.config.device_nodes()]
        if self.config.check_host_version:
            out.append(Setting("Service", "ExecStartPre",
                               CHECK.format(want=self.config.driver_version, file=VERSION_FILE),
                               "gpu-nvidia"))
        return out

    def finalize(self, ctx: RootfsContext) -> None:
        """Check that what was installed is the version the drop-in will demand of the host."""
        want = self.config.driver_version
        names = {spec_name(p, self.traits.spec_style) for p in self.specs()}
        found = {p.name: p.version for p in ctx.distro.list_packages(ctx.root) if p.name in names}
        wrong = {n: v for n, v in found.items() if not version_matches(v, want)}
        if wrong or len(found) != len(names):
            raise BuildError(f"NVIDIA user-space {want} was asked for but the image has "
                             f"{found or 'none of ' + ', '.join(sorted(names))}")


class GpuDri(Feature[NoConfig, NoTraits]):
    """Intel and AMD GPUs: /dev/dri bound in, the DRM device class allowed."""

    name = "gpu-dri"
    order = 61

    def nspawn_settings(self, recipe: Recipe[AnyFeature]) -> list[Setting]:
        return [Setting("Files", "Bind", "/dev/dri", "gpu-dri")]

    def unit_settings(self, recipe: Recipe[AnyFeature]) -> list[Setting]:
        return [Setting("Service", "DeviceAllow", "char-drm rw", "gpu-dri")]


@hookimpl
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    return [GpuNvidia, GpuDri]
