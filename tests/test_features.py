"""Feature plugins: what each one validates, and the settings it renders.

Fast: recipes are loaded from temporary files and rendered in memory, and what configure()
does is recorded on a small directory tree; nothing is bootstrapped, nothing runs in an image
and nothing touches the network. The checks against the real systemd tools are in
test_features_verify.py.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from conftest import BIN
from nspawnbuild.errors import RecipeError
from nspawnbuild.feature import AnyFeature, Feature, NoConfig, NoTraits
from nspawnbuild.plan import make_plan, nspawn_settings, unit_settings
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.render import render_dropin, render_nspawn
from nspawnbuild.rootfs import RootfsContext
from nspawnbuild.steplog import StepLog
from nspawnbuild_plugins.firstboot import Firstboot
from nspawnbuild_plugins.locales import Locales, LocalesConfig, LocalesTraits
from nspawnbuild_plugins.network import NetworkConfig, interfaces_file, networkd_file, resolv_conf
from nspawnbuild_plugins.ssh import Ssh

BASE = '[base]\ndistro = "debian"\n'
NONFREE = '[base]\ndistro = "debian"\ncomponents = ["main", "non-free"]\n'
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc0bXlGZmFrZUtleUZvclRlc3RzT25seTAxMjM0NTY3 me@host"
RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDfakefakefakefakefakefakefakefake= ops@host"
SHA512_HASH = "$6$saltsalt$" + "Ab1./" * 17 + "x"  # the shape of `openssl passwd -6`
NVIDIA_CONTROL = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]


# -- helpers ----------------------------------------------------------------------------------

def write(tmp_path: Path, body: str, name: str = "r") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(body))
    return path


def load(tmp_path: Path, body: str, name: str = "r") -> Recipe[AnyFeature]:
    return load_recipe(write(tmp_path, body, name))


def nspawn_text(r: Recipe[AnyFeature]) -> str:
    return render_nspawn(nspawn_settings(r), name=r.name, digest="0", version="t")


def dropin_text(r: Recipe[AnyFeature]) -> str:
    return render_dropin(unit_settings(r), name=r.name, digest="0", version="t")


def root_keys(r: Recipe[AnyFeature]) -> list[str]:
    """root's keys as the ssh feature read them when the recipe was loaded."""
    ssh = r.feature("ssh")
    assert isinstance(ssh, Ssh)
    return ssh.root_keys(r)


def values(text: str, key: str) -> list[str]:
    """Every value of ``key=`` in a rendered INI text, in order."""
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def section(text: str, name: str) -> str:
    """The body of ``[name]`` in a rendered INI text."""
    start = text.index(f"[{name}]\n") + len(name) + 3
    end = text.find("\n[", start)
    return text[start:] if end < 0 else text[start:end + 1]


def refused(tmp_path: Path, body: str, key: str, *words: str) -> str:
    """Load ``body``, expect exactly one RecipeError problem at ``key``, mentioning ``words``."""
    with pytest.raises(RecipeError) as info:
        load(tmp_path, body)
    problems = info.value.problems
    assert [p.key for p in problems] == [key], str(info.value)
    text = problems[0].format()
    for word in words:
        assert word in text, text
    assert problems[0].file == tmp_path / "r.toml"
    return text


# -- gpu-nvidia -------------------------------------------------------------------------------

NVIDIA = NONFREE + '[features.gpu-nvidia]\ndriver_version = "535.183.01"\n'


def test_nvidia_binds_the_chosen_devices_and_the_control_nodes(tmp_path: Path) -> None:
    r = load(tmp_path, NVIDIA + "devices = [0, 2]\n")
    nspawn = nspawn_text(r)
    assert values(section(nspawn, "Files"), "Bind") == ["/dev/nvidia0", "/dev/nvidia2",
                                                        *NVIDIA_CONTROL]
    assert "/dev/nvidia1" not in nspawn
    dropin = dropin_text(r)
    assert values(dropin, "DeviceAllow") == [f"{d} rw" for d in
                                             ["/dev/nvidia0", "/dev/nvidia2", *NVIDIA_CONTROL]]


def test_nvidia_all_devices_with_count(tmp_path: Path) -> None:
    r = load(tmp_path, NVIDIA + 'devices = "all"\ncount = 2\n')
    devices = ["/dev/nvidia0", "/dev/nvidia1", *NVIDIA_CONTROL]
    assert values(nspawn_text(r), "Bind") == devices
    assert values(dropin_text(r), "DeviceAllow") == [f"{d} rw" for d in devices]


def test_nvidia_default_is_gpu_zero(tmp_path: Path) -> None:
    r = load(tmp_path, NVIDIA)
    assert values(nspawn_text(r), "Bind") == ["/dev/nvidia0", *NVIDIA_CONTROL]


def test_nvidia_all_devices_without_count_is_an_error(tmp_path: Path) -> None:
    refused(tmp_path, NVIDIA + 'devices = "all"\n', "features.gpu-nvidia.count",
            'devices = "all" needs count')


def test_nvidia_needs_the_non_free_component(tmp_path: Path) -> None:
    refused(tmp_path, BASE + '[features.gpu-nvidia]\ndriver_version = "535.183.01"\n',
            "base.components", "non-free", 'components = ["main", "non-free"]')


@pytest.mark.parametrize("version", ["535", "latest", "535.183.01-1", "535.183.01; rm -rf /"])
def test_nvidia_driver_version_must_be_a_version(tmp_path: Path, version: str) -> None:
    refused(tmp_path, NONFREE + f'[features.gpu-nvidia]\ndriver_version = "{version}"\n',
            "features.gpu-nvidia.driver_version", "invalid value")


def test_nvidia_driver_version_is_required_with_the_image_driver(tmp_path: Path) -> None:
    refused(tmp_path, NONFREE + '[features.gpu-nvidia]\ndriver = "image"\ndevices = [0]\n',
            "features.gpu-nvidia.driver_version", "requires driver_version")


# -- gpu-nvidia, driver = "host" ----------------------------------------------------------------

def test_nvidia_without_a_version_is_the_host_driver_and_the_image_carries_none(
        tmp_path: Path) -> None:
    """No NVIDIA package, no non-free component needed, no settings in the artifacts: install
    makes them on the host (test_gpu_host.py); the manifest says what it must find there."""
    r = load(tmp_path, BASE + "[features.gpu-nvidia]\ndevices = [1, \"GPU-4b3c9d2e\"]\n")
    plan = make_plan(r)
    assert not [p for p in plan.layer["packages"] if "nvidia" in p or "cuda" in p]
    assert "nvidia" not in nspawn_text(r) and "nvidia" not in dropin_text(r)
    assert plan.manifest["host_needs"] == {
        "gpu-nvidia": {"driver": "host", "check": True, "devices": ["1", "GPU-4b3c9d2e"]}}
    assert "host_needs" not in make_plan(load(tmp_path, NVIDIA)).manifest


@pytest.mark.parametrize("body,key,words", [
    ('driver = "host"\ndriver_version = "535.183.01"\n', "features.gpu-nvidia.driver_version",
     "no version to pin"),
    ('devices = "all"\ncount = 2\n', "features.gpu-nvidia.count", "count does not apply"),
    ('driver_version = "535.183.01"\ndevices = ["GPU-4b3c"]\n', "features.gpu-nvidia.devices",
     'with driver = "host" only'),
    ('driver = "gpu"\n', "features.gpu-nvidia.driver", "invalid value"),
    ('devices = ["GPU 0; rm"]\n', "features.gpu-nvidia.devices", "invalid value"),
])
def test_nvidia_driver_modes_refuse_what_does_not_apply(tmp_path: Path, body: str, key: str,
                                                        words: str) -> None:
    refused(tmp_path, NONFREE + "[features.gpu-nvidia]\n" + body, key, words)


def test_nvidia_packages_are_pinned_to_the_driver_version(tmp_path: Path) -> None:
    plan = make_plan(load(tmp_path, NVIDIA))
    packages = plan.layer["packages"]
    nvidia = [p for p in packages if "nvidia" in p or "cuda" in p]
    assert nvidia == ["libcuda1=535.183.01-*", "libnvidia-ml1=535.183.01-*",
                      "nvidia-smi=535.183.01-*"]
    # the driver is the package layer's, never the shared base's
    assert packages == sorted(packages) and "systemd-sysv" in plan.bootstrap["packages"]
    assert not [p for p in plan.bootstrap["packages"] if "nvidia" in p]


def test_nvidia_packages_follow_the_driver_version_on_ubuntu(tmp_path: Path) -> None:
    r = load(tmp_path, '[base]\ndistro = "ubuntu"\ncomponents = ["main", "restricted"]\n'
             '[features.gpu-nvidia]\ndriver_version = "550.120"\n')
    from nspawnbuild.plan import collect_packages  # the Ubuntu keyring may be missing here

    packages = collect_packages(r)
    assert "nvidia-utils-550=550.120-*" in packages
    assert "libnvidia-compute-550=550.120-*" in packages


def host_check(r: Recipe[AnyFeature], machine: str, version_file: Path) -> list[str]:
    """The drop-in's ExecStartPre= as the argv systemd would run for ``machine``."""
    [line] = values(dropin_text(r), "ExecStartPre")
    assert "/sys/module/nvidia/version" in line
    # systemd's escaping back into shell: $$ is a literal $, %i the instance (machine) name
    assert "%" not in line.replace("%i", "")
    command = line.replace("$$", "$").replace("%i", machine)
    command = command.replace("/sys/module/nvidia/version", str(version_file))
    argv = shlex.split(command)
    assert argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3
    return argv


def test_nvidia_host_check_passes_when_the_versions_match(tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("535.183.01\n")
    argv = host_check(load(tmp_path, NVIDIA), "gpubox", version)
    run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout == run.stderr == ""


def test_nvidia_host_check_names_both_versions_and_the_machine(tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("550.54.14\n")
    argv = host_check(load(tmp_path, NVIDIA), "gpubox", version)
    run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert "535.183.01" in run.stderr and "550.54.14" in run.stderr
    assert "gpubox" in run.stderr


def test_nvidia_host_check_says_none_without_the_module(tmp_path: Path) -> None:
    argv = host_check(load(tmp_path, NVIDIA), "gpubox", tmp_path / "absent")
    run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert "none" in run.stderr and "535.183.01" in run.stderr and "gpubox" in run.stderr


def test_nvidia_host_check_can_be_turned_off(tmp_path: Path) -> None:
    r = load(tmp_path, NVIDIA + "check_host_version = false\n")
    dropin = dropin_text(r)
    assert "ExecStartPre" not in dropin
    assert values(dropin, "DeviceAllow")


# -- gpu-dri ----------------------------------------------------------------------------------

def test_dri_binds_dev_dri_and_allows_the_drm_class(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + "[features.gpu-dri]\n")
    assert values(nspawn_text(r), "Bind") == ["/dev/dri"]
    assert values(dropin_text(r), "DeviceAllow") == ["char-drm rw"]


def test_dri_takes_no_keys(tmp_path: Path) -> None:
    refused(tmp_path, BASE + "[features.gpu-dri]\ncard = 0\n", "features.gpu-dri.card",
            "unknown key 'card'")


def test_both_gpu_features_together(tmp_path: Path) -> None:
    r = load(tmp_path, NVIDIA + "[features.gpu-dri]\n")
    assert values(nspawn_text(r), "Bind")[-1] == "/dev/dri"
    assert "char-drm rw" in values(dropin_text(r), "DeviceAllow")


# -- gpu-amd ----------------------------------------------------------------------------------

def test_amd_binds_kfd_and_dri_and_allows_them(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + "[features.gpu-amd]\n")
    assert values(nspawn_text(r), "Bind") == ["/dev/kfd", "/dev/dri"]
    assert values(dropin_text(r), "DeviceAllow") == ["/dev/kfd rw", "char-drm rw"]
    assert make_plan(r).manifest["host_needs"] == {"gpu-amd": {"nodes": "all"}}


def test_amd_chosen_render_nodes_only(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + '[features.gpu-amd]\nrender_nodes = ["renderD129"]\n')
    assert values(nspawn_text(r), "Bind") == ["/dev/kfd", "/dev/dri/renderD129"]
    assert values(dropin_text(r), "DeviceAllow") == ["/dev/kfd rw", "/dev/dri/renderD129 rw"]
    assert make_plan(r).manifest["host_needs"] == {"gpu-amd": {"nodes": ["renderD129"]}}


@pytest.mark.parametrize("body,key,words", [
    ('render_nodes = ["card0"]\n', "features.gpu-amd.render_nodes", "invalid value"),
    ('users = ["Bad User"]\n', "features.gpu-amd.users[0]", "invalid value"),
])
def test_amd_refuses_what_it_cannot_bind(tmp_path: Path, body: str, key: str, words: str) -> None:
    refused(tmp_path, BASE + "[features.gpu-amd]\n" + body, key, words)


def test_amd_is_refused_on_alpine(tmp_path: Path) -> None:
    refused(tmp_path, '[base]\ndistro = "alpine"\n[features.gpu-amd]\n', "features.gpu-amd",
            "ROCm is built for glibc")


# -- binds ------------------------------------------------------------------------------------

def test_binds_render_options(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + """
        [[features.binds.mounts]]
        host = "/srv/data"
        [[features.binds.mounts]]
        host = "/srv/models"
        guest = "/models"
        readonly = true
        recursive = false
        idmap = "idmap"
        [[features.binds.mounts]]
        host = "/srv/cache"
        guest = "/var/cache/app"
        idmap = "rootidmap"
        [[features.binds.mounts]]
        host = "/srv/ro"
        readonly = true
        idmap = "noidmap"
    """)
    files = section(nspawn_text(r), "Files")
    assert values(files, "Bind") == ["/srv/data:/srv/data:rbind",
                                     "/srv/cache:/var/cache/app:rbind,rootidmap"]
    assert values(files, "BindReadOnly") == ["/srv/models:/models:norbind,idmap",
                                             "/srv/ro:/srv/ro:rbind,noidmap"]


def test_binds_owneridmap_needs_systemd_256(tmp_path: Path) -> None:
    body = BASE + """
        [[features.binds.mounts]]
        host = "/srv/a"
        [[features.binds.mounts]]
        host = "/srv/b"
        idmap = "owneridmap"
    """
    bookworm = body.replace('distro = "debian"', 'distro = "debian"\nrelease = "bookworm"')
    text = refused(tmp_path, bookworm, "features.binds.mounts.1.idmap", "owneridmap",
                   "systemd 256", "target_systemd is 252")
    assert ":9:" in text  # the line of `idmap = "owneridmap"`
    r = load(tmp_path, "target_systemd = 256\n" + textwrap.dedent(bookworm))
    assert values(nspawn_text(r), "Bind")[1] == "/srv/b:/srv/b:rbind,owneridmap"
    r = load(tmp_path, textwrap.dedent(body))  # trixie, the default: its systemd is 257
    assert values(nspawn_text(r), "Bind")[1] == "/srv/b:/srv/b:rbind,owneridmap"


@pytest.mark.parametrize("field", ["host", "guest"])
@pytest.mark.parametrize("path", ["srv/data", "./data", "/srv/a:b", "/srv/../etc", "/../etc",
                                  "/..", "/./srv", "/srv/.", "/srv/a\\\\b", "/srv/\\u0007",
                                  ""])
def test_binds_refuse_bad_paths(tmp_path: Path, field: str, path: str) -> None:
    other = "" if field == "host" else 'host = "/srv/ok"\n'
    refused(tmp_path, BASE + f'[[features.binds.mounts]]\n{other}{field} = "{path}"\n',
            f"features.binds.mounts[0].{field}", "invalid value", "absolute path")


def test_binds_accept_dots_inside_names(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + '[[features.binds.mounts]]\nhost = "/srv/.cache/a..b"\n')
    assert values(nspawn_text(r), "Bind") == ["/srv/.cache/a..b:/srv/.cache/a..b:rbind"]


def test_binds_unknown_idmap_option(tmp_path: Path) -> None:
    refused(tmp_path, BASE + '[[features.binds.mounts]]\nhost = "/srv/a"\nidmap = "map"\n',
            "features.binds.mounts[0].idmap", "invalid value 'map'")


# -- limits -----------------------------------------------------------------------------------

LIMITS = BASE + """
    [features.limits]
    cpu_affinity = "0-1,8"
    cpu_quota = "150%"
    allowed_cpus = "0-3"
    memory_max = "2G"
    memory_swap_max = "512M"
    tasks_max = 512
    io_read_bandwidth_max = ["/dev/sda 100M", "/var/lib/machines 50M"]
    io_write_bandwidth_max = ["/dev/sda 20M"]
"""


def test_limits_cpu_affinity_goes_to_the_nspawn_file(tmp_path: Path) -> None:
    r = load(tmp_path, LIMITS)
    nspawn = nspawn_text(r)
    assert values(section(nspawn, "Exec"), "CPUAffinity") == ["0-1,8"]
    assert "CPUAffinity" not in dropin_text(r)


def test_limits_render_into_the_dropin(tmp_path: Path) -> None:
    dropin = dropin_text(load(tmp_path, LIMITS))
    assert section(dropin, "Service") == (
        "CPUQuota=150%\nAllowedCPUs=0-3\nMemoryMax=2G\nMemorySwapMax=512M\nTasksMax=512\n"
        "IOReadBandwidthMax=/dev/sda 100M\nIOReadBandwidthMax=/var/lib/machines 50M\n"
        "IOWriteBandwidthMax=/dev/sda 20M\n")


def test_limits_io_accepts_one_string_and_normalises_blanks(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + '[features.limits]\nio_read_bandwidth_max = "/dev/sda \\t 1.5M"\n'
             'io_write_bandwidth_max = ["/dev/vdb infinity", "/dev/vdc\\n5M"]\n')
    dropin = dropin_text(r)  # a line break between PATH and RATE must not reach the file
    assert values(dropin, "IOReadBandwidthMax") == ["/dev/sda 1.5M"]
    assert values(dropin, "IOWriteBandwidthMax") == ["/dev/vdb infinity", "/dev/vdc 5M"]


@pytest.mark.parametrize("value", ['["100M"]', '"100M"', '["/dev/sda 100M", "5G"]'])
def test_limits_bare_rate_says_path_rate(tmp_path: Path, value: str) -> None:
    refused(tmp_path, BASE + f"[features.limits]\nio_read_bandwidth_max = {value}\n",
            "features.limits.io_read_bandwidth_max", "bare rate", "PATH RATE")


@pytest.mark.parametrize("entry", ["sda 100M", "/dev/sda", "/dev/sda 100M 200M", "/dev/sda fast",
                                   "/dev/sda 100m", "/dev/sda 0", "/dev/../sda 1M",
                                   '/dev/\\"sda\\" 1M', "/dev/a\\\\b 1M"])
def test_limits_io_entries_must_be_path_rate(tmp_path: Path, entry: str) -> None:
    refused(tmp_path, BASE + f'[features.limits]\nio_write_bandwidth_max = ["{entry}"]\n',
            "features.limits.io_write_bandwidth_max", "entry 0")


@pytest.mark.parametrize("key,value", [
    ("memory_max", '"0"'), ("memory_max", '"0.5"'), ("memory_max", '"150%"'),
    ("memory_max", '"0%"'), ("memory_max", '"0.555%"'), ("memory_max", '"99999999999T"'),
    ("memory_swap_max", '"101%"'), ("cpu_quota", '"0%"'), ("cpu_quota", '"1.555%"'),
    ("cpu_quota", '"2"'), ("tasks_max", "0"), ("tasks_max", '"150%"'),
    ("tasks_max", "99999999999999999999"), ("allowed_cpus", '"3-1"'),
    ("allowed_cpus", '"8192"'), ("cpu_affinity", '"2-1"'), ("memory_max", '"2GB"'),
    ("memory_max", "2048"),
])
def test_limits_values_systemd_would_ignore_are_refused(tmp_path: Path, key: str, value: str) -> None:
    refused(tmp_path, BASE + f"[features.limits]\n{key} = {value}\n", f"features.limits.{key}")


@pytest.mark.parametrize("key,value", [
    ("memory_max", "100%"), ("memory_max", "0.5%"), ("memory_max", "1.5G"),
    ("memory_max", "infinity"), ("memory_swap_max", "0"), ("cpu_quota", "0.01%"),
    ("cpu_quota", "1200%"), ("tasks_max", "12.5%"), ("tasks_max", "infinity"),
    ("allowed_cpus", "0 2 4-7"), ("cpu_affinity", "8191"),
])
def test_limits_values_systemd_accepts(tmp_path: Path, key: str, value: str) -> None:
    r = load(tmp_path, BASE + f'[features.limits]\n{key} = "{value}"\n')
    rendered = nspawn_text(r) if key == "cpu_affinity" else dropin_text(r)
    assert f"={value}\n" in rendered


# -- private-users ----------------------------------------------------------------------------

def test_private_users_pick_by_default(tmp_path: Path) -> None:
    assert values(nspawn_text(load(tmp_path, BASE)), "PrivateUsers") == ["pick"]


@pytest.mark.parametrize("mode,written", [
    ('"identity"', "identity"), ('"no"', "no"), ('"yes"', "yes"),
    ("65536", "65536:65536"), ('"524288:65536"', "524288:65536"),
    # nspawn reads a bare 0 as "no" and 1 as "yes": a base UID is always written BASE:RANGE
    ("0", "0:65536"), ('"1"', "1:65536"),
])
def test_private_users_mode_replaces_the_default(tmp_path: Path, mode: str, written: str) -> None:
    r = load(tmp_path, BASE + f'[features.private-users]\nmode = {mode}\nownership = "map"\n')
    nspawn = nspawn_text(r)
    assert values(nspawn, "PrivateUsers") == [written]
    assert values(section(nspawn, "Files"), "PrivateUsersOwnership") == ["map"]


def test_private_users_ownership_alone_keeps_pick(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + '[features.private-users]\nownership = "chown"\n')
    nspawn = nspawn_text(r)
    assert values(nspawn, "PrivateUsers") == ["pick"]
    assert values(nspawn, "PrivateUsersOwnership") == ["chown"]


def test_private_users_recipe_nspawn_table_wins(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + '[features.private-users]\nmode = "identity"\nownership = "map"\n'
             '[nspawn.Exec]\nPrivateUsers = "no"\n[nspawn.Files]\nPrivateUsersOwnership = "off"\n')
    nspawn = nspawn_text(r)
    assert values(nspawn, "PrivateUsers") == ["no"]
    assert values(nspawn, "PrivateUsersOwnership") == ["off"]


def test_private_users_recipe_nspawn_table_without_the_feature(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + '[nspawn.Exec]\nPrivateUsers = false\n')
    assert values(nspawn_text(r), "PrivateUsers") == ["no"]


@pytest.mark.parametrize("mode", ['"0100"', '"00:65536"', '"100:0"', '"+5"', "65535",
                                  '"4294967295"', '"4294901760"', '"4294967294:2"',
                                  '"auto"', "-1", "true"])
def test_private_users_modes_nspawn_would_ignore_are_refused(tmp_path: Path, mode: str) -> None:
    refused(tmp_path, BASE + f"[features.private-users]\nmode = {mode}\n",
            "features.private-users.mode")


def test_private_users_highest_base(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + '[features.private-users]\nmode = "4294967294:1"\n')
    assert values(nspawn_text(r), "PrivateUsers") == ["4294967294:1"]


# -- network ----------------------------------------------------------------------------------

@pytest.mark.parametrize("table,expected", [
    ('mode = "host"', ["VirtualEthernet=no"]),
    ('mode = "veth"', ["VirtualEthernet=yes"]),
    ("", ["VirtualEthernet=yes"]),
    ('mode = "bridge"\nbridge = "br0"', ["Bridge=br0"]),
    ('mode = "zone"\nzone = "lab"', ["Zone=lab"]),
    ('ports = ["tcp:8080:80", "udp:53"]', ["VirtualEthernet=yes", "Port=tcp:8080:80",
                                           "Port=udp:53"]),
])
def test_network_modes(tmp_path: Path, table: str, expected: list[str]) -> None:
    nspawn = nspawn_text(load(tmp_path, BASE + f"[features.network]\n{table}\n"))
    assert section(nspawn, "Network").splitlines() == expected


@pytest.mark.parametrize("table,key,words", [
    ('mode = "bridge"', "features.network.bridge", ["bridge's name"]),
    ('mode = "zone"', "features.network.zone", ["zone name"]),
    ('mode = "host"\naddress = ["192.0.2.10/24"]', "features.network.mode", ["host"]),
    ('mode = "host"\nports = ["80"]', "features.network.mode", ["host"]),
    ('address = ["192.0.2.10"]', "features.network.address", ["entry 0", "prefix"]),
    ('address = ["192.0.2.300/24"]', "features.network.address", ["entry 0"]),
    ('address = ["192.0.2.1/24", "2001:db8::1/129"]', "features.network.address", ["entry 1"]),
    ('gateway = ["192.0.2.1/24"]', "features.network.gateway", ["entry 0", "an address"]),
    ('dns = ["resolver.example"]', "features.network.dns", ["entry 0"]),
    ('dhcp = true\naddress = ["192.0.2.10/24"]', "features.network.dhcp", ["exclude"]),
    ('bridge = "a-very-long-bridge-name"', "features.network.bridge", ["invalid value"]),
    ('ports = ["tcp:8080:80:1"]', "features.network.ports[0]", ["invalid value"]),
])
def test_network_errors(tmp_path: Path, table: str, key: str, words: list[str]) -> None:
    refused(tmp_path, BASE + f"[features.network]\n{table}\n", key, *words)


def test_networkd_file_for_dhcp() -> None:
    assert networkd_file(NetworkConfig()) == (
        "# Generated by nspawnbuild from the recipe's [features.network]\n"
        "[Match]\nName=host0\n\n[Link]\nRequiredForOnline=routable\n\n"
        "[Network]\nDHCP=yes\nIPv6AcceptRA=yes\n")


def test_networkd_file_for_static_ipv4_and_ipv6() -> None:
    text = networkd_file(NetworkConfig(address=("192.0.2.10/24", "2001:db8::10/64"),
                                       gateway=("192.0.2.1", "2001:db8::1"),
                                       dns=("192.0.2.53",), required_for_online="degraded"))
    assert text == (
        "# Generated by nspawnbuild from the recipe's [features.network]\n"
        "[Match]\nName=host0\n\n[Link]\nRequiredForOnline=degraded\n\n"
        "[Network]\nDHCP=no\nIPv6AcceptRA=no\n"
        "Address=192.0.2.10/24\nAddress=2001:db8::10/64\n"
        "Gateway=192.0.2.1\nGateway=2001:db8::1\nDNS=192.0.2.53\n")


def test_interfaces_file_for_dhcp() -> None:
    assert interfaces_file(NetworkConfig()) == (
        "# Generated by nspawnbuild from the recipe's [features.network]\n"
        "auto lo\niface lo inet loopback\n\nauto host0\n"
        "iface host0 inet dhcp\niface host0 inet6 auto\n")


def test_interfaces_file_for_static_ipv4_and_ipv6() -> None:
    text = interfaces_file(NetworkConfig(address=("192.0.2.10/24", "2001:db8::10/64"),
                                         gateway=("2001:db8::1", "192.0.2.1")))
    assert text == (
        "# Generated by nspawnbuild from the recipe's [features.network]\n"
        "auto lo\niface lo inet loopback\n\nauto host0\n"
        "iface host0 inet static\n    address 192.0.2.10/24\n    gateway 192.0.2.1\n"
        "iface host0 inet6 static\n    address 2001:db8::10/64\n    gateway 2001:db8::1\n")


def test_network_packages(tmp_path: Path) -> None:
    plain = make_plan(load(tmp_path, BASE + "[features.network]\n")).layer["packages"]
    dns = make_plan(load(tmp_path, BASE + '[features.network]\ndns = ["192.0.2.53"]\n'))
    ifupdown = make_plan(load(tmp_path, BASE + '[features.network]\nbackend = "ifupdown"\n'))
    assert "systemd-resolved" not in plain
    assert "systemd-resolved" in dns.layer["packages"]
    assert "ifupdown" in ifupdown.layer["packages"]


# -- basics, users, ssh: secrets and keys ------------------------------------------------------

@pytest.mark.parametrize("body,key", [
    ('[features.basics]\nroot_password_hash = "hunter2"\n', "features.basics.root_password_hash"),
    ('[[features.users.accounts]]\nname = "alice"\npassword_hash = "correct horse"\n',
     "features.users.accounts.0.password_hash"),
    ('[[features.users.accounts]]\nname = "alice"\npassword_hash = "$6$short"\n',
     "features.users.accounts.0.password_hash"),
])
def test_plaintext_passwords_are_refused_with_the_reason(tmp_path: Path, body: str, key: str) -> None:
    refused(tmp_path, BASE + body, key, "crypt(3) password hash, not a password",
            "openssl passwd -6", "plaintext password would be readable")


def test_password_hashes_are_accepted(tmp_path: Path) -> None:
    load(tmp_path, BASE + f'[features.basics]\nroot_password_hash = "{SHA512_HASH}"\n'
         f'[[features.users.accounts]]\nname = "alice"\npassword_hash = "{SHA512_HASH}"\n')


@pytest.mark.parametrize("entry", ["AAAAC3NzaC1lZDI1NTE5AAAAI", "ssh-ed25519", "hello world",
                                   "-----BEGIN OPENSSH PRIVATE KEY-----",
                                   "ssh-ed25519 AAAA$$$ me@host"])
def test_bad_authorized_keys_are_refused(tmp_path: Path, entry: str) -> None:
    refused(tmp_path, BASE + f'[features.ssh]\nauthorized_keys = ["{ED25519}", "{entry}"]\n',
            "features.ssh.authorized_keys", "entry 1", "ssh public key")
    refused(tmp_path, BASE + f'[[features.users.accounts]]\nname = "bob"\n'
            f'authorized_keys = ["{entry}"]\n',
            "features.users.accounts.0.authorized_keys", "entry 0", "ssh public key")


def test_authorized_keys_with_options_are_accepted(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + '[features.ssh]\nauthorized_keys = [\'no-pty,from="192.0.2.0/24" '
             f"{ED25519}', \"{RSA}\"]\n")
    assert root_keys(r) == [f'no-pty,from="192.0.2.0/24" {ED25519}', RSA]


def test_authorized_keys_files_are_relative_to_the_recipe(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "recipes"
    (sub / "keys").mkdir(parents=True)
    (sub / "keys" / "admin.pub").write_text(f"# the admins\n\n{ED25519}\n{RSA}\n")
    monkeypatch.chdir(tmp_path)  # not the recipe's directory
    r = load(sub, BASE + '[features.ssh]\nauthorized_keys_files = ["keys/admin.pub"]\n'
             '[[features.users.accounts]]\nname = "alice"\n'
             'authorized_keys_files = ["keys/admin.pub"]\n')
    assert root_keys(r) == [ED25519, RSA]
    assert make_plan(r).rootfs["plugin_data"]  # the keys' digests key the rootfs


def test_missing_authorized_keys_file_names_the_key(tmp_path: Path) -> None:
    refused(tmp_path, BASE + '[features.ssh]\nauthorized_keys_files = ["keys/nope.pub"]\n',
            "features.ssh.authorized_keys_files", "does not exist", "relative to the recipe")
    refused(tmp_path, BASE + '[[features.users.accounts]]\nname = "carol"\n'
            'authorized_keys_files = ["nope.pub"]\n',
            "features.users.accounts.0.authorized_keys_files", "does not exist")


def test_private_key_in_authorized_keys_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n"
                                         "-----END OPENSSH PRIVATE KEY-----\n")
    refused(tmp_path, BASE + '[features.ssh]\nauthorized_keys_files = ["id_ed25519"]\n',
            "features.ssh.authorized_keys_files", "id_ed25519:1", "never a private key")


# -- the command line -------------------------------------------------------------------------

@pytest.mark.parametrize("body,key", [
    (NVIDIA + 'devices = "all"\n', "features.gpu-nvidia.count"),
    (BASE + '[features.limits]\nio_read_bandwidth_max = ["100M"]\n',
     "features.limits.io_read_bandwidth_max"),
    (BASE + 'release = "bookworm"\n[[features.binds.mounts]]\nhost = "/srv/a"\n'
     'idmap = "owneridmap"\n', "features.binds.mounts.0.idmap"),
    (BASE + '[features.basics]\nroot_password_hash = "hunter2"\n',
     "features.basics.root_password_hash"),
    (BASE + '[features.private-users]\nmode = 65535\n', "features.private-users.mode"),
])
def test_validate_command_exits_2_without_a_traceback(tmp_path: Path, body: str, key: str) -> None:
    path = write(tmp_path, body)
    run = subprocess.run([str(BIN / "nspawnbuild"), "validate", str(path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NSPAWNBUILD_WORK": str(tmp_path / "work")})
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith(f"error: {path}:") and f"key '{key}'" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_resolv_conf_for_the_ifupdown_backend() -> None:
    assert resolv_conf(["192.0.2.53", "2001:db8::53"]) == (
        "# Generated by nspawnbuild from [features.network] dns\n"
        "nameserver 192.0.2.53\nnameserver 2001:db8::53\n")


# -- what configure does, as the distro's traits say --------------------------------------------

class Recorder(RootfsContext):
    """A RootfsContext on a plain directory that records what a feature does to the image:
    files are written without an owner (no root needed), commands are recorded, not run."""

    def __init__(self, root: Path, recipe: Recipe[AnyFeature]):
        super().__init__(root, recipe, recipe.distro, StepLog(root.parent / "build.log"))
        self.done: list[tuple[str, ...]] = []

    def write_file(self, dest: str, data: bytes | str, *, mode: int = 0o644,
                   owner: str | None = None) -> Path:
        text = data if isinstance(data, str) else data.decode()
        self.done.append(("write", dest, oct(mode), owner or ""))
        path = self.path(dest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def make_dir(self, path: str, *, mode: int = 0o755, owner: str | None = None) -> Path:
        self.done.append(("mkdir", path, oct(mode), owner or ""))
        host = self.path(path)
        host.mkdir(parents=True, exist_ok=True)
        return host

    def symlink(self, path: str, target: str) -> None:
        self.done.append(("symlink", path, target))

    def run(self, command: list[str], *, step: str, network: bool = True,
            binds_ro: Sequence[tuple[Path, str]] = ()) -> None:
        self.done.append(("run", shlex.join(command)))

    def text(self, dest: str) -> str:
        return self.path(dest).read_text()


def configured(tmp_path: Path, body: str, *names: str, users: str = "") -> Recorder:
    """Load ``body`` and run the configure() of the features ``names`` (all, when none), in run
    order, on a small tree (root and ``users`` in /etc/shadow, /etc/skel/.bashrc, /bin/bash, a
    zone)."""
    tmp_path.mkdir(exist_ok=True)
    r = load(tmp_path, body)
    root = tmp_path / "tree"
    for d in ("etc/skel", "bin", "usr/share/zoneinfo/Europe"):
        (root / d).mkdir(parents=True)
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n"
                                     + "".join(f"{u}:!:19000::::::\n" for u in users.split()))
    (root / "etc/skel/.bashrc").write_text("# skel\n")
    (root / "bin/bash").write_text("")
    (root / "usr/share/zoneinfo/Europe/Berlin").write_text("TZif")
    ctx = Recorder(root, r)
    for feature in r.features:
        if not names or feature.name in names:
            feature.configure(ctx)
    return ctx


LOCALES = '[features.locales]\nlocales = ["de_DE.UTF-8", "C.UTF-8"]\ntimezone = "Europe/Berlin"\n'


def test_locales_the_locale_gen_way(tmp_path: Path) -> None:
    ctx = configured(tmp_path, BASE + LOCALES, "locales")
    assert ctx.done == [("write", "/etc/locale.gen", "0o644", ""), ("run", "locale-gen"),
                        ("write", "/etc/default/locale", "0o644", ""),
                        ("write", "/etc/locale.conf", "0o644", ""),
                        ("symlink", "/etc/localtime", "../usr/share/zoneinfo/Europe/Berlin"),
                        ("write", "/etc/timezone", "0o644", "")]
    assert ctx.text("/etc/locale.gen") == "de_DE.UTF-8 UTF-8\n"
    assert ctx.text("/etc/default/locale") == ctx.text("/etc/locale.conf") == "LANG=de_DE.UTF-8\n"
    assert {"locales", "tzdata"} <= set(make_plan(ctx.recipe).layer["packages"])


def test_locales_only_c_runs_no_locale_gen(tmp_path: Path) -> None:
    ctx = configured(tmp_path, BASE + '[features.locales]\nlocales = ["C.UTF-8"]\n', "locales")
    assert ("run", "locale-gen") not in ctx.done and ctx.text("/etc/locale.gen") == ""


def test_locales_the_langpack_way(tmp_path: Path) -> None:
    ctx = configured(tmp_path, '[base]\ndistro = "fedora"\n' + LOCALES, "locales")
    assert [d[:2] for d in ctx.done] == [("write", "/etc/locale.conf"),
                                         ("symlink", "/etc/localtime"), ("write", "/etc/timezone")]
    assert ctx.text("/etc/locale.conf") == "LANG=de_DE.UTF-8\n"
    locales = ctx.recipe.feature("locales")
    assert locales is not None
    assert locales.packages(ctx.recipe) == ["glibc-langpack-de", "tzdata"]


def test_locales_the_musl_way(tmp_path: Path) -> None:
    ctx = configured(tmp_path, '[base]\ndistro = "alpine"\n' + LOCALES, "locales")
    assert [d[:2] for d in ctx.done][0] == ("write", "/etc/profile.d/20-nspawnbuild-locale.sh")
    assert ctx.text("/etc/profile.d/20-nspawnbuild-locale.sh") == (
        "export LANG=de_DE.UTF-8\nexport LC_COLLATE=C\n")
    locales = ctx.recipe.feature("locales")
    assert locales is not None and locales.packages(ctx.recipe)[0] != "locales"


def test_locales_on_a_distro_without_a_style_is_refused(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + LOCALES)
    feature = Locales(LocalesConfig(locales=("de_DE.UTF-8",)), LocalesTraits(style=""))
    [problem] = feature.validate(r)
    assert problem.key == "features.locales.locales"
    assert problem.message == "debian does not support [features.locales] yet"


def test_nvidia_on_alpine_is_refused_with_the_reason(tmp_path: Path) -> None:
    refused(tmp_path, '[base]\ndistro = "alpine"\n[features.gpu-nvidia]\ndriver_version = "535.1"\n',
            "features.gpu-nvidia", "built for glibc and Alpine uses musl")


def test_ssh_makes_host_keys_per_container_where_the_service_does_not(tmp_path: Path) -> None:
    debian = configured(tmp_path / "d", BASE + "[features.ssh]\nport = 2222\n", "ssh")
    assert debian.text("/etc/ssh/sshd_config.d/50-nspawnbuild.conf") == (
        "# Generated by nspawnbuild from the recipe's [features.ssh]\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPort 2222\n")
    unit = debian.text("/etc/systemd/system/nspawnbuild-ssh-keygen.service")
    assert "Before=ssh.service" in unit and "WantedBy=multi-user.target ssh.service" in unit
    assert [d for d in debian.done if d[0] == "run"] == [
        ("run", "systemctl enable nspawnbuild-ssh-keygen.service"), ("run", "systemctl enable ssh")]
    fedora = configured(tmp_path / "f", '[base]\ndistro = "fedora"\n[features.ssh]\n', "ssh")
    assert [d for d in fedora.done if d[0] == "run"] == [("run", "systemctl enable sshd")]
    assert not (fedora.root / "etc/systemd/system").exists()


def test_users_are_made_with_their_groups_keys_and_sudo(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "alice.pub").write_text(f"{ED25519}\n")
    ctx = configured(tmp_path / "d", BASE + f"""
        [[features.users.accounts]]
        name = "alice"
        uid = 1500
        group = "staff"
        groups = ["adm"]
        sudo = "nopasswd"
        password_hash = "{SHA512_HASH}"
        authorized_keys_files = ["alice.pub"]
    """, "users", users="alice")  # as useradd (recorded, not run) would have left it
    assert [d for d in ctx.done if d[0] == "run"] == [
        ("run", "groupadd -f staff"), ("run", "groupadd -f adm"),
        ("run", "useradd -m -d /home/alice -s /bin/bash -u 1500 -g staff -G adm alice")]
    assert ctx.text("/etc/shadow").splitlines()[1] == f"alice:{SHA512_HASH}:19000::::::"
    assert ("mkdir", "/home/alice/.ssh", "0o700", "alice") in ctx.done
    assert ("write", "/home/alice/.ssh/authorized_keys", "0o600", "alice") in ctx.done
    assert ctx.text("/home/alice/.ssh/authorized_keys") == f"{ED25519}\n"
    assert ctx.done[-1] == ("write", "/etc/sudoers.d/50-nspawnbuild-alice", "0o440", "")
    assert ctx.text("/etc/sudoers.d/50-nspawnbuild-alice") == "alice ALL=(ALL:ALL) NOPASSWD: ALL\n"


def test_users_default_shell_and_home(tmp_path: Path) -> None:
    ctx = configured(tmp_path, BASE + '[[features.users.accounts]]\nname = "svc"\nsystem = true\n',
                     "users")
    assert ctx.done == [("run", "useradd -m -d /home/svc -s /bin/bash -r svc")]
    users = ctx.recipe.feature("users")
    assert users is not None and users.packages(ctx.recipe) == []  # Debian has useradd


def test_firstboot_the_systemd_way(tmp_path: Path) -> None:
    ctx = configured(tmp_path, BASE + '[features.firstboot]\ncommands = ["echo a", "echo b"]\n',
                     "firstboot")
    assert ctx.text("/usr/local/libexec/nspawnbuild-firstboot") == (
        "#!/bin/sh\n# Generated by nspawnbuild: first-boot commands of recipe 'r'\nset -e\n\n"
        "echo a\n\necho b\n")
    unit = ctx.text("/etc/systemd/system/nspawnbuild-firstboot.service")
    assert "ExecStart=/usr/local/libexec/nspawnbuild-firstboot\n" in unit
    assert "ConditionPathExists=!/var/lib/nspawnbuild/firstboot.done\n" in unit
    assert ("write", "/usr/local/libexec/nspawnbuild-firstboot", "0o755", "") in ctx.done
    assert ctx.done[-1] == ("run", "systemctl enable nspawnbuild-firstboot.service")


def test_firstboot_the_openrc_way(tmp_path: Path) -> None:
    ctx = configured(tmp_path, '[base]\ndistro = "alpine"\n[features.firstboot]\n'
                     'commands = ["true"]\n', "firstboot")
    assert ctx.text("/etc/local.d/50-nspawnbuild-firstboot.start") == (
        "#!/bin/sh\n# Written by nspawnbuild: the image's first-boot commands, once per container "
        "(OpenRC local).\n[ -e /var/lib/nspawnbuild/firstboot.done ] && exit 0\n"
        "/usr/local/libexec/nspawnbuild-firstboot && mkdir -p /var/lib/nspawnbuild && "
        "touch /var/lib/nspawnbuild/firstboot.done\n")
    assert ("write", "/etc/local.d/50-nspawnbuild-firstboot.start", "0o755", "") in ctx.done
    assert ctx.done[-1] == ("run", "rc-update add local default")


def test_firstboot_without_commands_writes_nothing(tmp_path: Path) -> None:
    assert configured(tmp_path, BASE, "firstboot").done == []


def test_firstboot_gathers_the_features_commands_first(tmp_path: Path) -> None:
    class Greeter(Feature[NoConfig, NoTraits]):
        name = "greeter"

        def firstboot(self, recipe: Recipe[AnyFeature]) -> list[str]:
            return ["echo from a feature"]

    r = load(tmp_path, BASE + '[features.firstboot]\ncommands = ["echo from the recipe"]\n')
    r = dataclasses.replace(r, features=(Greeter(NoConfig(), NoTraits()), *r.features))
    firstboot = r.feature("firstboot")
    assert isinstance(firstboot, Firstboot)
    assert firstboot.commands(r) == ["echo from a feature", "echo from the recipe"]
