"""install never replaces a tree a container still runs from: --force over a running machine
is refused and changes nothing; once it stopped, the new tree replaces the old only when it is
complete (the old one is kept until then)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_hostile_install import NAME, make_artifact, write_sums

from conftest import BIN

BUSYBOX = shutil.which("busybox")


def install(art: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nspawnbuild"), "install", str(art), "--root", str(root),
                           *extra], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (in .ci/run's packages)")
def test_install_force_refuses_a_tree_a_process_runs_from(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art")
    root = tmp_path / "host"
    first = install(art, root)
    assert first.returncode == 0, first.stdout + first.stderr
    tree = root / "var/lib/machines" / NAME
    shutil.copy(BUSYBOX, tree / "busybox")  # a program to run with the tree as its root
    (tree / "etc/state").write_text("the running container's\n")
    runner = subprocess.Popen(["chroot", str(tree), "/busybox", "sleep", "60"])
    try:
        deadline = time.monotonic() + 10  # until chroot has exec'd busybox inside the tree
        comm = Path(f"/proc/{runner.pid}/comm")
        while comm.read_text().strip() == "chroot" and time.monotonic() < deadline:
            time.sleep(0.1)
        r = install(art, root, "--force")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert f"machine '{NAME}' is running from it (PID {runner.pid})" in r.stderr
        assert f"machinectl stop {NAME}" in r.stderr
        assert (tree / "etc/state").read_text() == "the running container's\n"
        assert (tree / "busybox").is_file()
    finally:
        runner.kill()
        runner.wait()
    r = install(art, root, "--force")  # stopped: replaced, the old tree gone once the new is in
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kept until the new one was in place" in r.stdout
    assert not (tree / "etc/state").exists() and (tree / "etc/os-release").is_file()
    assert sorted(p.name for p in tree.parent.iterdir()) == [NAME]  # no staging or old tree


def with_state(art: Path, *paths: str) -> Path:
    """``art`` with ``state`` in its manifest (as a recipe's ``state = [...]`` puts it)."""
    doc = json.loads((art / "manifest.json").read_text())
    doc["state"] = list(paths)
    (art / "manifest.json").write_text(json.dumps(doc))
    write_sums(art, [line.split()[1] for line in (art / "SHA256SUMS").read_text().splitlines()])
    return art


def test_force_keeps_the_machines_state_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "host"
    assert install(make_artifact(tmp_path / "v1"), root).returncode == 0
    tree = root / "var/lib/machines" / NAME
    (tree / "var/lib/app").mkdir(parents=True)
    (tree / "var/lib/app/db").write_text("the machine's data\n")
    (tree / "etc/changed-by-hand").write_text("not state\n")
    (tree / "srv").symlink_to("/etc")  # a link in the tree is the tree's: it stays inside
    art = with_state(make_artifact(tmp_path / "v2"), "/var/lib/app", "/srv/x", "/var/absent")
    r = install(art, root, "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kept the machine's state /var/lib/app" in r.stdout
    assert (tree / "var/lib/app/db").read_text() == "the machine's data\n"
    assert not (tree / "etc/changed-by-hand").exists()
    assert not Path("/etc/x").exists()


def test_state_paths_in_a_manifest_are_checked(tmp_path: Path) -> None:
    art = with_state(make_artifact(tmp_path / "bad"), "/var/../../etc")
    r = install(art, tmp_path / "host")
    assert r.returncode == 2 and "key 'state.0'" in r.stderr and "Traceback" not in r.stderr, \
        r.stderr
    assert not (tmp_path / "host").exists()


def test_restart_needs_systemd_for_the_root(tmp_path: Path) -> None:
    r = install(make_artifact(tmp_path / "art"), tmp_path / "host", "--restart")
    assert r.returncode == 2 and "--restart: needs systemd running on this host" in r.stderr, \
        r.stderr
    assert not (tmp_path / "host").exists()
