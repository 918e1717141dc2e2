"""Networking: how the container is wired on the host (.nspawn [Network]) and how the guest
configures its side, the interface ``host0`` (systemd-networkd or ifupdown-style).

```toml
[features.network]
mode = "bridge"              # host | veth (default) | bridge | zone
bridge = "br0"
address = ["192.0.2.10/24", "2001:db8::10/64"]   # static; leave out for DHCP/SLAAC
gateway = ["192.0.2.1", "2001:db8::1"]
```
"""

from __future__ import annotations

import ipaddress
from typing import Any

from nspawnbuild import hookimpl
from nspawnbuild.distro import Distro
from nspawnbuild.features import fail
from nspawnbuild.recipe import Recipe
from nspawnbuild.rootfs import RootfsContext
from nspawnbuild.settings import Setting

IFNAME = r"^[A-Za-z0-9_.-]{1,15}$"
NETWORK_FILE = "/etc/systemd/network/10-nspawnbuild-host0.network"


@hookimpl
def nspawnbuild_feature_schemas() -> dict[str, Any]:
    addresses = {"type": "array", "items": {"type": "string"}}
    return {"network": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "mode": {"enum": ["host", "veth", "bridge", "zone"]},
            "bridge": {"type": "string", "pattern": IFNAME,
                       "x-hint": "an interface name of at most 15 characters"},
            "zone": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,12}$"},
            "ports": {"type": "array", "items": {
                "type": "string", "pattern": r"^((tcp|udp):)?\d{1,5}(:\d{1,5})?$",
                "x-hint": "[tcp|udp:]HOSTPORT[:CONTAINERPORT], e.g. tcp:8080:80"}},
            "dhcp": {"type": "boolean"},
            "address": addresses,
            "gateway": addresses,
            "dns": addresses,
            "required_for_online": {"enum": ["routable", "degraded", "carrier", "no"]},
            "backend": {"enum": ["networkd", "ifupdown"]},
        },
    }}


def _table(recipe: Recipe) -> dict[str, Any] | None:
    return recipe.feature("network")


def _backend(table: dict[str, Any], distro: Distro) -> str:
    return table.get("backend", distro.network_backend)


@hookimpl
def nspawnbuild_validate(recipe: Recipe) -> None:
    table = _table(recipe)
    if table is None:
        return
    mode = table.get("mode", "veth")
    if mode == "bridge" and "bridge" not in table:
        fail(recipe, "features.network.bridge", "mode 'bridge' needs the bridge's name",
             'add bridge = "br0" (the host bridge the container joins)')
    if mode == "zone" and "zone" not in table:
        fail(recipe, "features.network.zone", "mode 'zone' needs a zone name")
    if mode == "host" and any(k in table for k in ("address", "gateway", "dhcp", "ports")):
        fail(recipe, "features.network.mode", "with mode 'host' the container shares the host's "
             "interfaces: address, gateway, dhcp and ports do not apply", "remove them, or use veth")
    if table.get("ports") and mode == "host":
        fail(recipe, "features.network.ports", "port forwarding needs a private network: "
             "mode 'veth', 'bridge' or 'zone'")
    from nspawnbuild.plan import make_distro

    distro = make_distro(recipe)
    backend = _backend(table, distro)
    if mode != "host" and backend not in distro.network_backends:
        fail(recipe, "features.network.backend", f"{distro.name} images cannot use {backend}",
             f"use backend = \"{distro.network_backends[0]}\" (or leave it out)")
    for key, kind in (("address", "interface"), ("gateway", "address"), ("dns", "address")):
        for i, value in enumerate(table.get(key, [])):
            try:
                if kind == "interface":
                    ipaddress.ip_interface(value)
                    if "/" not in value:
                        raise ValueError("no prefix length")
                else:
                    ipaddress.ip_address(value)
            except ValueError:
                want = "an address with prefix, e.g. 192.0.2.10/24" if kind == "interface" \
                    else "an address, e.g. 192.0.2.1"
                fail(recipe, f"features.network.{key}", f"entry {i} ({value!r}) is not {want}")
    if table.get("dhcp") and table.get("address"):
        fail(recipe, "features.network.dhcp", "dhcp = true and static addresses exclude each other")


@hookimpl
def nspawnbuild_nspawn_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    table = _table(recipe)
    if table is None:
        return []
    mode = table.get("mode", "veth")
    out = {
        "host": [Setting("Network", "VirtualEthernet", "no", "network")],
        "veth": [Setting("Network", "VirtualEthernet", "yes", "network")],
        "bridge": [Setting("Network", "Bridge", table.get("bridge", ""), "network")],
        "zone": [Setting("Network", "Zone", table.get("zone", ""), "network")],
    }[mode]
    out += [Setting("Network", "Port", p, "network") for p in table.get("ports", [])]
    return out


@hookimpl
def nspawnbuild_packages(recipe: Recipe, distro: Distro) -> list[str]:
    table = _table(recipe)
    if table is None or table.get("mode", "veth") == "host":
        return []
    if _backend(table, distro) == "ifupdown":
        return [distro.map_package(p) for p in distro.ifupdown_packages]
    resolved = [distro.map_package("systemd-resolved")] if table.get("dns") else []
    return [*distro.networkd_packages, *resolved]


def networkd_file(table: dict[str, Any]) -> str:
    lines = ["# Generated by nspawnbuild from the recipe's [features.network]",
             "[Match]", "Name=host0", "", "[Link]",
             f"RequiredForOnline={table.get('required_for_online', 'routable')}", "", "[Network]"]
    static = table.get("address", [])
    if not static and table.get("dhcp", True):
        lines += ["DHCP=yes", "IPv6AcceptRA=yes"]
    elif not static:
        lines += ["DHCP=no", "IPv6AcceptRA=no", "LinkLocalAddressing=yes"]
    else:
        lines += ["DHCP=no", "IPv6AcceptRA=no"]
        lines += [f"Address={a}" for a in static]
        lines += [f"Gateway={g}" for g in table.get("gateway", [])]
    lines += [f"DNS={d}" for d in table.get("dns", [])]
    return "\n".join(lines) + "\n"


def resolv_conf(servers: list[str]) -> str:
    """The recipe's name servers, for guests without systemd-resolved (the ifupdown backend)."""
    return "# Generated by nspawnbuild from [features.network] dns\n" + "".join(
        f"nameserver {s}\n" for s in servers)


def interfaces_file(table: dict[str, Any]) -> str:
    """ifupdown / ifupdown-ng syntax, as in the field guide."""
    lines = ["# Generated by nspawnbuild from the recipe's [features.network]",
             "auto lo", "iface lo inet loopback", "", "auto host0"]
    static = table.get("address", [])
    if not static and table.get("dhcp", True):
        lines += ["iface host0 inet dhcp", "iface host0 inet6 auto"]
    elif not static:
        lines += ["iface host0 inet manual"]
    for family in (4, 6):
        addrs = [a for a in static if ipaddress.ip_interface(a).version == family]
        gws = [g for g in table.get("gateway", []) if ipaddress.ip_address(g).version == family]
        if not addrs:
            continue
        lines.append(f"iface host0 inet{'6' if family == 6 else ''} static")
        lines += [f"    address {a}" for a in addrs]
        lines += [f"    gateway {g}" for g in gws[:1]]
    return "\n".join(lines) + "\n"


@hookimpl
def nspawnbuild_configure_rootfs(ctx: RootfsContext) -> None:
    table = _table(ctx.recipe)
    if table is None or table.get("mode", "veth") == "host":
        return
    if _backend(table, ctx.distro) == "ifupdown":
        ctx.write_file("/etc/network/interfaces", interfaces_file(table))
        if table.get("dns"):  # no resolved here: the name servers go to resolv.conf itself
            ctx.write_file("/etc/resolv.conf", resolv_conf(table["dns"]))
        ctx.enable_service(ctx.distro.ifupdown_service)
        return
    ctx.write_file(NETWORK_FILE, networkd_file(table))
    ctx.enable_service("systemd-networkd.service")
    if table.get("dns"):
        ctx.enable_service("systemd-resolved.service")
