"""The example recipes build for real, and their settings pass systemd's own checks."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from test_integration_build import NAME, built, tar_members  # noqa: F401  (fixture)

from conftest import ROOT, Env, import_tarball, tarball_of
from nspawnbuild.plan import make_plan
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.render import render_dropin, render_nspawn
from nspawnbuild.settings import Setting
from sbomcheck import check_sbom

pytestmark = pytest.mark.integration

EXAMPLES = sorted(p.stem for p in (ROOT / "recipes").glob("*.toml"))


def rendered(path: Path) -> tuple[str, str]:
    plan = make_plan(load_recipe(path))
    common = {"name": plan.name, "digest": plan.config["digest"], "version": "test"}
    return (render_nspawn([Setting(*s) for s in plan.config["nspawn"]], **common),
            render_dropin([Setting(*s) for s in plan.config["unit"]], **common))


@pytest.mark.parametrize("example", ["ollama-gpu", "ollama-rocm"])
def test_ollama_builds_without_a_gpu_or_the_web(env: Env, example: str) -> None:
    """Both GPU examples on the default release; the host's half (the NVIDIA driver's files,
    the AMD groups' ids) is made at install: test_integration_gpu.py."""
    r = env.doit("build", f"recipe={example}")
    assert r.returncode == 0, r.stdout + r.stderr
    out = env.out / example
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base"]["release"] == "trixie" and manifest["target_systemd"] == 257
    # no GPU user-space from the archive: NVIDIA's comes from the host, ROCm's with Ollama
    assert not [p for p in manifest["packages"] if "nvidia" in p["name"] or "cuda" in p["name"]
                or "rocm" in p["name"]]
    nspawn = (out / f"{example}.nspawn").read_text()
    assert "Bridge=br0\n" in nspawn
    assert "Bind=/srv/ollama:/var/lib/ollama:rbind,idmap\n" in nspawn
    dropin = (out / f"systemd-nspawn@{example}.service.d" / "50-nspawnbuild.conf").read_text()
    members = tar_members(tarball_of(out))
    if example == "ollama-gpu":
        assert manifest["host_needs"] == {"gpu-nvidia": {"driver": "host", "check": True,
                                                              "devices": ["0"]}}
        assert "nvidia" not in nspawn and "nvidia" not in dropin
        assert "./etc/systemd/system/sysinit.target.wants/nspawnbuild-gpu-ldconfig.service" \
            in members
    else:
        assert manifest["host_needs"] == {"gpu-amd": {"nodes": "all"}}
        assert "Bind=/dev/kfd\nBind=/dev/dri\n" in nspawn
        assert "DeviceAllow=/dev/kfd rw\nDeviceAllow=char-drm rw\n" in dropin
    wants = "./etc/systemd/system/multi-user.target.wants/"
    for unit in ("ollama.service", "nspawnbuild-firstboot.service", "ssh.service"):
        assert wants + unit in members, unit
    assert "./usr/local/libexec/nspawnbuild-firstboot" in members
    assert not [n for n in members if n.startswith("./etc/ssh/ssh_host_")]
    check_sbom(out)


@pytest.mark.parametrize("release,major", [(None, "17"), ("bookworm", "15")])
def test_postgres_builds_without_shared_secrets(env: Env, release: str | None,
                                                major: str) -> None:
    """On the default release (trixie: PostgreSQL 17) and pinned to bookworm (15): the recipe
    finds the cluster's directory in the image, it names no version."""
    name = "postgres"
    if release:
        name = f"postgres-{release}"
        recipe = env.tmp / f"{name}.toml"
        recipe.write_text(f'extends = "{ROOT / "recipes" / "postgres.toml"}"\nname = "{name}"\n'
                          f'[base]\nrelease = "{release}"\n')
    r = env.nspawnbuild("build", str(recipe) if release else "postgres", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    out = env.out / name
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(p["name"] == f"postgresql-{major}" for p in manifest["packages"])
    members = tar_members(tarball_of(out))
    assert "./etc/ssl/private/ssl-cert-snakeoil.key" not in members
    assert f"./etc/postgresql/{major}/main/conf.d/50-listen.conf" in members
    # one cluster directory, the installed version's (none made by the recipe for another)
    assert {m.split("/")[3] for m in members if m.startswith("./etc/postgresql/")} == {major}
    conf = members[f"./etc/postgresql/{major}/main/conf.d/50-listen.conf"]
    # owned by postgres: the uid of the cluster's data directory (the tarball keeps numeric ids)
    data = members[f"./var/lib/postgresql/{major}/main"]
    assert conf.uid == data.uid and conf.uid != 0 and conf.size > 0
    assert "Port=tcp:5432:5432\n" in (out / f"{name}.nspawn").read_text()
    check_sbom(out)


@pytest.fixture(scope="module")
def imported_tree(built: Env, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return import_tarball(tarball_of(built.out / NAME),
                          tmp_path_factory.mktemp("images"), "tree")


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_settings_pass_nspawn_and_systemd_analyze(example: str, imported_tree: Path,
                                                          tmp_path: Path) -> None:
    nspawn, dropin = rendered(ROOT / "recipes" / f"{example}.toml")
    machine = f"nsbt-{uuid.uuid4().hex[:6]}"

    units = tmp_path / "units" / f"systemd-nspawn@{machine}.service.d"
    units.mkdir(parents=True)
    (units / "50-nspawnbuild.conf").write_text(dropin)
    verify = subprocess.run(["systemd-analyze", "verify", f"systemd-nspawn@{machine}.service"],
                            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path / 'units'}:"},
                            capture_output=True, text=True)
    assert verify.stderr == "", verify.stderr

    trusted = Path("/run/systemd/nspawn") / f"{machine}.nspawn"
    trusted.parent.mkdir(parents=True, exist_ok=True)
    trusted.write_text(nspawn)
    netns = f"nsbt-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        run = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "systemd-nspawn", "-D",
                              str(imported_tree), "-M", machine, "--register=no", "--keep-unit",
                              "--pipe", "/bin/true"], capture_output=True, text=True, timeout=120)
    finally:
        trusted.unlink()
        subprocess.run(["ip", "netns", "delete", netns], check=False)
    complaints = [line for line in run.stderr.splitlines() if f"{machine}.nspawn" in line]
    assert not complaints, complaints
    if run.returncode != 0:
        # what this host lacks (a GPU, the recipe's host directories, its bridge) may stop the
        # container after the settings were read; anything else is a failure
        missing = [s.split("=", 1)[1].split(":")[0] for s in nspawn.splitlines()
                   if s.startswith(("Bind=", "BindReadOnly=", "Bridge="))]
        assert any(m in run.stderr for m in missing), run.stderr
