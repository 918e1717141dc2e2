"""The audit finds secrets and host state in tarballs, and only those."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, Env
from nspawnbuild.audit import Finding, audit_tarball, split
from nspawnbuild.pack import pack

PEM = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
OPENSSH = (b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
           b"-----END OPENSSH PRIVATE KEY-----\n")


def tree(root: Path, files: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for rel, mode in (modes or {}).items():
        p = root / rel
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)
    return root


def packed(tmp_path: Path, root: Path, compression: str = "zstd") -> Path:
    dest = tmp_path / f"image{compression}.tar"
    pack(root, dest, 1704067200, compression, 3 if compression == "zstd" else 1)
    return dest


def test_clean_tree_has_no_findings(tmp_path: Path) -> None:
    root = tree(tmp_path / "root", {"etc/machine-id": b"", "etc/hostname": b"box\n",
                                    "etc/ssh/sshd_config": b"Port 22\n",
                                    "usr/share/doc/README": b"-----BEGIN CERTIFICATE-----\n",
                                    "tmp/scratch": b"x"},
                modes={"tmp": 0o1777, "var/tmp": 0o1777})
    os.chmod(root / "tmp/scratch", 0o666)  # world-writable inside a tmp dir is fine
    assert audit_tarball(packed(tmp_path, root), machine="box") == []


@pytest.mark.parametrize("compression", ["zstd", "xz", "gzip", "none"])
def test_every_check_fires(tmp_path: Path, compression: str) -> None:
    host_resolv = Path("/etc/resolv.conf").read_bytes() if Path("/etc/resolv.conf").exists() else b""
    root = tree(tmp_path / "root", {
        "etc/ssh/ssh_host_ed25519_key": b"key", "etc/ssh/ssh_host_ed25519_key.pub": b"pub",
        "etc/machine-id": b"0123456789abcdef0123456789abcdef\n",
        "etc/resolv.conf": host_resolv or b"nameserver 192.0.2.53\n",
        "etc/hostname": (socket.gethostname() + "\n").encode(),
        "opt/app/server.key": PEM, "root/.ssh/id_ed25519": OPENSSH,
        "etc/writable.conf": b"x"}, modes={"srv/drop": 0o777})
    os.chmod(root / "etc/writable.conf", 0o666)
    found = audit_tarball(packed(tmp_path, root, compression), machine="box")
    checks = {(f.check, f.path) for f in found}
    expected = {("ssh-host-key", "/etc/ssh/ssh_host_ed25519_key"),
                ("ssh-host-key", "/etc/ssh/ssh_host_ed25519_key.pub"),
                ("machine-id", "/etc/machine-id"), ("hostname", "/etc/hostname"),
                ("private-key", "/opt/app/server.key"), ("private-key", "/root/.ssh/id_ed25519"),
                ("world-writable", "/etc/writable.conf"), ("world-writable", "/srv/drop")}
    if host_resolv.strip():
        expected.add(("resolv-conf", "/etc/resolv.conf"))
    assert checks == expected


def test_allow_rules() -> None:
    f = Finding("private-key", "/opt/demo/key.pem", "a private key")
    assert f.allowed_by(["private-key:/opt/demo/*"])
    assert f.allowed_by(["/opt/*"])
    assert not f.allowed_by(["machine-id:/opt/*", "private-key:/etc/*"])
    failing, allowed = split([f, Finding("machine-id", "/etc/machine-id", "")], ["/opt/*"])
    assert [x.check for x in failing] == ["machine-id"] and allowed == [f]


def test_audit_command_exit_codes(tmp_path: Path) -> None:
    dirty = packed(tmp_path, tree(tmp_path / "dirty", {"opt/k.pem": PEM}))
    (tmp_path / "c").mkdir()
    clean = packed(tmp_path / "c", tree(tmp_path / "clean", {"etc/motd": b"hi\n"}))
    run = lambda *a: subprocess.run([str(BIN / "nspawnbuild"), "audit", *a],  # noqa: E731
                                    capture_output=True, text=True)
    r = run(str(dirty))
    assert r.returncode == 1 and "private-key: /opt/k.pem" in r.stdout
    r = run(str(dirty), "--allow", "private-key:/opt/*")
    assert r.returncode == 0 and "allowed: private-key: /opt/k.pem" in r.stdout
    assert run(str(clean)).returncode == 0
    r = run(str(tmp_path / "missing.tar"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (tmp_path / "junk.tar.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    r = run(str(tmp_path / "junk.tar.zst"))
    assert r.returncode == 2 and "cannot read it as a tarball" in r.stderr


@pytest.mark.integration
def test_a_build_with_a_secret_fails_unless_the_recipe_allows_it(env: Env) -> None:
    from test_integration_build import write_recipe

    step = ('[[post]]\nrun = "mkdir -p /opt/demo && printf -- '
            "'-----BEGIN PRIVATE KEY-----\\\\nAAAA\\\\n' > /opt/demo/key.pem\"\n")
    recipe = write_recipe(env.tmp / "leaky.toml", step)
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the audit of leaky.tar.gz and its settings found secrets, host state" in r.stderr
    assert "private-key: /opt/demo/key.pem" in r.stderr and "Traceback" not in r.stderr
    assert [p.name for p in (env.out / "leaky").iterdir()] == ["build.log"]  # no artifact

    write_recipe(recipe, step + '\n[audit]\nallow = ["private-key:/opt/demo/*"]\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = (env.out / "leaky" / "manifest.json").read_text()
    assert "private-key: /opt/demo/key.pem" in manifest


def test_the_packer_feeds_the_same_audit_as_reading_the_tarball(tmp_path: Path) -> None:
    from nspawnbuild.audit import Auditor

    root = tree(tmp_path / "root", {"etc/machine-id": b"abc\n", "opt/k.pem": PEM,
                                    "etc/ssh/ssh_host_rsa_key": b"k", "etc/ok": b"fine\n"},
                modes={"srv/drop": 0o777})
    auditor = Auditor(machine="box")
    dest = tmp_path / "x.tar.zst"
    pack(root, dest, 1704067200, "zstd", 3, inspect=auditor.add)
    assert auditor.result() == audit_tarball(dest, machine="box")
    assert {f.check for f in auditor.result()} == {"machine-id", "private-key", "ssh-host-key",
                                                     "world-writable"}


def test_check_names_are_stable_and_the_packer_hands_over_what_the_audit_searches() -> None:
    """Recipes' ``[audit] allow`` rules and manifests name the checks; a rename would break them."""
    from nspawnbuild import audit
    from nspawnbuild.pack import INSPECT_BYTES

    assert audit.CHECKS[:6] == ("ssh-host-key", "machine-id", "resolv-conf", "hostname",
                                "private-key", "world-writable")
    assert set(audit.CHECKS) == set(audit.TARBALL_CHECKS) | set(audit.SETTINGS_CHECKS)
    assert INSPECT_BYTES == audit.SCAN_BYTES  # else a build and `nspawnbuild audit` would differ


@pytest.mark.parametrize("rule,ok", [
    ("private-key:/opt/demo/*", True),
    ("/opt/demo/*", True),
    ("nspawn-private-users:web.nspawn:PrivateUsers=no", True),
    ("nspawn-bind:web.nspawn:BindReadOnly=/etc/ssl/certs:*", True),
    ("unit-devices:systemd-nspawn@web.service.d/50-nspawnbuild.conf:DeviceAllow=/dev/sda rw", True),
    ("private-key:opt/demo", False),  # neither a path in the image nor a setting
    ("nspawn-bind:web.txt:Bind=/etc", False),
])
def test_a_recipe_can_allow_a_setting_finding_as_the_audit_names_it(tmp_path: Path, rule: str,
                                                                     ok: bool) -> None:
    """The audit names a setting ``FILE:Key=value`` and the README says to allow it so: the
    recipe schema once refused every rule not starting with /, so no setting could be allowed."""
    from nspawnbuild.errors import RecipeError
    from nspawnbuild.recipe.load import load_recipe

    recipe = tmp_path / "web.toml"
    recipe.write_text(f'[base]\ndistro = "debian"\n[audit]\nallow = ["{rule}"]\n')
    if ok:
        assert list(load_recipe(recipe).audit_allow) == [rule]
        if ".nspawn:" in rule or ".conf:" in rule:
            path = rule.split(":", 1)[1]
            assert Finding(rule.split(":")[0], path, "").allowed_by([rule])
    else:
        with pytest.raises(RecipeError, match=r"audit.allow\[0\]"):
            load_recipe(recipe)
