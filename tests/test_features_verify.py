"""The feature plugins' settings, checked by systemd itself.

systemd only *warns* about an unknown key or a value it cannot parse, then ignores the
setting, so rendering is checked with the real tools: the drop-in with
``systemd-analyze verify``, the .nspawn file by letting ``systemd-nspawn`` read it from
/run/systemd/nspawn/ (the only place besides /etc/systemd/nspawn/ where Bind=, [Network] and
PrivateUsers= are honoured). Needs root and systemd-container; no image is bootstrapped: a
tiny tree holding one static (or copied) ``true`` is enough for nspawn to parse its settings.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from nspawnbuild.feature import AnyFeature
from nspawnbuild.plan import nspawn_settings, unit_settings
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.render import DROPIN_NAME, render_dropin, render_nspawn

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: systemd-nspawn"),
]

MISSING = f"/srv/nspawnbuild-test-{uuid.uuid4().hex[:8]}"  # bind sources that cannot exist
RECIPE = f"""
[base]
distro = "debian"
components = ["main", "non-free"]

[features.gpu-nvidia]
driver_version = "535.183.01"
devices = [0, 2]

[features.gpu-dri]

[[features.binds.mounts]]
host = "{MISSING}/data"
guest = "/data"
[[features.binds.mounts]]
host = "{MISSING}/models"
guest = "/models"
readonly = true
recursive = false
idmap = "idmap"
[[features.binds.mounts]]
host = "{MISSING}/cache"
idmap = "rootidmap"
[[features.binds.mounts]]
host = "{MISSING}/ro"
readonly = true
idmap = "noidmap"

[features.limits]
cpu_affinity = "0"
cpu_quota = "150%"
allowed_cpus = "0-1"
memory_max = "2G"
memory_swap_max = "50%"
tasks_max = 512
io_read_bandwidth_max = ["/dev/sda 100M", "/var/lib/machines 50M"]
io_write_bandwidth_max = "/dev/sda 20M"

[features.private-users]
mode = "524288:65536"
ownership = "chown"

[features.network]
mode = "bridge"
bridge = "br0"
"""
# on these machines /run is not a tmpfs and nspawn says so on the way out: not a settings problem
NOISE = re.compile(r"^Attempted to remove disk file system under \"?/run/systemd/nspawn/propagate/")


@pytest.fixture
def recipe(tmp_path: Path) -> Recipe[AnyFeature]:
    path = tmp_path / "verify.toml"
    path.write_text(RECIPE)
    return load_recipe(path)


def machine_name() -> str:
    return f"nbfeat-{uuid.uuid4().hex[:10]}"


def test_dropin_passes_systemd_analyze_verify(recipe: Recipe[AnyFeature], tmp_path: Path) -> None:
    machine = machine_name()
    text = render_dropin(unit_settings(recipe), name=machine, digest="0",
                         version="test")
    # every feature that writes to the drop-in is in it
    for key in ("DeviceAllow=/dev/nvidia2 rw", "DeviceAllow=char-drm rw", "ExecStartPre=",
                "CPUQuota=", "AllowedCPUs=", "MemoryMax=", "MemorySwapMax=", "TasksMax=",
                "IOReadBandwidthMax=/dev/sda 100M", "IOWriteBandwidthMax=/dev/sda 20M"):
        assert key in text, key
    units = tmp_path / "units"
    (units / f"systemd-nspawn@{machine}.service.d").mkdir(parents=True)
    (units / f"systemd-nspawn@{machine}.service.d" / DROPIN_NAME).write_text(text)
    run = subprocess.run(["systemd-analyze", "verify", f"systemd-nspawn@{machine}.service"],
                         env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"},
                         capture_output=True, text=True, timeout=120)
    # systemd-analyze verify exits 0 even when it ignores settings: stderr is the verdict
    assert run.stderr == "" and run.returncode == 0, run.stderr


def tiny_tree(root: Path) -> Path:
    """A directory nspawn accepts as a container: /bin/true, its libraries, an os-release.

    busybox-static is used when installed (one file, no libraries); otherwise the host's own
    ``true`` is copied with the libraries ``ldd`` names.
    """
    for d in ("usr/bin", "usr/lib", "usr/lib64", "etc", "proc", "sys", "dev", "run", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{'bin' if link == 'sbin' else link}")
    busybox = shutil.which("busybox")
    static = busybox and subprocess.run(["ldd", busybox], capture_output=True).returncode != 0
    binary = Path(busybox if static else shutil.which("true") or "/bin/true").resolve()
    shutil.copy2(binary, root / "usr/bin" / binary.name)
    if binary.name != "true":
        (root / "usr/bin/true").symlink_to(binary.name)
    libs = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    for lib in re.findall(r"(/\S+) \(0x", libs):
        dest = root / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(lib).resolve(), dest)
    (root / "usr/lib/os-release").write_text("ID=nspawnbuild-test\nNAME=test\n")
    return root


def run_nspawn(text: str, machine: str, tree: Path) -> tuple[int, list[str]]:
    """Run /bin/true in ``tree`` with ``text`` as its trusted .nspawn; (exit code, stderr lines)."""
    settings = Path("/run/systemd/nspawn") / f"{machine}.nspawn"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(text)
    try:
        run = subprocess.run(["systemd-nspawn", "-D", str(tree), "-M", machine, "--register=no",
                              "--keep-unit", "--pipe", "/bin/true"],
                             capture_output=True, text=True, timeout=120)
    finally:
        settings.unlink()
    return run.returncode, [line for line in run.stderr.splitlines() if not NOISE.match(line)]


def test_nspawn_file_parses_without_warnings(recipe: Recipe[AnyFeature], tmp_path: Path) -> None:
    machine = machine_name()
    text = render_nspawn(nspawn_settings(recipe), name=machine,
                         digest="0", version="test")
    for key in ("Bind=/dev/nvidia0", "Bind=/dev/nvidia-uvm-tools", "Bind=/dev/dri",
                f"Bind={MISSING}/data:/data:rbind", f"BindReadOnly={MISSING}/models:/models:norbind,idmap",
                f"Bind={MISSING}/cache:{MISSING}/cache:rbind,rootidmap", "CPUAffinity=0",
                "PrivateUsers=524288:65536", "PrivateUsersOwnership=chown", "Bridge=br0"):
        assert key in text, key
    assert [line for line in text.splitlines() if line.startswith("PrivateUsers=")] == [
        "PrivateUsers=524288:65536"]
    sources = [line.split("=", 1)[1].split(":")[0] for line in text.splitlines()
               if line.startswith(("Bind=", "BindReadOnly="))]
    code, lines = run_nspawn(text, machine, tiny_tree(tmp_path / "tree"))
    # a parse problem is reported as "/run/systemd/nspawn/NAME.nspawn:LINE: ..." and ignored
    assert not [line for line in lines if f"{machine}.nspawn" in line], lines
    if code == 0:
        assert lines == [], lines
        return
    # The bind sources are missing on this host (at least the /srv ones): nspawn must get as far
    # as looking for them and stop there, not on anything else. (It parses Bind= options only
    # when it mounts: test_bind_options_are_understood_by_nspawn gets that far.)
    assert len(lines) == 1, lines
    failed = re.fullmatch(r"Failed to stat (/\S+): No such file or directory", lines[0])
    assert failed and failed.group(1) in sources, lines


def binds_recipe(tmp_path: Path, idmap_options: list[str], target: int = 252) -> Recipe[AnyFeature]:
    mounts = ""
    for i, opt in enumerate(idmap_options):
        (tmp_path / f"src{i}").mkdir()
        mounts += (f'[[features.binds.mounts]]\nhost = "{tmp_path}/src{i}"\nguest = "/mnt{i}"\n'
                   f'readonly = {"true" if i % 2 else "false"}\n'
                   f'recursive = {"false" if i % 3 == 1 else "true"}\nidmap = "{opt}"\n')
    path = tmp_path / "binds.toml"
    path.write_text(f'target_systemd = {target}\n[base]\ndistro = "debian"\n'
                    '[features.private-users]\nmode = "524288:65536"\nownership = "chown"\n'
                    f'[features.limits]\ncpu_affinity = "0"\n{mounts}')
    return load_recipe(path)


def test_bind_options_are_understood_by_nspawn(tmp_path: Path) -> None:
    """With every bind source present nspawn gets as far as mounting, where it parses the
    options (a bad one is "Invalid bind mount option: X", not a settings-file warning)."""
    recipe = binds_recipe(tmp_path, ["idmap", "rootidmap", "noidmap", "idmap"])
    machine = machine_name()
    text = render_nspawn(nspawn_settings(recipe), name=machine, digest="0",
                         version="test")
    assert "norbind,rootidmap" in text and "BindReadOnly=" in text
    code, lines = run_nspawn(text, machine, tiny_tree(tmp_path / "tree"))
    assert code == 0 and lines == [], lines


def nspawn_version() -> int:
    try:
        out = subprocess.run(["systemd-nspawn", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return 0  # not installed: the tests that need it fail, saying so
    found = re.search(r"systemd (\d+)", out)
    return int(found.group(1)) if found else 0


@pytest.mark.skipif(nspawn_version() >= 256, reason="this host's nspawn knows owneridmap")
def test_owneridmap_is_refused_by_an_older_nspawn(tmp_path: Path) -> None:
    """Why binds refuses owneridmap unless target_systemd >= 256: older nspawn refuses to start."""
    recipe = binds_recipe(tmp_path, ["owneridmap"], target=256)
    machine = machine_name()
    text = render_nspawn(nspawn_settings(recipe), name=machine, digest="0",
                         version="test")
    code, lines = run_nspawn(text, machine, tiny_tree(tmp_path / "tree"))
    assert code != 0 and lines == ["Invalid bind mount option: owneridmap"], lines
