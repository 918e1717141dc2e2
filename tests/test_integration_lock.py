"""The lock file's round trip against a local signed Debian repository on 127.0.0.1: lock,
build with the lock, the repository moves on (its package's version bumped), the build fails
naming the package, ``lock --update`` shows the change.

The image is debian-base (its bootstrap from the default mirror, shared with the other tests
where the key matches) plus one package of the local repository, installed by a post-step;
the lock pins every package, the bootstrap's included."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_integration_build import tar_members

from conftest import ROOT, Env, tarball_of

sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from debrepo import DebRepo, build_repo  # noqa: E402

pytestmark = pytest.mark.integration
NO_PROXY = {"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
PROBE = "nsb-probe"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[DebRepo, str]]:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    made = build_repo(tmp_path / "debrepo", arch)
    handler = functools.partial(QuietHandler, directory=str(made.root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield made, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        made.close()


def recipe(directory: Path, repo: DebRepo, url: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "probe.sources").write_text(repo.sources(url))
    (directory / repo.keyring.name).write_bytes(repo.keyring.read_bytes())
    path = directory / "locktest.toml"
    path.write_text(
        f'extends = "{ROOT / "recipes" / "debian-base.toml"}"\nname = "locktest"\n\n'
        '[[files]]\nsrc = "probe.sources"\ndest = "/etc/apt/sources.list.d/probe.sources"\n\n'
        f'[[files]]\nsrc = "{repo.keyring.name}"\ndest = "/etc/apt/keyrings/{repo.keyring.name}"\n\n'
        f'[[post]]\nrun = "apt-get update -q && apt-get install -y -q {PROBE}"\n')
    return path


def test_lock_build_archive_moves_on_build_fails_update_shows_it(
        env: Env, repo: tuple[DebRepo, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    debrepo, url = repo
    digests = debrepo.publish([(PROBE, "1.0")], int(time.time()) - 7200)
    path = recipe(env.tmp / "recipe", debrepo, url)
    lock_path = path.with_name("locktest.lock.json")

    started = time.monotonic()
    r = env.nspawnbuild("lock", str(path), **NO_PROXY)
    lock_seconds = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"wrote {lock_path}: " in r.stdout
    lock = json.loads(lock_path.read_text())
    versions = {p["name"]: p for p in lock["packages"]}
    assert versions[PROBE] == {"name": PROBE, "version": "1.0", "arch": "all",
                               "digest": f"sha256:{digests[PROBE, '1.0']}"}
    assert versions["systemd"]["version"].startswith("257.")
    assert all(p.get("digest", "").startswith("sha256:") for p in lock["packages"])
    suites = {a.get("suite") for a in lock["archive"]}
    assert "probe" in suites and len(suites) >= 2, lock["archive"]  # the mirror's and ours
    assert not (env.work / "lock").exists() or not list((env.work / "lock").iterdir())

    r = env.nspawnbuild("build", str(path), **NO_PROXY)
    assert r.returncode == 0, r.stdout + r.stderr
    out = env.out / "locktest"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lock"] == {"file": lock_path.name,
                                "sha256": hashlib.sha256(lock_path.read_bytes()).hexdigest()}
    assert {p["name"]: p["version"] for p in manifest["packages"]} == \
        {p["name"]: p["version"] for p in lock["packages"]}
    members = tar_members(tarball_of(out))
    assert "./etc/apt/preferences.d/nspawnbuild-lock.pref" not in members  # the build's pins
    assert f"./usr/share/{PROBE}/version" in members
    sbom = json.loads((out / "locktest.spdx.json").read_text())
    assert next(p for p in sbom["packages"] if p["name"] == PROBE)["licenseDeclared"] == "MIT"

    # a newer version beside the locked one: a clean build (as CI's) still installs 1.0
    debrepo.publish([(PROBE, "1.0"), (PROBE, "1.1")], int(time.time()) - 3600)
    newer = Env(env.tmp / "newer", env.tmp / "newer" / "out", env.tmp / "newer" / "work",
                env.cache)
    (env.tmp / "newer").mkdir()
    r = newer.nspawnbuild("build", str(path), **NO_PROXY)
    assert r.returncode == 0, r.stdout + r.stderr
    pinned = json.loads((newer.out / "locktest" / "manifest.json").read_text())
    assert {p["name"]: p["version"] for p in pinned["packages"]}[PROBE] == "1.0"
    # the same build again (same packages, same tarball): the same SBOM, byte for byte
    assert pinned["artifacts"]["tarball"]["sha256"] == manifest["artifacts"]["tarball"]["sha256"]
    assert (newer.out / "locktest" / "locktest.spdx.json").read_bytes() == \
        (out / "locktest.spdx.json").read_bytes()

    # the archive moves on: 1.0 is gone, 1.1 is there; a clean build fails naming it
    debrepo.publish([(PROBE, "1.1")], int(time.time()))
    clean = Env(env.tmp / "again", env.tmp / "again" / "out", env.tmp / "again" / "work",
                env.cache)
    (env.tmp / "again").mkdir()
    r = clean.nspawnbuild("build", str(path), **NO_PROXY)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert f"{PROBE} (all): locked 1.0, the build installed 1.1" in r.stderr, r.stderr
    assert "nspawnbuild lock --update" in r.stderr
    assert not (clean.out / "locktest" / "manifest.json").exists()  # nothing published

    r = env.nspawnbuild("lock", str(path), **NO_PROXY)
    assert r.returncode == 2 and "a lock file is already there" in r.stderr
    r = env.nspawnbuild("lock", "--update", str(path), **NO_PROXY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"~ {PROBE} 1.0 -> 1.1 (all)" in r.stdout.splitlines(), r.stdout
    assert {p["name"]: p["version"] for p in json.loads(lock_path.read_text())["packages"]
            }[PROBE] == "1.1"
    print(f"lock took {lock_seconds:.0f} s")
