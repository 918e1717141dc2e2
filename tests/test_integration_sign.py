"""A signed build for real: ``build --sign`` with a throwaway key, ``nspawnbuild verify`` of the
directory and of its URL, and the real ``systemd-pull tar`` (what ``machinectl pull-tar`` runs)
with its default ``--verify=signature``, which must take the signed set and refuse it tampered.

One build (debian-base with ``compression = "xz"``: systemd before 258 cannot pull zstd), then
copies of its output for each tampering. systemd-pull verifies with the host's import keyring;
the test binds its own public key over it inside a private mount namespace, so the host's
keyring is never changed. Network: the Debian mirror for the build, loopback for the rest.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_signing import Key, make_key

from conftest import ROOT, Env, artifact_digests

pytestmark = pytest.mark.integration

NAME = "signed"
PULL = "/lib/systemd/systemd-pull"
KEYRINGS = ("/etc/systemd/import-pubring.pgp", "/etc/systemd/import-pubring.gpg",
            "/usr/lib/systemd/import-pubring.pgp", "/usr/lib/systemd/import-pubring.gpg")
TARBALL = f"{NAME}.tar.xz"


def ran(output: str) -> list[str]:
    """Tasks the reporter says it ran (as opposed to 'up to date')."""
    return [line.split()[0] for line in output.splitlines() if line.rstrip().endswith("...")]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Key]]:
    top = tmp_path_factory.mktemp("keys")
    made = {"alice": make_key(top, "alice"), "bob": make_key(top, "bob")}
    yield made
    for k in made.values():
        subprocess.run(["gpgconf", "--homedir", str(k.home), "--kill", "all"], check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path,
          keys: dict[str, Key]) -> tuple[Env, Path, Path]:
    """One build signed by alice's exported key file; (its env, the recipe, a copy of the set
    as it was published)."""
    tmp = tmp_path_factory.mktemp("signed")
    e = Env(tmp, tmp / "out", tmp / "work", shared_cache)
    recipe = tmp / f"{NAME}.toml"
    recipe.write_text(f'extends = "{ROOT / "recipes" / "debian-base.toml"}"\nname = "{NAME}"\n'
                      '[output]\ncompression = "xz"\n')
    r = e.nspawnbuild("build", "--sign", str(keys["alice"].secret), str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "signed: SHA256SUMS.gpg" in r.stdout, r.stdout
    good = tmp / "sets" / "good"
    shutil.copytree(e.out / NAME, good, ignore=shutil.ignore_patterns("build.log"))
    return e, recipe, good


def test_the_signature_is_published_beside_sha256sums_and_not_listed(
        built: tuple[Env, Path, Path], keys: dict[str, Key]) -> None:
    e, _, good = built
    assert sorted(p.name for p in (e.out / NAME).iterdir()) == sorted([
        TARBALL, f"{NAME}.nspawn", f"systemd-nspawn@{NAME}.service.d", "manifest.json",
        f"{NAME}.spdx.json", "SHA256SUMS", "SHA256SUMS.gpg", "build.log"])
    assert "SHA256SUMS.gpg" not in (good / "SHA256SUMS").read_text()
    # a detached binary signature that plain gpg accepts with alice's public key
    check = subprocess.run(["gpgv", "--keyring", str(keys["alice"].public),
                            str(good / "SHA256SUMS.gpg"), str(good / "SHA256SUMS")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert (good / "SHA256SUMS.gpg").read_bytes()[:1] != b"-"  # binary, not armored
    r = e.nspawnbuild("verify", str(good), "--keyring", str(keys["alice"].public))
    assert r.returncode == 0 and "all 5 files match" in r.stdout, r.stdout + r.stderr


def test_rebuilds_keep_or_change_only_the_signature(built: tuple[Env, Path, Path],
                                                    keys: dict[str, Key]) -> None:
    e, recipe, good = built
    out = e.out / NAME
    before = artifact_digests(e.out)
    r = e.nspawnbuild("build", "--sign", str(keys["alice"].secret), str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    assert ran(r.stdout) == [] and artifact_digests(e.out) == before  # same key: no work

    bob = keys["bob"]  # a key of a keyring, by fingerprint: only the manifest stage runs
    r = e.nspawnbuild("build", "--sign", bob.fingerprint, str(recipe), GNUPGHOME=str(bob.home))
    assert r.returncode == 0, r.stdout + r.stderr
    assert ran(r.stdout) == [f"manifest:{NAME}"], r.stdout
    after = artifact_digests(e.out)
    assert {k for k in after if after[k] != before[k]} == {f"{NAME}/SHA256SUMS.gpg"}
    assert e.nspawnbuild("verify", str(out), "--keyring", str(bob.public)).returncode == 0
    r = e.nspawnbuild("verify", str(out), "--keyring", str(keys["alice"].public))
    assert r.returncode == 1 and "not in the keyring" in r.stdout, r.stdout

    r = e.nspawnbuild("build", "--no-sign", str(recipe))  # no key: the signature goes
    assert r.returncode == 0 and ran(r.stdout) == [f"manifest:{NAME}"], r.stdout + r.stderr
    assert not (out / "SHA256SUMS.gpg").exists()
    unsigned = artifact_digests(e.out)
    assert unsigned == {k: v for k, v in before.items() if not k.endswith(".gpg")}
    r = e.nspawnbuild("verify", str(out), "--keyring", str(bob.public))
    assert r.returncode == 2 and "sign it with build --sign KEY" in r.stderr, r.stderr

    (out / "SHA256SUMS").unlink()  # a missing target re-runs the stage, signed again
    r = e.nspawnbuild("build", str(recipe), NSPAWNBUILD_SIGN_KEY=str(keys["alice"].secret))
    assert r.returncode == 0 and ran(r.stdout) == [f"manifest:{NAME}"], r.stdout + r.stderr
    assert artifact_digests(e.out).keys() == before.keys()
    assert e.nspawnbuild("verify", str(out), "--keyring",
                         str(keys["alice"].public)).returncode == 0

    r = e.nspawnbuild("build", "--sign", "nobody@example.invalid", str(recipe),
                      GNUPGHOME=str(bob.home))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"no secret key in the keyring {bob.home}" in r.stderr and ran(r.stdout) == []
    assert artifact_digests(e.out).keys() == before.keys()  # nothing half-written


def _other_tarball(mode: str = "w:xz") -> bytes:
    """A valid tarball (xz, or what ``mode`` says) that is not the image: only its digest can
    tell."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        data = b"ID=impostor\n"
        info = tarfile.TarInfo("./etc/os-release")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _resum(d: Path, name: str) -> None:
    """Rewrite ``name``'s line of d/SHA256SUMS to its new digest (what a forger would do)."""
    digest = hashlib.sha256((d / name).read_bytes()).hexdigest()
    lines = [f"{digest}  {name}" if line.endswith(f"  {name}") else line
             for line in (d / "SHA256SUMS").read_text().splitlines()]
    (d / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def sets(built: tuple[Env, Path, Path], keys: dict[str, Key]) -> dict[str, Path]:
    """The good set and one copy per tampering, side by side under one directory."""
    _, _, good = built
    top = good.parent

    def copy(name: str) -> Path:
        d = top / name
        shutil.copytree(good, d)
        return d

    d = copy("sums-edited")  # a changed .nspawn with SHA256SUMS rewritten to match
    (d / f"{NAME}.nspawn").write_text("[Exec]\nPrivateUsers=no\n")
    _resum(d, f"{NAME}.nspawn")
    d = copy("nspawn-changed")
    (d / f"{NAME}.nspawn").write_text((d / f"{NAME}.nspawn").read_text() + "Capability=all\n")
    d = copy("tarball-changed")
    (d / TARBALL).write_bytes(_other_tarball())
    d = copy("other-key")  # SHA256SUMS as built, signed by a key the host does not trust
    (d / "SHA256SUMS.gpg").unlink()
    subprocess.run(["gpg", "--homedir", str(keys["bob"].home), "--batch", "--detach-sign",
                    "--output", str(d / "SHA256SUMS.gpg"), str(d / "SHA256SUMS")], check=True)
    d = copy("unsigned")
    (d / "SHA256SUMS.gpg").unlink()
    return {p.name: p for p in top.iterdir()}


@pytest.fixture(scope="module")
def server(sets: dict[str, Path]) -> Iterator[str]:
    """The sets on a loopback HTTP server (python's http.server), as a static server would."""
    top = sets["good"].parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(top))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def pull(url: str, pubring: Path, image_root: Path) -> subprocess.CompletedProcess[str]:
    """The real systemd-pull tar with its default verification (signature), its import
    keyring replaced by ``pubring`` in a private mount namespace: the host's stays as it is."""
    binds = " && ".join(f'mount --bind "$1" {k}' for k in KEYRINGS if Path(k).exists())
    script = f'{binds} && exec {PULL} tar "$2" {NAME} --image-root="$3"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                           "sh", str(pubring), url, str(image_root)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def images(tmp_path: Path) -> Iterator[Path]:
    """Image roots for systemd-pull: it keeps its download as an immutable copy (chattr +i),
    which nothing could remove afterwards without clearing the flag first."""
    yield tmp_path
    kept = [str(p) for p in tmp_path.glob("*/.tar-*")]  # IMAGE_ROOT/.tar-URL: the cached copy
    if kept:
        subprocess.run(["chattr", "-i", *kept], capture_output=True, check=False)
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.skipif(not Path(PULL).exists(), reason="systemd-pull is not installed")
def test_systemd_pull_takes_the_signed_set_and_refuses_every_tampering(
        server: str, sets: dict[str, Path], keys: dict[str, Key], images: Path) -> None:
    tmp_path = images
    assert any(Path(k).exists() for k in KEYRINGS), "no import keyring to bind over"
    before = {k: Path(k).read_bytes() for k in KEYRINGS if Path(k).exists()}
    pub = keys["alice"].public
    r = pull(f"{server}/good/{TARBALL}", pub, tmp_path / "good")
    said = r.stdout + r.stderr
    assert r.returncode == 0, said
    assert "Signature verification succeeded" in said, said
    assert f"SHA256 checksum of {server}/good/{TARBALL} is valid" in said, said
    assert (tmp_path / "good" / NAME / "etc" / "os-release").is_file()
    # pull-tar fetched the .nspawn too, checked against SHA256SUMS, and put it beside the image
    assert (tmp_path / "good" / f"{NAME}.nspawn").read_bytes() == \
        (sets["good"] / f"{NAME}.nspawn").read_bytes()
    refusals = {"sums-edited": "Signature verification failed",
                "nspawn-changed": f"Checksum of {NAME}.nspawn file did not check out",
                "tarball-changed": f"Checksum of {TARBALL} file did not check out",
                "other-key": "Signature verification failed",
                "unsigned": "Failed to retrieve signature file, cannot verify"}
    for name, expect in refusals.items():
        r = pull(f"{server}/{name}/{TARBALL}", pub, tmp_path / name)
        said = r.stdout + r.stderr
        assert r.returncode != 0, (name, said)
        assert expect in said, (name, said)
        assert not (tmp_path / name / NAME).exists(), name
    assert {k: Path(k).read_bytes() for k in KEYRINGS if Path(k).exists()} == before


def test_verify_url_agrees_with_systemd_pull(built: tuple[Env, Path, Path], server: str,
                                             sets: dict[str, Path], keys: dict[str, Key]) -> None:
    e = built[0]
    pub = str(keys["alice"].public)
    r = e.nspawnbuild("verify", f"{server}/good/{TARBALL}", "--keyring", pub)
    assert r.returncode == 0 and "all 5 files match" in r.stdout, r.stdout + r.stderr
    expect = {"sums-edited": "BAD signature", "nspawn-changed": f"MISMATCH   {NAME}.nspawn",
              "tarball-changed": f"MISMATCH   {TARBALL}", "other-key": "not in the keyring"}
    for name, words in expect.items():
        r = e.nspawnbuild("verify", f"{server}/{name}/", "--keyring", pub)
        assert r.returncode == 1 and words in r.stdout, (name, r.stdout, r.stderr)
        # and the same copies on disk
        r = e.nspawnbuild("verify", str(sets[name]), "--keyring", pub)
        assert r.returncode == 1 and words in r.stdout, (name, r.stdout, r.stderr)
    r = e.nspawnbuild("verify", f"{server}/unsigned/", "--keyring", pub)
    assert r.returncode == 2 and "the set is not signed" in r.stderr, r.stderr


def test_install_url_installs_the_signed_set_and_refuses_the_others(
        built: tuple[Env, Path, Path], server: str, keys: dict[str, Key], tmp_path: Path) -> None:
    """``install URL``: downloaded, the signature checked, then installed like a directory;
    every tampered or unsigned set is refused before anything is written."""
    e = built[0]
    pub = str(keys["alice"].public)
    root = tmp_path / "host"
    r = e.nspawnbuild("install", f"{server}/good/", "--root", str(root), "--keyring", pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "signature  good" in r.stdout and "verified the signature of" in r.stdout
    assert (root / "var/lib/machines" / NAME / "etc/os-release").is_file()
    assert (root / "etc/systemd/nspawn" / f"{NAME}.nspawn").read_bytes() == \
        (built[2] / f"{NAME}.nspawn").read_bytes()  # the trusted place, not beside the image
    dropin = root / "etc/systemd/system" / f"systemd-nspawn@{NAME}.service.d/50-nspawnbuild.conf"
    assert dropin.is_file()

    expect = {"sums-edited": (1, "BAD signature"), "nspawn-changed": (1, "does not match"),
              "tarball-changed": (1, "does not match"), "other-key": (1, "not in the keyring"),
              "unsigned": (2, "the set is not signed")}
    for name, (code, words) in expect.items():
        other = tmp_path / name
        r = e.nspawnbuild("install", f"{server}/{name}/", "--root", str(other), "--keyring", pub)
        assert r.returncode == code and words in r.stdout + r.stderr, (name, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and not other.exists(), name
    # no --keyring: the host's import keyring (Debian's vendor keys here) does not hold alice's
    r = e.nspawnbuild("install", f"{server}/good/", "--root", str(tmp_path / "vendor"))
    assert r.returncode == 1 and "not in the keyring" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "vendor").exists()
