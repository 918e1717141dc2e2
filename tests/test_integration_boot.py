"""Proof that images boot: ssh + network (veth, static 192.0.2.x) + users + locales, on Debian
and on Ubuntu (recipes/ubuntu-base.toml: noble, from Ubuntu's archive with its keyring).

The image is built, imported with the real systemd-import, its .nspawn installed in a trusted
place, and booted with ``systemd-nspawn -b`` on a pty inside a network namespace this test
creates. Everything is checked from the host over ssh, with the test's own key pair.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import booting
import pytest
from test_integration_build import BASE_RECIPE, tar_members

from conftest import ROOT, Env, import_tarball, tarball_of

pytestmark = pytest.mark.integration

GUEST, HOST = "192.0.2.2", "192.0.2.1"


def ssh(netns: str, key: Path, user: str, command: str,
        timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "ssh", "-i", str(key), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR", f"{user}@{GUEST}", command],
        capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cgroup() -> Iterator[str]:
    """A cgroup of the test's own for the container, in every hierarchy nspawn uses.

    Without systemd as PID 1 nothing gives nspawn a unit of its own; with --keep-unit it would
    use the caller's cgroup, and a booted container with PrivateUsers=pick leaves a ``payload``
    cgroup there owned by its UID range, which the next container (another range) may not use.
    """
    name = f"nsbtest-{uuid.uuid4().hex[:6]}"
    dirs = [Path("/sys/fs/cgroup/unified") / name, Path("/sys/fs/cgroup/systemd") / name]
    if not Path("/sys/fs/cgroup/unified").is_dir():  # pure cgroup v2
        dirs = [Path("/sys/fs/cgroup") / name]
    for d in dirs:
        d.mkdir()
    try:
        yield " ".join(str(d / "cgroup.procs") for d in dirs)
    finally:
        for d in dirs:
            _remove_cgroup(d)


def _remove_cgroup(top: Path, patience: float = 60) -> None:
    """Remove a test cgroup once the container's processes have left it. A stopped boot's
    script(1) can exit while the container is still shutting down (CI once found journald's
    cgroup busy), so wait for every cgroup below to empty, then kill what is left."""
    deadline, killed = time.monotonic() + patience, False
    while True:
        subs = sorted((p for p in top.rglob("*") if p.is_dir()),
                      key=lambda p: len(p.parts), reverse=True) + [top]
        pids = [pid for sub in subs
                for pid in (sub / "cgroup.procs").read_text().split()]
        if not pids or (killed and time.monotonic() > deadline):
            break  # rmdir below says which cgroup is still busy
        if time.monotonic() > deadline:
            subprocess.run(["kill", "-9", *pids], check=False)
            deadline, killed = time.monotonic() + 10, True
        time.sleep(0.5)
    for sub in subs:
        sub.rmdir()


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"nsbtest-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


#: case: (recipe, release pinned by the test or None for the recipe's default, the release
#: the image must be: its os-release ID and VERSION_CODENAME)
BASES = {"debian": (BASE_RECIPE, None, "debian trixie"),
         "debian-bookworm": (BASE_RECIPE, "bookworm", "debian bookworm"),
         "ubuntu": (ROOT / "recipes" / "ubuntu-base.toml", None, "ubuntu noble")}


@pytest.mark.parametrize("case", sorted(BASES))
def test_image_boots_and_serves_ssh_with_the_recipes_settings(env: Env, netns: str, cgroup: str,
                                                               case: str) -> None:
    base_recipe, pinned, want_release = BASES[case]
    key = env.tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nsbtest", "-f",
                    str(key)], check=True)
    pub = (env.tmp / "id_ed25519.pub").read_text().strip()
    machine = f"nsbb-{uuid.uuid4().hex[:6]}"  # short: the host-side veth is ve-NAME
    recipe = env.tmp / "booted.toml"
    pin = f'[base]\nrelease = "{pinned}"\n' if pinned else ""
    recipe.write_text(f"""extends = "{base_recipe}"
name = "{machine}"
{pin}
[features.ssh]
authorized_keys = ["{pub}"]

[features.network]
mode = "veth"
address = ["{GUEST}/24"]
gateway = ["{HOST}"]

[features.locales]
locales = ["en_US.UTF-8", "de_DE.UTF-8"]
lang = "de_DE.UTF-8"
timezone = "Europe/Berlin"

[[features.users.accounts]]
name = "alice"
groups = ["adm"]
sudo = "nopasswd"
authorized_keys = ["{pub}"]
""")
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    out = env.out / machine
    members = tar_members(tarball_of(out))
    assert not [n for n in members if n.startswith("./etc/ssh/ssh_host_")]

    images = env.tmp / "machines"
    import_tarball(tarball_of(out), images, machine)

    trusted = Path("/run/systemd/nspawn") / f"{machine}.nspawn"
    trusted.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / f"{machine}.nspawn", trusted)
    console = env.tmp / "console.log"
    boot = booting.start(images / machine, machine, netns, cgroup, console)
    try:
        veth = f"ve-{machine}"
        deadline = time.monotonic() + 60
        while subprocess.run(["ip", "-n", netns, "link", "show", veth],
                             capture_output=True).returncode != 0:
            assert boot.poll() is None, console.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the container's veth never appeared"
            time.sleep(0.5)
        subprocess.run(["ip", "-n", netns, "addr", "add", f"{HOST}/24", "dev", veth], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", veth, "up"], check=True)

        deadline = time.monotonic() + 120
        while True:
            probe = ssh(netns, key, "root", "systemctl is-active multi-user.target")
            if probe.stdout.strip() == "active":
                break
            assert boot.poll() is None, console.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, (probe.stderr, console.read_text(errors="replace")[-3000:])
            time.sleep(2)

        facts = ssh(netns, key, "root", "hostname; . /etc/default/locale; echo $LANG; "
                    "date +%Z; ls /etc/ssh/ssh_host_ed25519_key; locale -a")
        assert facts.returncode == 0, facts.stderr
        lines = facts.stdout.split()
        release = ssh(netns, key, "root", ". /etc/os-release; echo $ID $VERSION_CODENAME; "
                      "systemctl --version | head -n 1")
        assert release.returncode == 0, release.stderr
        os_release, systemd = release.stdout.splitlines()
        assert os_release == want_release
        # the manifest's target_systemd is the release's own systemd (the table in the plugin)
        manifest = json.loads((out / "manifest.json").read_text())
        assert systemd.split()[:2] == ["systemd", str(manifest["target_systemd"])], systemd
        assert lines[0] == machine
        assert lines[1] == "de_DE.UTF-8"
        assert lines[2] in ("CET", "CEST")
        assert lines[3] == "/etc/ssh/ssh_host_ed25519_key"  # made at first boot
        assert "de_DE.utf8" in lines and "en_US.utf8" in lines
        alice = ssh(netns, key, "alice", "id -nG; sudo -n true && echo sudo-ok")
        assert "adm" in alice.stdout and "sudo-ok" in alice.stdout, alice.stderr

        ssh(netns, key, "root", "systemctl poweroff")
        assert boot.wait(timeout=90) == 0
    finally:
        trusted.unlink(missing_ok=True)
        booting.stop(boot, 30)
    assert (images / machine / "etc/ssh/ssh_host_ed25519_key").exists()
