"""The host's half of the network (nspawnbuild.hostnet): which files each mode gets, what
they say, where --host-network puts them, and that the build records the network and lists
the files. The files themselves are applied on real hosts in tests/test_integration_vmhost.py
(networkd, sysctl, nft)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nspawnbuild import hostnet
from nspawnbuild.errors import RecipeError
from nspawnbuild.netconf import NetSpec
from nspawnbuild.pipeline import host_network_files
from nspawnbuild.plan import make_plan
from nspawnbuild.recipe.load import load_recipe

NET = "host/systemd/network"


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line and not line.startswith("#")]


def test_veth_with_static_addresses_gives_ve_link_the_gateways() -> None:
    spec = NetSpec(mode="veth", address=("192.0.2.10/28", "2001:db8::a/64"),
                   gateway=("192.0.2.1", "2001:db8::1"))
    files = hostnet.host_files("web", spec)
    assert set(files) == {f"{NET}/10-nspawnbuild-ve-web.network", hostnet.NOTE}
    body = lines(files[f"{NET}/10-nspawnbuild-ve-web.network"])
    assert "Name=ve-web" in body and "Driver=veth" in body
    assert [x for x in body if x.startswith("Address=")] == ["Address=192.0.2.1/28",
                                                             "Address=2001:db8::1/64"]
    assert "RequiredForOnline=no" in body  # the host's boot never waits for a container
    assert "10-nspawnbuild-ve-web.network  ->  /etc/systemd/network/" in files[hostnet.NOTE]


def test_veth_without_a_gateway_gets_only_the_note() -> None:
    files = hostnet.host_files("web", NetSpec(mode="veth", address=("192.0.2.10/28",)))
    assert list(files) == [hostnet.NOTE]
    assert "gateway" in files[hostnet.NOTE] and "ip addr add" in files[hostnet.NOTE]
    # a gateway of the other family has no prefix to take: left out, not guessed
    assert hostnet.host_side(NetSpec(address=("192.0.2.10/28",), gateway=("2001:db8::1",))) == []


def test_a_name_too_long_for_a_link_gets_no_file() -> None:
    spec = NetSpec(address=("192.0.2.10/28",), gateway=("192.0.2.1",))
    assert list(hostnet.host_files("a-very-long-name", spec)) == [hostnet.NOTE]


def test_routed_bridge_gets_bridge_forwarding_and_nat_for_ipv4_only() -> None:
    spec = NetSpec(mode="bridge", bridge="br-nsb", address=("192.0.2.50/28", "2001:db8::5:2/112"),
                   gateway=("192.0.2.49", "2001:db8::5:1"))
    files = hostnet.host_files("web", spec)
    assert set(files) == {f"{NET}/10-nspawnbuild-br-nsb.netdev",
                          f"{NET}/10-nspawnbuild-br-nsb.network", "host/ifupdown/br-nsb",
                          "host/sysctl.d/90-nspawnbuild-br-nsb.conf",
                          "host/nftables/nspawnbuild-br-nsb.nft",
                          "host/systemd/system/nspawnbuild-nat-br-nsb.service", hostnet.NOTE}
    assert lines(files[f"{NET}/10-nspawnbuild-br-nsb.netdev"]) == [
        "[NetDev]", "Name=br-nsb", "Kind=bridge", "[Bridge]", "STP=no", "ForwardDelaySec=0"]
    network = lines(files[f"{NET}/10-nspawnbuild-br-nsb.network"])
    assert "ConfigureWithoutCarrier=yes" in network  # no port yet: addresses all the same
    assert "Address=192.0.2.49/28" in network and "Address=2001:db8::5:1/112" in network
    stanza = lines(files["host/ifupdown/br-nsb"])
    assert stanza[:6] == ["auto br-nsb", "iface br-nsb inet static", "bridge-ports none",
                          "bridge-stp off", "bridge-fd 0", "address 192.0.2.49/28"]
    assert stanza[6:] == ["iface br-nsb inet6 static", "address 2001:db8::5:1/112"]
    assert lines(files["host/sysctl.d/90-nspawnbuild-br-nsb.conf"]) == [
        "net.ipv4.ip_forward = 1", "net.ipv6.conf.all.forwarding = 1"]
    nft = files["host/nftables/nspawnbuild-br-nsb.nft"]
    assert 'ip saddr 192.0.2.48/28 oifname != "br-nsb" masquerade' in nft
    assert "2001:db8" not in nft  # IPv6 is routed, never NATed
    # re-loading the file replaces the table (no rule added twice on a restart)
    assert lines(nft)[:2] == ["table ip nspawnbuild_br_nsb {}", "delete table ip nspawnbuild_br_nsb"]
    unit = lines(files["host/systemd/system/nspawnbuild-nat-br-nsb.service"])
    assert "ExecStart=/usr/sbin/nft -f /etc/nftables.d/nspawnbuild-br-nsb.nft" in unit
    assert "WantedBy=multi-user.target" in unit and "RemainAfterExit=yes" in unit


def test_ipv6_only_routed_bridge_has_no_nat() -> None:
    files = hostnet.host_files("web", NetSpec(mode="bridge", bridge="br0",
                                              address=("2001:db8::2/64",),
                                              gateway=("2001:db8::1",)))
    assert not any("nft" in f or f.endswith(".service") for f in files)
    assert lines(files["host/sysctl.d/90-nspawnbuild-br0.conf"]) == [
        "net.ipv6.conf.all.forwarding = 1"]
    assert lines(files["host/ifupdown/br0"])[1:3] == ["iface br0 inet6 static",
                                                      "bridge-ports none"]


def test_bridge_with_the_uplink_moved_onto_it() -> None:
    files = hostnet.host_files("web", NetSpec(mode="bridge", bridge="br0", uplink="eth0"))
    assert lines(files[f"{NET}/10-nspawnbuild-eth0-in-br0.network"]) == [
        "[Match]", "Name=eth0", "[Network]", "Bridge=br0"]
    assert "DHCP=yes" in lines(files[f"{NET}/10-nspawnbuild-br0.network"])
    assert "bridge-ports eth0" in lines(files["host/ifupdown/br0"])
    assert not any("sysctl" in f or "nft" in f for f in files)  # a switch, not a router
    assert "console" in files[hostnet.NOTE]


def test_zone_and_host_modes() -> None:
    zone = hostnet.host_files("web", NetSpec(mode="zone", zone="web"))
    assert list(zone) == [hostnet.NOTE]
    assert "80-container-vz.network" in zone[hostnet.NOTE] and "vz-web" in zone[hostnet.NOTE]
    assert hostnet.host_files("web", NetSpec(mode="host")) == {}


def test_apply_under_a_root_writes_below_etc_and_says_what_it_did_not_apply(
        tmp_path: Path) -> None:
    spec = NetSpec(mode="bridge", bridge="br-nsb", address=("192.0.2.50/28",),
                   gateway=("192.0.2.49",))
    said: list[str] = []
    hostnet.apply(hostnet.host_files("web", spec), tmp_path, live=False, uplink=None,
                  say=said.append)
    for path in ("etc/systemd/network/10-nspawnbuild-br-nsb.netdev",
                 "etc/systemd/network/10-nspawnbuild-br-nsb.network",
                 "etc/sysctl.d/90-nspawnbuild-br-nsb.conf", "etc/nftables.d/nspawnbuild-br-nsb.nft",
                 "etc/systemd/system/nspawnbuild-nat-br-nsb.service"):
        assert (tmp_path / path).is_file(), path
        assert (tmp_path / path).stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "etc/network").exists()  # the ifupdown stanza is the alternative
    assert any("not installed: host/ifupdown/br-nsb" in s for s in said), said
    assert said[-1] == "host network not applied: systemd does not run for this root"


def test_apply_refuses_to_move_the_uplink_and_a_symlink_out_of_root(tmp_path: Path) -> None:
    files = hostnet.host_files("web", NetSpec(mode="bridge", bridge="br0", uplink="eth0"))
    with pytest.raises(RecipeError, match="cuts the link"):
        hostnet.apply(files, tmp_path, live=True, uplink="eth0", say=print)
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "etc/systemd").mkdir(parents=True)
    (root / "etc/systemd/network").symlink_to(outside)
    veth = hostnet.host_files("web", NetSpec(address=("192.0.2.10/28",), gateway=("192.0.2.1",)))
    with pytest.raises(RecipeError, match="outside"):
        hostnet.apply(veth, root, live=False, uplink=None, say=print)
    assert list(outside.iterdir()) == []


def test_the_build_records_the_network_and_writes_its_host_files(tmp_path: Path) -> None:
    recipe = tmp_path / "web.toml"
    recipe.write_text('[base]\ndistro = "debian"\n\n[features.network]\nmode = "bridge"\n'
                      'bridge = "br-nsb"\naddress = ["192.0.2.50/28"]\ngateway = ["192.0.2.49"]\n')
    spec = make_plan(load_recipe(str(recipe))).manifest
    assert spec["network"]["mode"] == "bridge" and spec["network"]["address"] == ["192.0.2.50/28"]
    files = host_network_files(spec)
    assert "host/nftables/nspawnbuild-br-nsb.nft" in files and hostnet.NOTE in files
    plain = tmp_path / "plain.toml"
    plain.write_text('[base]\ndistro = "debian"\n')
    spec = make_plan(load_recipe(str(plain))).manifest
    assert "network" not in spec and host_network_files(spec) == {}


def test_uplink_only_with_a_bridge(tmp_path: Path) -> None:
    recipe = tmp_path / "web.toml"
    recipe.write_text('[base]\ndistro = "debian"\n\n[features.network]\nuplink = "eth0"\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(str(recipe))
    assert any(p.key == "features.network.uplink" and "only with mode 'bridge'" in p.message
               for p in info.value.problems), info.value.problems
