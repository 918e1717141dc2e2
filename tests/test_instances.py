"""One image installed as several machines (nspawnbuild.instance, install --name/--address):
each tree gets its own hostname, hosts and host0 addresses, written inside the tree (never
through one of its symlinks), the host-side file matches the instance, an update keeps the
instance's settings, bad values exit 2 with nothing written. The real CLI with --root and
the real systemd-import, as in tests/test_hostile_install.py; the running machines are in
tests/test_integration_vmhost.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_hostile_install import EOF_BLOCKS, NAME, _member, make_artifact, write_sums, zstd

from conftest import BIN
from nspawnbuild.netconf import NETWORK_FILE, NetSpec, networkd_file

RECIPE_NET = NetSpec(mode="veth", address=("192.0.2.10/28",), gateway=("192.0.2.1",))
HOSTS = "127.0.0.1\tlocalhost\n127.0.1.1\tnbhostile\n::1\t\tlocalhost ip6-localhost\n"


def tree_tar(*extra: bytes, hosts: bytes | None = None) -> bytes:
    members = [_member("."), _member("./etc"), _member("./etc/os-release", b"ID=nb\n"),
               _member("./usr"), _member("./usr/lib"), _member("./usr/lib/os-release", b"ID=x\n"),
               _member("./etc/hostname", f"{NAME}\n".encode()),
               hosts if hosts is not None else _member("./etc/hosts", HOSTS.encode()),
               _member("./etc/systemd"), _member("./etc/systemd/network"),
               _member("." + NETWORK_FILE, networkd_file(RECIPE_NET).encode()), *extra]
    return zstd([b"".join(members) + EOF_BLOCKS])


def artifact(tmp_path: Path, tarball: bytes | None = None, *,
             network: NetSpec | None = RECIPE_NET) -> Path:
    art = make_artifact(tmp_path / "art", tarball=tarball or tree_tar())
    doc = json.loads((art / "manifest.json").read_text())
    if network is not None:
        doc["network"] = network.as_dict()
    (art / "manifest.json").write_text(json.dumps(doc))
    write_sums(art, [f.split("  ", 1)[1] for f in (art / "SHA256SUMS").read_text().splitlines()])
    return art


def install(art: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nspawnbuild"), "install", str(art), "--root", str(root),
                           *extra], capture_output=True, text=True, timeout=120)


def etc(root: Path, name: str, path: str) -> str:
    return (root / "var/lib/machines" / name / path.lstrip("/")).read_text()


def test_two_instances_of_one_image_each_with_its_name_and_addresses(tmp_path: Path) -> None:
    art, root = artifact(tmp_path), tmp_path / "host"
    r = install(art, root, "--name", "web2", "--address", "192.0.2.18/28", "--gateway",
                "192.0.2.17", "--address", "2001:db8::2:2/112", "--gateway", "2001:db8::2:1",
                "--host-network")
    assert r.returncode == 0, r.stderr
    r3 = install(art, root, "--name", "web3", "--address", "192.0.2.34/28", "--gateway",
                 "192.0.2.33", "--host-network")
    assert r3.returncode == 0, r3.stderr
    for name, addr, gw in (("web2", "192.0.2.18/28", "192.0.2.17"),
                           ("web3", "192.0.2.34/28", "192.0.2.33")):
        assert etc(root, name, "/etc/hostname") == f"{name}\n"
        hosts = etc(root, name, "/etc/hosts").splitlines()
        assert f"127.0.1.1\t{name}" in hosts and "127.0.0.1\tlocalhost" in hosts
        assert not any(NAME in line for line in hosts)  # the recipe's name is gone
        net = etc(root, name, NETWORK_FILE).splitlines()
        assert f"Address={addr}" in net and f"Gateway={gw}" in net
        assert "Address=192.0.2.10/28" not in net
        host_side = (root / f"etc/systemd/network/10-nspawnbuild-ve-{name}.network").read_text()
        assert f"Name=ve-{name}" in host_side
        assert f"Address={gw}/28" in host_side.splitlines()
    assert "Address=2001:db8::2:1/112" in (
        root / "etc/systemd/network/10-nspawnbuild-ve-web2.network").read_text()
    assert "host network not applied: systemd does not run for this root" in r.stdout
    record = json.loads((root / "etc/nspawnbuild/instances/web2.json").read_text())
    assert record["address"] == ["192.0.2.18/28", "2001:db8::2:2/112"]
    # the image's own name, untouched by its instances: installed as itself it is the recipe's
    assert install(art, root).returncode == 0
    assert etc(root, NAME, "/etc/hostname") == f"{NAME}\n"
    assert "Address=192.0.2.10/28" in etc(root, NAME, NETWORK_FILE)


def test_an_update_keeps_the_instances_settings(tmp_path: Path) -> None:
    art, root = artifact(tmp_path), tmp_path / "host"
    assert install(art, root, "--name", "web2", "--address", "192.0.2.18/28",
                   "--gateway", "192.0.2.17").returncode == 0
    r = install(art, root, "--name", "web2", "--force")  # no --address: the recorded ones
    assert r.returncode == 0, r.stderr
    net = etc(root, "web2", NETWORK_FILE)
    assert "Address=192.0.2.18/28" in net and "Gateway=192.0.2.17" in net, net
    r = install(art, root, "--name", "web2", "--force", "--address", "192.0.2.19/28")
    assert r.returncode == 0, r.stderr  # a new address replaces it, the gateway stays
    net = etc(root, "web2", NETWORK_FILE)
    assert "Address=192.0.2.19/28" in net and "Address=192.0.2.18/28" not in net
    assert "Gateway=192.0.2.17" in net


def test_bridge_instance_gets_its_own_nspawn_wiring(tmp_path: Path) -> None:
    art, root = artifact(tmp_path), tmp_path / "host"
    (art / f"{NAME}.nspawn").write_text("[Exec]\nPrivateUsers=pick\n\n[Network]\n"
                                        "VirtualEthernet=yes\nPort=tcp:2222:22\n")
    write_sums(art, [f.split("  ", 1)[1] for f in (art / "SHA256SUMS").read_text().splitlines()])
    r = install(art, root, "--name", "nat1", "--bridge", "br-nsb", "--address", "192.0.2.50/28",
                "--gateway", "192.0.2.49", "--host-network")
    assert r.returncode == 0, r.stderr
    nspawn = (root / "etc/systemd/nspawn/nat1.nspawn").read_text().splitlines()
    assert "Bridge=br-nsb" in nspawn and "VirtualEthernet=yes" not in nspawn
    assert "Port=tcp:2222:22" in nspawn and "PrivateUsers=pick" in nspawn
    assert (root / "etc/nftables.d/nspawnbuild-br-nsb.nft").is_file()
    assert (root / "etc/sysctl.d/90-nspawnbuild-br-nsb.conf").is_file()


@pytest.mark.parametrize("args,option,words", [
    (["--address", "192.0.2.300/24"], "--address", "not an address with prefix"),
    (["--address", "192.0.2.3"], "--address", "not an address with prefix"),
    (["--gateway", "gw.example"], "--gateway", "not an address"),
    (["--dns", "192.0.2.1/24"], "--dns", "not an address"),
    (["--bridge", "br/../x"], "--bridge", "not an interface name"),
])
def test_bad_values_exit_2_with_nothing_written(tmp_path: Path, args: list[str], option: str,
                                                words: str) -> None:
    root = tmp_path / "host"
    r = install(artifact(tmp_path), root, "--name", "web2", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert option in r.stderr and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not root.exists()


def test_addresses_for_an_image_without_a_network_of_its_own(tmp_path: Path) -> None:
    root = tmp_path / "host"
    r = install(artifact(tmp_path, network=None), root, "--address", "192.0.2.18/28")
    assert r.returncode == 2 and "no network feature" in r.stderr, r.stderr
    assert not (root / "var/lib/machines" / NAME).exists()
    r = install(artifact(tmp_path / "h", network=NetSpec(mode="host")), root,
                "--address", "192.0.2.18/28")
    assert r.returncode == 2 and "mode 'host'" in r.stderr, r.stderr


def test_the_trees_symlinks_never_lead_the_writes_out(tmp_path: Path) -> None:
    """/etc/hosts and /etc/hostname planted as symlinks to host paths (absolute and with ..):
    resolved inside the tree, the writes land in it and the host files stay as they were."""
    victim_hosts, victim_name = tmp_path / "victim-hosts", tmp_path / "victim-hostname"
    victim_hosts.write_text("host's own\n")
    victim_name.write_text("host's own\n")
    import tarfile
    hosts = _member("./etc/hosts", kind=tarfile.SYMTYPE, link=str(victim_hosts))
    tar = b"".join([_member("."), _member("./etc"), _member("./etc/os-release", b"ID=nb\n"),
                    _member("./usr"), _member("./usr/lib"),
                    _member("./usr/lib/os-release", b"ID=x\n"), hosts,
                    _member("./etc/hostname", kind=tarfile.SYMTYPE,
                            link="../../../../../../../.." + str(victim_name)),
                    _member("./etc/systemd"), _member("./etc/systemd/network"),
                    _member("." + NETWORK_FILE, networkd_file(RECIPE_NET).encode())])
    root = tmp_path / "host"
    r = install(artifact(tmp_path, zstd([tar + EOF_BLOCKS])), root, "--name", "web2",
                "--address", "192.0.2.18/28")
    assert r.returncode == 0, r.stderr
    assert victim_hosts.read_text() == "host's own\n"
    assert victim_name.read_text() == "host's own\n"
    tree = root / "var/lib/machines/web2"
    assert (tree / str(victim_hosts).lstrip("/")).read_text().startswith("127.0.0.1")
    assert (tree / str(victim_name).lstrip("/")).read_text() == "web2\n"
