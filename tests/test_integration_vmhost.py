"""Real target hosts: Debian 12 (systemd 252) and Debian 13 (systemd 257, importctl) booted as
QEMU VMs (tests/vm/harness.py), where machined and importd run as a host's PID 1 runs them.

On each, over ssh as root: the README's install commands as written (taken from the README at
run time, only the artifact directory replaced), ``nspawnbuild install DIR --start`` with
nspawnbuild itself run inside the VM, ``machinectl pull-tar`` from a loopback HTTP server on
the build host with ``--verify=checksum`` and with the default ``--verify=signature`` (a
signed set accepted, a forged one refused), and a veth container with a static address reached
over ssh from the VM host with only the host-side file the build generated installed
(``install --host-network``, no hand-typed ``ip addr``). Each scenario checks what the host
reports, not only exit codes.

Then ``nspawnbuild install URL`` of the signed set as a second instance of the same image
(``--name web2 --address ...``), both instances answering ssh from the host with their own
names and addresses (a forged set refused); an instance on a routed bridge with NAT for IPv4
and IPv6 routed, from the generated files, reaching a second host behind the VM host (a
network namespace with no route back to the containers: only the NAT answers it over IPv4);
and the update path: ``--force`` refused while the machine runs, ``--restart`` replacing it
with its ``state`` kept, and a new set that does not start rolled back to the old image, which
runs again. And on every host, a signed ``.tar.zst`` set pulled with the default verification:
taken from systemd 258, refused below it.

CI boots the Debian 12 and 13 hosts; ``NSPAWNBUILD_VM_HOSTS`` chooses others of
``harness.ALL_HOSTS``: Debian sid (systemd >= 258) and Ubuntu 24.04 (systemd 255).

Network: the Debian mirror for the builds; then loopback on the build host, and inside the VM
only 192.0.2.128/25 (slirp, see the harness) and, for the containers and the second host, /28s
of 192.0.2.0/25 and /112s of 2001:db8::/64 (the ``NETS`` below).
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_integration_sign import _other_tarball, _resum
from test_signing import Key, gpg, make_key
from vm import harness

from conftest import ROOT, Env

pytestmark = [pytest.mark.integration, pytest.mark.vm]

GUEST = "vmguest"  # the veth image, signed, gzip (the default: pullable by systemd < 258)
TARBALL = f"{GUEST}.tar.gz"
ZSTD_TARBALL = f"{GUEST}.tar.zst"
STATE = "/var/lib/app"  # the guest recipe's state = [...]
# the lower half of 192.0.2.0/24 (slirp has the upper) in /28s, and /112s of 2001:db8::/64:
GUEST_ADDRESS, VE_ADDRESS = "192.0.2.10", "192.0.2.1"  # container, the VM host's ve- side
WEB2_ADDRESS, WEB2_GATEWAY = "192.0.2.18", "192.0.2.17"  # a second instance of the guest
NAT_ADDRESSES, NAT_GATEWAYS = ("192.0.2.50/28", "2001:db8::5:2/112"), ("192.0.2.49", "2001:db8::5:1")
BRIDGE = "br-nsb"
#: the second host behind the VM host: its link's host side and its own address, per family
FAR_V4, FAR_V6 = ("192.0.2.97", "192.0.2.98"), ("2001:db8::9:1", "2001:db8::9:2")
FAR_PORT = 7777
README_IMAGE = "debian-base"  # the README's commands are written for recipes/debian-base.toml
PAYLOAD = "/mnt/payload"
#: free space on the payload disk for the artifacts copied onto it (a sparse file)
PAYLOAD_ROOM = 1 << 30

def readme_install_commands() -> str:
    """The first ``sh`` block of the README's "Installing an image on a host", as written."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Installing an image on a host\n", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m, "README: no sh block under 'Installing an image on a host'"
    return m.group(1)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vmhost")


@pytest.fixture(scope="module")
def ssh_key(work: Path) -> Path:
    """This run's key pair: root's in the VM hosts (through the payload) and in the guest."""
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nsb-vmtest", "-f",
                    str(key)], check=True)
    return key


@pytest.fixture(scope="module")
def signer(work: Path) -> Iterator[Key]:
    key = make_key(work, "signer")
    yield key
    subprocess.run(["gpgconf", "--homedir", str(key.home), "--kill", "all"], check=False)


@pytest.fixture(scope="module")
def artifacts(work: Path, ssh_key: Path, signer: Key) -> Path:
    """out/: debian-base as the README builds it, and the guest image (ssh with this run's key,
    veth with a static address, gzip, signed, state). Their bootstraps are cached with the host images,
    so that a second run only builds the stages after the bootstrap."""
    e = Env(work, work / "out", work / "work", harness.vm_cache_dir() / "bootstrap")
    r = e.nspawnbuild("build", str(ROOT / "recipes" / f"{README_IMAGE}.toml"))
    assert r.returncode == 0, r.stdout + r.stderr
    pub = ssh_key.with_suffix(".pub").read_text().strip()
    recipe = work / f"{GUEST}.toml"
    recipe.write_text(f"""extends = "{ROOT / 'recipes' / 'debian-base.toml'}"
name = "{GUEST}"
state = ["{STATE}"]

[features.ssh]
authorized_keys = ["{pub}"]

[features.network]
mode = "veth"
address = ["{GUEST_ADDRESS}/28"]
gateway = ["{VE_ADDRESS}"]
""")
    r = e.nspawnbuild("build", "--sign", str(signer.secret), str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (e.out / GUEST / "SHA256SUMS.gpg").is_file(), r.stdout
    for d in (e.out / README_IMAGE, e.out / GUEST):
        (d / "build.log").unlink(missing_ok=True)
    shutil.rmtree(work / "work", ignore_errors=True)  # only out/ is needed from here on
    return e.out


def _forged(good: Path, dest: Path) -> Path:
    """The guest's set with another (small) tarball and SHA256SUMS rewritten to match it, the
    signature left as it was: only the signature can tell."""
    shutil.copytree(good, dest)
    (dest / TARBALL).write_bytes(_other_tarball("w:gz"))
    _resum(dest, TARBALL)
    return dest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        pass


def _as_zstd(good: Path, dest: Path, signer: Key) -> Path:
    """The guest's set as a zstd build publishes it: the same tar as ``.tar.zst``, SHA256SUMS
    naming it, signed again by the signer (a set made by hand: building the guest twice
    would only cost time)."""
    shutil.copytree(good, dest)
    tar = subprocess.run(["gzip", "-dc", str(dest / TARBALL)], capture_output=True, check=True).stdout
    (dest / ZSTD_TARBALL).write_bytes(subprocess.run(["zstd", "-q", "-c", "-T0"], input=tar,
                                                     capture_output=True, check=True).stdout)
    (dest / TARBALL).unlink()
    sums = (dest / "SHA256SUMS").read_text().replace(f"  {TARBALL}\n", f"  {ZSTD_TARBALL}\n")
    (dest / "SHA256SUMS").write_text(sums)
    _resum(dest, ZSTD_TARBALL)
    (dest / "SHA256SUMS.gpg").unlink()
    gpg(signer.home, "--detach-sign", "-u", signer.fingerprint, "-o", str(dest / "SHA256SUMS.gpg"),
        str(dest / "SHA256SUMS"))
    return dest


@pytest.fixture(scope="module")
def server(artifacts: Path, work: Path, signer: Key) -> Iterator[int]:
    """The sets on a loopback HTTP server, as a static web server would serve out/NAME; the
    VM reaches it at the slirp host address. Yields its port."""
    top = work / "served"
    # one URL per pull: importd 252 keeps each download as .tar-URL and fails a second pull of
    # the same URL from a server without ETag ("Failed to rename ... File exists")
    for d in ("checksum", "signed"):
        shutil.copytree(artifacts / GUEST, top / d)
    _forged(artifacts / GUEST, top / "forged")
    _as_zstd(artifacts / GUEST, top / "zstd", signer)
    handler = functools.partial(_QuietHandler, directory=str(top))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def payload(work: Path, ssh_key: Path, signer: Key) -> Path:
    """The VM's second disk, made before the guests are built so that the hosts boot while
    they are: nspawnbuild and plugins, this run's keys, the second host's service, and room
    for the artifacts, which :func:`vm` copies onto it once its host is up."""
    top = work / "payload"
    harness.payload_python(top / "python")
    (top / "out").mkdir()
    shutil.copy(ssh_key.with_suffix(".pub"), top / "authorized_keys")
    shutil.copy(ssh_key, top / "id_ed25519")
    (top / "id_ed25519").chmod(0o600)
    shutil.copy(signer.public, top / "signer.gpg")
    (top / "far_echo.py").write_text(FAR_ECHO)
    image = work / "payload.img"
    harness.make_ext4(top, image, "payload", PAYLOAD_ROOM)
    return image


@pytest.fixture(scope="module")
def outgoing(work: Path, artifacts: Path) -> Path:
    """PAYLOAD/out as the hosts get it: the artifacts, and a broken set."""
    top = work / "outgoing"
    shutil.copytree(artifacts, top)
    # the guest's set with a .nspawn whose bind source does not exist, so nspawn refuses to
    # start it and install --restart must roll back to the running image; its tarball is a
    # small one (not an OS either): importing the guest's a second time would only cost time
    broken = top / "broken"
    shutil.copytree(artifacts / GUEST, broken)
    (broken / "SHA256SUMS.gpg").unlink()
    (broken / TARBALL).write_bytes(_other_tarball("w:gz"))
    _resum(broken, TARBALL)
    nspawn = broken / f"{GUEST}.nspawn"
    nspawn.write_text(nspawn.read_text() + "\n[Files]\nBind=/nonexistent-nsb-test:/mnt\n")
    _resum(broken, nspawn.name)
    return top


@pytest.fixture(scope="module")
def booting(work: Path, payload: Path, ssh_key: Path) -> Iterator[dict[str, harness.VM]]:
    """Every kind of host started at once (their boots overlap: each waits mostly on its own
    guest), waited for by :func:`vm` when its scenarios begin; all killed at the end."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is not installed: apt-get install qemu-system-x86")
    machines: dict[str, harness.VM] = {}
    try:
        for key, spec in sorted(harness.HOSTS.items()):
            started = time.monotonic()
            image = harness.host_image(spec, work / f"build-{spec.name}")
            print(f"{spec.name}: image ready in {time.monotonic() - started:.0f}s")
            run = work / f"run-{spec.name}"
            run.mkdir()
            machines[key] = harness.VM(image, payload, ssh_key, run)
            machines[key].start()
        yield machines
    finally:
        for machine in machines.values():
            machine.close()


@pytest.fixture(scope="module", params=sorted(harness.HOSTS))
def vm(request: pytest.FixtureRequest, booting: dict[str, harness.VM],
       outgoing: Path) -> Iterator[tuple[harness.HostSpec, harness.VM]]:
    """One booted VM per kind of host, with the artifacts copied onto its payload disk, for
    all the scenarios on it; killed after them. (``booting`` comes first: the hosts boot
    while ``outgoing`` builds the guests.)"""
    spec, machine = harness.HOSTS[request.param], booting[request.param]
    machine.wait_booted()
    print(f"{spec.name}: booted {time.monotonic() - machine.started:.0f}s after its start")
    machine.push(outgoing, f"{PAYLOAD}/out")
    try:
        yield spec, machine
    finally:
        machine.close()  # its CPU and memory to the next host


def wait_running(vm: harness.VM, name: str, timeout: int = 180) -> None:
    """Until machined says ``name`` is running, its unit is active and the container's own bus
    answers (machined says "running" as soon as nspawn registers it, before the container's
    dbus is up); the unit's status and journal in the assertion if not."""
    vm.must(f"""
        for i in $(seq {timeout // 2}); do
            state=$(machinectl show {name} -p State --value 2>/dev/null || true)
            if [ "$state" = running ] && systemctl is-active -q systemd-nspawn@{name} &&
                    systemd-run -M {name} --wait --pipe -q /bin/true 2>/dev/null; then
                exit 0
            fi
            sleep 2
        done
        systemctl status systemd-nspawn@{name} --no-pager -l || true
        journalctl -u systemd-nspawn@{name} --no-pager -n 40 || true
        exit 1""", timeout=timeout + 60)


def check_container(vm: harness.VM, name: str) -> None:
    """A command runs in the started container (machined's systemd-run into it), which is the
    image's Debian, and its trusted .nspawn applied: PrivateUsers=pick maps root elsewhere."""
    wait_running(vm, name)
    os_release = vm.must(f"systemd-run -M {name} --wait --pipe -q cat /etc/os-release")
    assert "ID=debian" in os_release, os_release
    assert vm.ssh(f"systemd-run -M {name} --wait --pipe -q /bin/false").returncode != 0
    leader = vm.must(f"machinectl show {name} -p Leader --value").strip()
    uid_map = vm.must(f"cat /proc/{leader}/uid_map").split()
    assert uid_map[0] == "0" and uid_map[1] != "0", f"PrivateUsers=pick not applied: {uid_map}"


def stop_and_enable(vm: harness.VM, name: str) -> None:
    vm.must(f"machinectl stop {name}")
    vm.must(f"for i in $(seq 60); do systemctl is-active -q systemd-nspawn@{name} || exit 0; "
            "sleep 2; done; exit 1", timeout=180)
    vm.must(f"machinectl enable {name}")
    assert vm.must(f"systemctl is-enabled systemd-nspawn@{name}").strip() == "enabled"


def test_the_host_is_the_systemd_it_claims(vm: tuple[harness.HostSpec, harness.VM]) -> None:
    """The VM is the release and systemd the scenarios are meant for, with the unified cgroup
    hierarchy Debian boots with, and nspawnbuild runs inside it from the payload."""
    spec, machine = vm
    facts = machine.must(". /etc/os-release; echo $VERSION_CODENAME; systemctl --version | "
                         "head -n1; stat -fc %T /sys/fs/cgroup; systemctl is-active "
                         "systemd-machined systemd-importd.socket || true; nspawnbuild --version")
    lines = facts.splitlines()
    assert lines[0] == spec.codename, facts
    assert lines[1].split()[0] == "systemd", facts
    version = int(lines[1].split()[1])
    assert version == spec.systemd if spec.exact else version >= spec.systemd, facts
    assert lines[2] == "cgroup2fs", facts
    assert "nspawnbuild" in lines[-1], facts
    if spec.systemd >= 256:
        machine.must("command -v importctl")


def test_readme_install_commands_as_written(vm: tuple[harness.HostSpec, harness.VM]) -> None:
    """The README's commands, the text as it is now, with only the artifact directory moved to
    the payload; then start, a command inside, stop and enable."""
    _, machine = vm
    commands = readme_install_commands()
    assert f"out/{README_IMAGE}" in commands, commands
    script = commands.replace(f"out/{README_IMAGE}", f"{PAYLOAD}/out/{README_IMAGE}")
    machine.must(script, timeout=600)
    assert machine.must(f"test -f /etc/systemd/nspawn/{README_IMAGE}.nspawn && echo ok").strip() == "ok"
    check_container(machine, README_IMAGE)
    stop_and_enable(machine, README_IMAGE)


#: the second host's service: it answers each connection with the address it came from
FAR_ECHO = """import socket, sys, threading
def serve(family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, int(sys.argv[3])))
    s.listen()
    while True:
        c, peer = s.accept()
        c.sendall((peer[0] + "\\n").encode())
        c.close()
threading.Thread(target=serve, args=(socket.AF_INET6, sys.argv[2]), daemon=True).start()
serve(socket.AF_INET, sys.argv[1])
"""


def install_guest(machine: harness.VM) -> str:
    """``nspawnbuild install DIR --enable --start --host-network`` of the guest image, run by
    nspawnbuild inside the VM, unless an earlier scenario installed it (an import costs a
    minute here)."""
    if machine.ssh(f"test -d /var/lib/machines/{GUEST}").returncode == 0:
        machine.must(f"machinectl start {GUEST} || true")
        return ""
    return machine.must(f"nspawnbuild install {PAYLOAD}/out/{GUEST} --enable --start "
                        "--host-network", timeout=600)


def ssh_guest(machine: harness.VM, address: str, command: str) -> str:
    """``command`` in a container over ssh from the VM host with this run's key, retried
    while the container's network and sshd come up."""
    return machine.must(f"""
        for i in $(seq 60); do
            if out=$(ssh -i {PAYLOAD}/id_ed25519 -o BatchMode=yes -o StrictHostKeyChecking=no \\
                     -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 -o LogLevel=ERROR \\
                     root@{address} '{command}'); then
                echo "$out"; exit 0
            fi
            sleep 3
        done
        ip addr; exit 1""", timeout=300)


def test_nspawnbuild_install_dir_start(vm: tuple[harness.HostSpec, harness.VM]) -> None:
    """nspawnbuild itself, inside the VM, installs the guest's directory (gzip) and starts it."""
    _, machine = vm
    name = GUEST
    said = install_guest(machine)  # its wording is install's own; the state is what counts
    assert machine.must(f"test -f /etc/systemd/nspawn/{name}.nspawn && "
                        f"test -d /var/lib/machines/{name} && echo ok").strip() == "ok", said
    host_file = f"/etc/systemd/network/10-nspawnbuild-ve-{name}.network"
    assert f"installed {host_file}" in said and "networkctl reload" in said, said
    check_container(machine, name)
    assert machine.must(f"systemctl is-enabled systemd-nspawn@{name}").strip() == "enabled"


def test_pull_tar_with_checksum_and_with_signature(vm: tuple[harness.HostSpec, harness.VM],
                                                   server: int) -> None:
    """pull-tar from the build host's loopback server: --verify=checksum takes the unsigned
    check; the default --verify=signature takes the signed set with the signer's key installed
    as README says and refuses a forged one (another tarball, SHA256SUMS rewritten)."""
    spec, machine = vm
    url = f"http://{harness.SLIRP_HOST}:{server}"
    # Debian 13's importctl is what machinectl's import verbs forward to on systemd >= 256
    puller = ("importctl pull-tar --class=machine" if spec.systemd >= 256
              else "machinectl pull-tar")
    machine.must(f"{puller} --verify=checksum {url}/checksum/{TARBALL} by-checksum",
                 timeout=600)
    machine.must("test -f /var/lib/machines/by-checksum/etc/os-release && "
                 "test -f /var/lib/machines/by-checksum.nspawn")

    machine.must(f"install -m 0644 {PAYLOAD}/signer.gpg /etc/systemd/import-pubring.gpg")
    said = machine.must(f"machinectl pull-tar {url}/signed/{TARBALL} signed 2>&1", timeout=600)
    assert "Signature verification succeeded" in said, said
    assert machine.must("test -f /var/lib/machines/signed/etc/os-release && echo ok").strip() == "ok", said
    forged = machine.ssh(f"machinectl pull-tar {url}/forged/{TARBALL} forged", timeout=600)
    assert forged.returncode != 0, forged.stdout + forged.stderr
    assert machine.ssh("test -e /var/lib/machines/forged").returncode != 0
    said = forged.stdout + forged.stderr + machine.must("journalctl --no-pager -n 80")
    assert "Signature verification failed" in said, said


def test_a_zstd_set_pulls_from_258_and_is_refused_below(
        vm: tuple[harness.HostSpec, harness.VM], server: int) -> None:
    """What the README's table says of zstd, on the host itself: a signed ``.tar.zst`` set
    pulls with the default verification on systemd >= 258 and is refused below it (nothing
    imported), which is why the default compression follows ``target_systemd``."""
    spec, machine = vm
    url = f"http://{harness.SLIRP_HOST}:{server}/zstd/{ZSTD_TARBALL}"
    machine.must(f"install -m 0644 {PAYLOAD}/signer.gpg /etc/systemd/import-pubring.gpg")
    puller = ("importctl pull-tar --class=machine" if spec.systemd >= 256
              else "machinectl pull-tar")
    pulled = machine.ssh(f"{puller} {url} by-zstd 2>&1", timeout=600)
    said = pulled.stdout + pulled.stderr
    if spec.systemd >= 258:
        assert pulled.returncode == 0, said
        assert "Signature verification succeeded" in said, said
        machine.must("test -f /var/lib/machines/by-zstd/etc/os-release")
    else:
        assert pulled.returncode != 0, said
        assert machine.ssh("test -e /var/lib/machines/by-zstd").returncode != 0, said


def test_veth_guest_reached_over_ssh_from_the_host(vm: tuple[harness.HostSpec, harness.VM]) -> None:
    """The veth image installed with --host-network and started: networkd gives the VM host's
    ve- link the recipe's gateway from the generated file alone (no ip addr by hand); the host
    logs in with this run's key and the guest answers with its own name and address."""
    _, machine = vm
    install_guest(machine)
    wait_running(machine, GUEST)
    said = ssh_guest(machine, GUEST_ADDRESS, "hostname; ip -4 -o addr show host0")
    assert said.splitlines()[0] == GUEST, said
    assert f"{GUEST_ADDRESS}/28" in said, said
    link = machine.must(f"ip -4 -o addr show ve-{GUEST}; networkctl status ve-{GUEST} --no-pager "
                        "| grep -i 'network file'")
    assert f"{VE_ADDRESS}/28" in link and f"10-nspawnbuild-ve-{GUEST}.network" in link, link


def test_install_url_with_the_hosts_import_keyring(vm: tuple[harness.HostSpec, harness.VM],
                                                   server: int) -> None:
    """nspawnbuild install URL inside the VM: the signed set, verified with the host's import
    keyring (the signer's key installed as README says), installed with its trusted .nspawn and
    drop-in as a second instance of the guest image, web2 with its own address, started; the
    guest and web2 run side by side and answer ssh from the host with their own names and
    addresses; the forged set refused with nothing installed."""
    _, machine = vm
    url = f"http://{harness.SLIRP_HOST}:{server}"
    machine.must(f"install -m 0644 {PAYLOAD}/signer.gpg /etc/systemd/import-pubring.gpg")
    said = machine.must(f"nspawnbuild install {url}/signed/ --name web2 --start --host-network "
                        f"--address {WEB2_ADDRESS}/28 --gateway {WEB2_GATEWAY}", timeout=600)
    assert "signature  good" in said, said
    assert machine.must("test -f /etc/systemd/nspawn/web2.nspawn && test -f "
                        "/etc/systemd/system/systemd-nspawn@web2.service.d/50-nspawnbuild.conf"
                        " && echo ok").strip() == "ok", said
    check_container(machine, "web2")
    install_guest(machine)
    wait_running(machine, GUEST)
    for name, address in ((GUEST, GUEST_ADDRESS), ("web2", WEB2_ADDRESS)):
        said = ssh_guest(machine, address, "hostname; cat /etc/hostname; ip -4 -o addr show host0")
        assert said.splitlines()[:2] == [name, name], said
        assert f"{address}/28" in said, said
    machine.must("machinectl stop web2")
    forged = machine.ssh(f"nspawnbuild install {url}/forged/ --name forged2", timeout=600)
    assert forged.returncode == 1, forged.stdout + forged.stderr
    assert "refused to install" in forged.stderr and "the signature" in forged.stderr, \
        forged.stdout + forged.stderr
    assert machine.ssh("test -e /var/lib/machines/forged2").returncode != 0


def test_bridge_with_nat_reaches_a_second_host_behind_the_vm_host(
        vm: tuple[harness.HostSpec, harness.VM]) -> None:
    """An instance of the guest on a routed bridge of its own (--bridge, the field guide's NAT
    case): --host-network creates the bridge (networkd), turns forwarding on (sysctl.d) and
    loads the NAT rules (nftables, a unit enabled for boot). The second host, a network
    namespace behind the VM host, has no route back to the containers' IPv4 /28: it sees the
    connection from the VM host's address (NAT); over IPv6 it routes the /112 to the VM host
    and sees the container's own address (routed, no NAT)."""
    _, machine = vm
    far4, far6 = FAR_V4, FAR_V6
    machine.must(f"""
        ip netns add far
        ip link add up-far type veth peer name far0
        ip link set far0 netns far
        ip addr add {far4[0]}/28 dev up-far
        ip addr add {far6[0]}/112 dev up-far nodad
        ip link set up-far up
        ip -n far link set lo up
        ip -n far addr add {far4[1]}/28 dev far0
        ip -n far addr add {far6[1]}/112 dev far0 nodad
        ip -n far link set far0 up
        ip -n far -6 route add 2001:db8::5:0/112 via {far6[0]}
        systemd-run -q --unit nsb-far ip netns exec far python3 {PAYLOAD}/far_echo.py \\
            {far4[1]} {far6[1]} {FAR_PORT}""")
    addresses = " ".join(f"--address {a} --gateway {g}"
                         for a, g in zip(NAT_ADDRESSES, NAT_GATEWAYS, strict=True))
    said = machine.must(f"nspawnbuild install {PAYLOAD}/out/{GUEST} --name nat1 --bridge {BRIDGE} "
                        f"{addresses} --host-network --start", timeout=600)
    unit = f"nspawnbuild-nat-{BRIDGE}.service"
    for line in ("networkctl reload", "sysctl --system", f"enabled and started {unit} (nft -f)"):
        assert line in said, said
    wait_running(machine, "nat1")
    assert "Bridge=" + BRIDGE in machine.must("cat /etc/systemd/nspawn/nat1.nspawn")
    facts = machine.must(f"sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding; "
                         f"systemctl is-enabled {unit}; nft list table ip nspawnbuild_br_nsb; "
                         f"ip -o addr show {BRIDGE}")
    assert facts.splitlines()[:3] == ["1", "1", "enabled"], facts
    assert "masquerade" in facts and f"{NAT_GATEWAYS[0]}/28" in facts, facts
    got = {}
    for family, far in (("4", far4[1]), ("6", far6[1])):
        got[family] = machine.must(f"""
            for i in $(seq 60); do
                if out=$(systemd-run -M nat1 --wait --pipe -q /bin/bash -c \\
                         'exec 3<>/dev/tcp/{far}/{FAR_PORT} && cat <&3' 2>/dev/null); then
                    echo "$out"; exit 0
                fi
                sleep 2
            done
            systemd-run -M nat1 --wait --pipe -q ip addr || true; exit 1""", timeout=300).strip()
    assert got == {"4": far4[0], "6": NAT_ADDRESSES[1].split("/")[0]}, got
    machine.must("machinectl stop nat1; systemctl stop nsb-far; ip netns del far")


def test_restart_replaces_a_running_machine_keeps_its_state_and_rolls_back(
        vm: tuple[harness.HostSpec, harness.VM]) -> None:
    """The update path on a real host: --force is refused while the guest runs; --restart
    stops it, swaps the new tree in with the recipe's state kept, starts it; a set that does
    not start is rolled back to the old image, which runs again with its settings."""
    _, machine = vm
    install_guest(machine)
    wait_running(machine, GUEST)
    tree = f"/var/lib/machines/{GUEST}"
    machine.must(f"mkdir -p {tree}{STATE} && echo mine > {tree}{STATE}/data && "
                 f"echo scratch > {tree}/etc/not-state")
    refused = machine.ssh(f"nspawnbuild install {PAYLOAD}/out/{GUEST} --force", timeout=300)
    assert refused.returncode == 2 and "is running from it" in refused.stderr, refused.stderr
    said = machine.must(f"nspawnbuild install {PAYLOAD}/out/{GUEST} --restart", timeout=900)
    assert f"stopped machine {GUEST}" in said and f"started machine {GUEST}" in said, said
    assert f"kept the machine's state {STATE}" in said, said
    wait_running(machine, GUEST)
    assert machine.must(f"cat {tree}{STATE}/data").strip() == "mine"
    assert machine.ssh(f"test -e {tree}/etc/not-state").returncode != 0  # a new tree
    before = machine.must(f"cat /etc/systemd/nspawn/{GUEST}.nspawn")
    broken = machine.ssh(f"nspawnbuild install {PAYLOAD}/out/broken --restart", timeout=900)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "did not start" in broken.stderr and "started again" in broken.stderr, broken.stderr
    wait_running(machine, GUEST)  # the old image, running again
    assert machine.must(f"cat /etc/systemd/nspawn/{GUEST}.nspawn") == before
    assert machine.must(f"cat {tree}{STATE}/data").strip() == "mine"
    left = [n for n in machine.must("ls -A /var/lib/machines").split() if n.startswith(f".{GUEST}")]
    assert not left, left  # no staging, old or failed tree left beside the machines
