"""Example recipes of distros this machine cannot build say why, with exit 1 and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Env

pytestmark = pytest.mark.integration


def test_ubuntu_base_without_ubuntus_keyring(env: Env) -> None:
    # Debian 12 packages no Ubuntu keyring; on an Ubuntu host this recipe builds
    if Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg").exists():
        pytest.skip("this host has Ubuntu's keyring: ubuntu-base would build")
    r = env.nspawnbuild("build", "ubuntu-base")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "bootstrap:ubuntu-base" in r.stderr
    assert "ubuntu-archive-keyring.gpg is missing on this host" in r.stderr
    assert "apt-get install ubuntu-keyring" in r.stderr
    assert not (env.out / "ubuntu-base" / "manifest.json").exists()
    key = env.nspawnbuild("cache-key", "ubuntu-base")  # planning needs no keyring
    assert key.returncode == 0 and len(key.stdout.split()[0]) >= 16, key.stdout + key.stderr
