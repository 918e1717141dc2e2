"""Networking: how the container is wired on the host (.nspawn [Network]) and how the guest
configures its side, the interface ``host0`` (systemd-networkd or ifupdown-style).

```toml
[features.network]
mode = "bridge"              # host | veth (default) | bridge | zone
bridge = "br0"
address = ["192.0.2.10/24", "2001:db8::10/64"]   # static; leave out for DHCP/SLAAC
gateway = ["192.0.2.1", "2001:db8::1"]
# uplink = "eth0"            # bridge: the host's uplink is moved onto the bridge; without it
#                              the bridge is a routed network of its own (NAT for IPv4)
```

The host's half (a networkd file for ``ve-NAME``, the bridge, forwarding, NAT) is written by
the build beside the image (``nspawnbuild.hostnet``), from the same values.

Which backends a distro can run, and the packages and service of each, are the distro's
``network`` traits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nspawnbuild.errors import Problem
from nspawnbuild.feature import AnyFeature, Feature, Tuples
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.netconf import (
    NETWORK_FILE,
    address_problem,
    interfaces_file,
    networkd_file,
    resolv_conf,
)
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.rootfs import RootfsContext
from nspawnbuild.settings import Setting

IFNAME = r"^[A-Za-z0-9_.-]{1,15}$"
__all__ = ["Network", "NetworkConfig", "interfaces_file", "networkd_file", "resolv_conf"]
ADDRESSES: dict[str, Any] = {"type": "array", "items": {"type": "string"}}


@dataclass(frozen=True)
class NetworkConfig(Tuples):
    """``[features.network]``. None means "not written": with mode "host", writing address,
    gateway, dhcp or ports at all is a mistake, so their absence is kept apart from a value."""

    mode: str = "veth"
    bridge: str | None = None
    zone: str | None = None
    #: bridge mode: the host interface moved onto the bridge (None: routed, NAT for IPv4)
    uplink: str | None = None
    ports: tuple[str, ...] | None = None
    #: None: DHCP unless static addresses are given
    dhcp: bool | None = None
    address: tuple[str, ...] | None = None
    gateway: tuple[str, ...] | None = None
    dns: tuple[str, ...] = ()
    required_for_online: str = "routable"
    #: None: the distro's default backend
    backend: str | None = None


@dataclass(frozen=True)
class NetworkTraits(Tuples):
    #: how the guest configures ``host0`` unless the recipe says: "networkd" or "ifupdown"
    backend: str = "networkd"
    #: the network backends the distro can run
    backends: tuple[str, ...] = ("networkd", "ifupdown")
    #: packages for the ifupdown backend, and its service
    ifupdown_packages: tuple[str, ...] = ("ifupdown",)
    ifupdown_service: str = "networking"
    #: packages systemd-networkd needs besides systemd (Fedora ships it separately)
    networkd_packages: tuple[str, ...] = ()


class Network(Feature[NetworkConfig, NetworkTraits]):
    """The container's wiring on the host and the guest's host0 (networkd or ifupdown)."""

    name = "network"
    config_class = NetworkConfig
    traits_class = NetworkTraits
    order = 40
    properties = {
        "mode": {"enum": ["host", "veth", "bridge", "zone"]},
        "bridge": {"type": "string", "pattern": IFNAME,
                   "x-hint": "an interface name of at most 15 characters"},
        "zone": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,12}$"},
        "uplink": {"type": "string", "pattern": IFNAME,
                   "x-hint": "the host's interface name, e.g. eth0"},
        "ports": {"type": "array", "items": {
            "type": "string", "pattern": r"^((tcp|udp):)?\d{1,5}(:\d{1,5})?$",
            "x-hint": "[tcp|udp:]HOSTPORT[:CONTAINERPORT], e.g. tcp:8080:80"}},
        "dhcp": {"type": "boolean"},
        "address": ADDRESSES,
        "gateway": ADDRESSES,
        "dns": ADDRESSES,
        "required_for_online": {"enum": ["routable", "degraded", "carrier", "no"]},
        "backend": {"enum": ["networkd", "ifupdown"]},
    }

    @property
    def backend(self) -> str:
        """The recipe's backend, else the distro's."""
        return self.config.backend or self.traits.backend

    def validate(self, recipe: Recipe[AnyFeature]) -> list[Problem]:
        c, sources = self.config, recipe.sources
        problems: list[Problem] = []
        if c.mode == "bridge" and c.bridge is None:
            problems.append(sources.problem("features.network.bridge",
                                            "mode 'bridge' needs the bridge's name",
                                            'add bridge = "br0" (the host bridge the container '
                                            'joins)'))
        if c.uplink is not None and c.mode != "bridge":
            problems.append(sources.problem("features.network.uplink", "uplink is the host "
                                            "interface moved onto a bridge: only with mode "
                                            "'bridge'", "remove it, or use mode = \"bridge\""))
        if c.mode == "zone" and c.zone is None:
            problems.append(sources.problem("features.network.zone", "mode 'zone' needs a zone name"))
        if c.mode == "host" and any(v is not None for v in (c.address, c.gateway, c.dhcp, c.ports)):
            problems.append(sources.problem(
                "features.network.mode", "with mode 'host' the container shares the host's "
                "interfaces: address, gateway, dhcp and ports do not apply",
                "remove them, or use veth"))
        backends = tuple(self.traits.backends)
        if c.mode != "host" and self.backend not in backends:
            problems.append(sources.problem(
                "features.network.backend", f"{recipe.distro.name} images cannot use "
                f"{self.backend}", f'use backend = "{backends[0]}" (or leave it out)'))
        for key, values, kind in (("address", c.address, "interface"),
                                  ("gateway", c.gateway, "address"), ("dns", c.dns, "address")):
            for i, value in enumerate(values or ()):
                why = address_problem(value, kind)
                if why:
                    problems.append(sources.problem(f"features.network.{key}",
                                                    f"entry {i} ({value!r}) is {why}"))
        if c.dhcp and c.address:
            problems.append(sources.problem("features.network.dhcp",
                                            "dhcp = true and static addresses exclude each other"))
        return problems

    def nspawn_settings(self, recipe: Recipe[AnyFeature]) -> list[Setting]:
        c = self.config
        out = {
            "host": [Setting("Network", "VirtualEthernet", "no", "network")],
            "veth": [Setting("Network", "VirtualEthernet", "yes", "network")],
            "bridge": [Setting("Network", "Bridge", c.bridge or "", "network")],
            "zone": [Setting("Network", "Zone", c.zone or "", "network")],
        }[c.mode]
        out += [Setting("Network", "Port", p, "network") for p in c.ports or ()]
        return out

    def packages(self, recipe: Recipe[AnyFeature]) -> list[str]:
        if self.config.mode == "host":
            return []
        distro = recipe.distro
        if self.backend == "ifupdown":
            return [distro.map_package(p) for p in self.traits.ifupdown_packages]
        resolved = [distro.map_package("systemd-resolved")] if self.config.dns else []
        return [*self.traits.networkd_packages, *resolved]

    def configure(self, ctx: RootfsContext) -> None:
        c = self.config
        if c.mode == "host":
            return
        if self.backend == "ifupdown":
            ctx.write_file("/etc/network/interfaces", interfaces_file(c))
            if c.dns:  # no resolved here: the name servers go to resolv.conf itself
                ctx.write_file("/etc/resolv.conf", resolv_conf(c.dns))
            ctx.enable_service(self.traits.ifupdown_service)
            return
        ctx.write_file(NETWORK_FILE, networkd_file(c))
        ctx.enable_service("systemd-networkd.service")
        if c.dns:
            ctx.enable_service("systemd-resolved.service")


@hookimpl
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    return [Network]
