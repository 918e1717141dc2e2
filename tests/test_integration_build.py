"""The whole pipeline for real: mmdebstrap, systemd-nspawn, systemd-import, systemd-analyze."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from conftest import (
    ROOT,
    Env,
    artifact_digests,
    import_tarball,
    tar_stream,
    tarball_of,
    unpack,
)
from nspawnbuild import tarread
from sbomcheck import check_sbom, declared_share

pytestmark = pytest.mark.integration

NAME = "debian-base"
BASE_RECIPE = ROOT / "recipes" / f"{NAME}.toml"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tar_members(tarball: Path) -> dict[str, tarfile.TarInfo]:
    with tar_stream(tarball) as tar:
        members = {}
        for m in tar:
            if m.isfile() and m.name in ("./etc/hostname", "./etc/machine-id", "./etc/hello"):
                f = tar.extractfile(m)
                m.pax_headers["content"] = f.read().decode() if f else ""
            members[m.name] = m
        return members


def ran(output: str) -> list[str]:
    """Tasks the reporter says it ran (as opposed to 'up to date')."""
    return [line.split()[0] for line in output.splitlines() if line.rstrip().endswith("...")]


def write_recipe(path: Path, body: str) -> Path:
    path.write_text(f'extends = "{BASE_RECIPE}"\n{body}')
    return path


def mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [line.split()[4] for line in text.splitlines() if line.split()[4].startswith(str(path))]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Env:
    """debian-base built once with ``doit build recipe=debian-base`` from the project root."""
    tmp = tmp_path_factory.mktemp("built")
    e = Env(tmp, tmp / "out", tmp / "work", shared_cache)
    r = e.doit("build", f"recipe={NAME}")
    assert r.returncode == 0, r.stdout + r.stderr
    return e


def test_artifacts_are_complete_and_checksummed(built: Env) -> None:
    out = built.out / NAME
    assert sorted(p.name for p in out.iterdir()) == sorted([
        f"{NAME}.tar.gz", f"{NAME}.nspawn", f"systemd-nspawn@{NAME}.service.d",
        "manifest.json", f"{NAME}.spdx.json", "SHA256SUMS", "build.log"])
    assert (out / f"systemd-nspawn@{NAME}.service.d" / "50-nspawnbuild.conf").is_file()
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    sums = (out / "SHA256SUMS").read_text()
    # gzip: the default for trixie's systemd 257, whose pull-tar cannot read zstd
    assert f"  {NAME}.tar.gz\n" in sums and f"  {NAME}.nspawn\n" in sums
    assert "[Exec]\nPrivateUsers=pick\n" in (out / f"{NAME}.nspawn").read_text()


def test_manifest_describes_the_image(built: Env) -> None:
    out = built.out / NAME
    m = json.loads((out / "manifest.json").read_text())
    assert m["name"] == NAME
    assert len(m["recipe_digest"]) == 64
    assert m["tool"]["name"] == "nspawnbuild" and m["tool"]["version"]
    assert m["source_date_epoch"] == 1704067200
    # the default release, and the target systemd it implies
    assert (m["base"]["distro"], m["base"]["release"]) == ("debian", "trixie")
    assert m["target_systemd"] == 257 and m["packages"] and next(
        p["version"] for p in m["packages"] if p["name"] == "systemd").startswith("257.")
    assert m["base"]["arch"] == subprocess.run(["dpkg", "--print-architecture"],
                                               capture_output=True, text=True).stdout.strip()
    names = {p["name"]: p["version"] for p in m["packages"]}
    for pkg in ("systemd", "systemd-sysv", "dbus", "apt", "ca-certificates", "procps"):
        assert names.get(pkg), f"{pkg} missing from manifest"
    assert m["tree"]["bytes"] > 50_000_000 and m["tree"]["files"] > 1000
    tarball = tarball_of(out)
    assert m["artifacts"]["tarball"]["sha256"] == sha256(tarball)
    with tarread.open_stream(tarball) as fh:
        raw = fh.read()
    assert m["artifacts"]["tar"]["sha256"] == hashlib.sha256(raw).hexdigest()


def test_sbom_lists_every_package_with_its_license(built: Env) -> None:
    """NAME.spdx.json is valid SPDX by the SPDX tools, and Debian's machine-readable copyright
    files give most packages a declared license."""
    doc = check_sbom(built.out / NAME)
    by_name = {p["name"]: p for p in doc["packages"][1:]}
    assert by_name["systemd"]["licenseDeclared"] != "NOASSERTION"
    assert by_name["systemd"]["sourceInfo"] == "built from the source package systemd"
    assert "GPL-2.0-or-later" in by_name["bash"]["licenseDeclared"]
    assert declared_share(doc) > 0.5, declared_share(doc)
    manifest = json.loads((built.out / NAME / "manifest.json").read_text())
    assert all(p["digest"].startswith("sha256:") for p in manifest["packages"])


def test_image_carries_no_host_state(built: Env) -> None:
    members = tar_members(tarball_of(built.out / NAME))
    assert not [n for n in members if n.startswith("./etc/ssh/ssh_host_")]
    assert members["./etc/machine-id"].pax_headers["content"] == ""
    assert members["./etc/hostname"].pax_headers["content"] == f"{NAME}\n"
    assert "./etc/resolv.conf" not in members
    assert not [n for n in members if n.startswith("./var/lib/apt/lists/") and
                members[n].isfile() and members[n].size > 0]
    assert not [n for n, m in members.items() if m.ischr() or m.isblk()]
    assert not [n for n in members if n.startswith("/") or "/../" in n]
    assert max(m.mtime for m in members.values()) <= 1704067200
    assert {m.uname for m in members.values()} == {""}


def test_tarball_imports_and_runs_with_trusted_settings(built: Env, tmp_path: Path) -> None:
    """Import with the real systemd-import; run nspawn with the .nspawn in a trusted place."""
    out = built.out / NAME
    machine = f"nsbtest-{uuid.uuid4().hex[:8]}"
    images = tmp_path / "machines"
    assert (import_tarball(tarball_of(out), images, machine)
            / "usr/lib/systemd/systemd").is_file()

    trusted = Path("/run/systemd/nspawn") / f"{machine}.nspawn"
    trusted.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / f"{NAME}.nspawn", trusted)
    try:
        run = subprocess.run(["systemd-nspawn", "-D", str(images / machine), "-M", machine,
                              "--register=no", "--keep-unit", "--pipe", "/bin/true"],
                             capture_output=True, text=True, timeout=120)
    finally:
        trusted.unlink()
    assert run.returncode == 0, run.stderr
    complaints = [line for line in run.stderr.splitlines() if f"{machine}.nspawn" in line]
    assert not complaints, complaints


def test_dropin_passes_systemd_analyze_verify(built: Env, tmp_path: Path) -> None:
    out = built.out / NAME
    machine = f"nsbtest-{uuid.uuid4().hex[:8]}"
    unit_dir = tmp_path / "units" / f"systemd-nspawn@{machine}.service.d"
    unit_dir.mkdir(parents=True)
    shutil.copy(out / f"systemd-nspawn@{NAME}.service.d" / "50-nspawnbuild.conf", unit_dir)
    r = subprocess.run(["systemd-analyze", "verify", f"systemd-nspawn@{machine}.service"],
                       env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path / 'units'}:"},
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_rebuild_with_nothing_changed_runs_no_task(built: Env) -> None:
    tarball = tarball_of(built.out / NAME)
    before = tarball.stat().st_mtime_ns
    r = built.doit("build", f"recipe={NAME}")
    assert r.returncode == 0, r.stderr
    assert ran(r.stdout) == [], r.stdout
    assert "rootfs:debian-base up to date" in r.stdout
    assert tarball.stat().st_mtime_ns == before
    # the console script runs the same tasks against the same state
    r = built.nspawnbuild("build", NAME, cwd=ROOT)
    assert r.returncode == 0 and ran(r.stdout) == [], r.stdout + r.stderr


def test_nspawn_only_change_leaves_the_tarball_alone(env: Env) -> None:
    recipe = write_recipe(env.tmp / "inc.toml", 'name = "inc"\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    tarball = tarball_of(env.out / "inc")
    mtime, digest = tarball.stat().st_mtime_ns, sha256(tarball)

    write_recipe(recipe, 'name = "inc"\n\n[nspawn.Exec]\nLimitNOFILE = 4096\n'
                 '\n[nspawn.Files]\nBindReadOnly = ["/srv/a:/a", "/srv/b:/b"]\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(ran(r.stdout)) == ["configure:inc", "manifest:inc", "resolve:inc"], r.stdout
    assert tarball.stat().st_mtime_ns == mtime and sha256(tarball) == digest
    text = (env.out / "inc" / "inc.nspawn").read_text()
    assert "LimitNOFILE=4096" in text
    assert "BindReadOnly=/srv/a:/a\nBindReadOnly=/srv/b:/b\n" in text
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=env.out / "inc",
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout

    # whitespace and comments change nothing at all
    recipe.write_text(recipe.read_text().replace("\n[nspawn.Exec]", "\n# a comment\n\n[nspawn.Exec]"))
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0 and ran(r.stdout) == [], r.stdout


def test_post_step_change_reuses_the_cached_bootstrap(env: Env) -> None:
    recipe = write_recipe(env.tmp / "poststep.toml",
                          '[[post]]\nname = "stamp"\nrun = "echo one > /etc/stamp"\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    write_recipe(recipe, '[[post]]\nname = "stamp"\nrun = "echo two > /etc/stamp"\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bootstrap:poststep up to date" in r.stdout
    assert "rootfs:poststep" in ran(r.stdout) and "pack:poststep" in ran(r.stdout)
    tree = unpack(tarball_of(env.out / "poststep"), env.tmp / "tree")
    assert (tree / "etc/stamp").read_text() == "two\n"


def test_failing_post_step_names_step_and_log_and_keeps_old_artifacts(env: Env) -> None:
    recipe = write_recipe(env.tmp / "failing.toml", '[[post]]\nrun = "true"\n')
    assert env.nspawnbuild("build", str(recipe)).returncode == 0
    out = env.out / "failing"
    before = artifact_digests(out)

    write_recipe(recipe, '[[post]]\nrun = "true"\n\n[[post]]\nname = "breaks"\n'
                 'run = """\necho preparing\necho "it went wrong" >&2\nexit 3\n"""\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 1
    assert "post-step 2 (breaks) failed with exit code 3" in r.stderr
    assert "command: echo preparing ..." in r.stderr
    assert "it went wrong" in r.stderr
    assert "Traceback" not in r.stderr
    log = env.work / "recipes" / "failing" / "logs" / "rootfs.log"
    assert f"full log: {log}" in r.stderr and "it went wrong" in log.read_text()
    assert artifact_digests(out) == before
    assert not (env.work / "recipes" / "failing" / "layer.new").exists()
    assert "it went wrong" in (out / "build.log").read_text()  # the failed build's log
    assert mounts_under(env.tmp) == []


def test_post_steps_run_inside_the_image_without_host_files(env: Env) -> None:
    secret = env.tmp / "host-secret"
    secret.write_text("do not copy me")
    recipe = write_recipe(env.tmp / "sandboxed.toml", f"""
[[post]]
run = '''
test ! -e {secret}
test "$(cut -d. -f1 /etc/debian_version)" = "13"
hostname > /etc/build-hostname
'''

[[post]]
name = "packages from the bootstrap's archive state"
run = "apt-get install -y --no-install-recommends file"
""")
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    tree = unpack(tarball_of(env.out / "sandboxed"), env.tmp / "tree")
    assert (tree / "etc/build-hostname").read_text().strip() == "sandboxed"
    manifest = json.loads((env.out / "sandboxed" / "manifest.json").read_text())
    assert "file" in {p["name"] for p in manifest["packages"]}
    assert not [p for p in (tree / "var/lib/apt/lists").iterdir() if p.is_file() and
                p.name != "lock"]


def test_third_party_plugin_from_entry_point(env: Env, tmp_path: Path) -> None:
    """A plugin installed like any other distribution is loaded and used in a build."""
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--target", str(target),
                          str(ROOT / "tests" / "fixtures" / "nspawnbuild-hello")],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    extra = {"PYTHONPATH": str(target)}
    listing = env.nspawnbuild("plugins", **extra)
    assert "hello" in listing.stdout and "nspawnbuild-hello 1.0.0" in listing.stdout

    recipe = write_recipe(env.tmp / "greeter.toml", '[features.hello]\ngreeting = "hi there"\n')
    r = env.nspawnbuild("build", str(recipe), **extra)
    assert r.returncode == 0, r.stdout + r.stderr
    members = tar_members(tarball_of(env.out / "greeter"))
    assert members["./etc/hello"].pax_headers["content"] == "hi there\n"
    assert "Environment=HELLO_FROM=debian" in (env.out / "greeter" / "greeter.nspawn").read_text()

    # without the plugin, the same recipe is bad input naming the feature
    r = env.nspawnbuild("validate", str(recipe))
    assert r.returncode == 2 and "unknown feature 'hello'" in r.stderr


def test_same_recipe_in_other_directories_gives_the_same_tarball(built: Env, env: Env) -> None:
    r = env.nspawnbuild("build", NAME, cwd=ROOT, NSPAWNBUILD_OUT=str(env.tmp / "o2"),
                        NSPAWNBUILD_WORK=str(env.tmp / "w2"))
    assert r.returncode == 0, r.stdout + r.stderr
    a = tarball_of(built.out / NAME)
    b = tarball_of(env.tmp / "o2" / NAME)
    assert sha256(a) == sha256(b)
