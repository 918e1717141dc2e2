"""Releases and archives: Ubuntu from a Debian host (a keyring the recipe names that is
missing is bad input that says how to get Ubuntu's; the build itself is in the boot test), an
expired Release file, and a pinned version the archive does not have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, Env
from nspawnbuild import cgroups
from nspawnbuild.tree import remove_tree
from sbomcheck import check_sbom

pytestmark = pytest.mark.integration


def test_ubuntu_with_a_missing_keyring_says_how_to_get_one(env: Env) -> None:
    recipe = env.tmp / "ubuntu-own-key.toml"
    recipe.write_text(f'extends = "{ROOT / "recipes" / "ubuntu-base.toml"}"\n'
                      '[base]\nkeyring = "ubuntu-archive-keyring.gpg"\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{recipe}:3: key 'base.keyring': keyring ubuntu-archive-keyring.gpg does not exist" \
        in r.stderr
    assert "apt-get install ubuntu-keyring" in r.stderr and "Debian 12" in r.stderr
    assert not (env.out / "ubuntu-base").exists()
    key = env.nspawnbuild("cache-key", "ubuntu-base")  # planning the example needs no build
    assert key.returncode == 0 and len(key.stdout.split()[0]) >= 16, key.stdout + key.stderr


def test_an_expired_release_file_is_refused_unless_the_recipe_accepts_it(env: Env) -> None:
    """This machine's mirror serves sid with a Release file past its Valid-Until."""
    recipe = env.tmp / "sid.toml"
    recipe.write_text('name = "sidcheck"\n[base]\ndistro = "debian"\nrelease = "sid"\n\n'
                      '[[post]]\nrun = "apt-get update -qq"\n')
    refused = env.nspawnbuild("build", str(recipe))
    assert refused.returncode != 0, ("sid built without check_valid_until: this machine's mirror "
                                     "no longer serves an expired Release file, which this test "
                                     "needs (point it at one that does)")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "is expired" in refused.stderr and "check_valid_until = false" in refused.stderr
    recipe.write_text(recipe.read_text().replace('release = "sid"\n',
                                                 'release = "sid"\ncheck_valid_until = false\n'))
    built = env.nspawnbuild("build", str(recipe))  # the post-step's apt accepts it too
    assert built.returncode == 0, built.stdout + built.stderr
    manifest = json.loads((env.out / "sidcheck" / "manifest.json").read_text())

    # sid's systemd (262 when this was written) no longer boots on a v1/hybrid host: install
    # says so before it writes anything
    version = cgroups.image_systemd(manifest["packages"])
    assert version and version >= cgroups.UNIFIED_ONLY_SINCE, version
    layout = cgroups.hierarchy(cgroups.MOUNTINFO.read_text())
    if layout == "unified":  # a v2-only host boots it: nothing to refuse, nothing installed here
        assert cgroups.refusal(manifest["packages"], cgroups.MOUNTINFO.read_text()) is None
        return
    machine = Path("/var/lib/machines/sidcheck")
    assert not machine.exists()
    try:
        refused = env.nspawnbuild("install", str(env.out / "sidcheck"))
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert f"the image's systemd is {version}" in refused.stderr
        assert f"{layout} cgroup hierarchy" in refused.stderr and "nothing was installed" in \
            refused.stderr
        assert not machine.exists() and not Path("/etc/systemd/nspawn/sidcheck.nspawn").exists()
    finally:  # a regression must not leave a machine on the test host
        remove_tree(machine)
        Path("/etc/systemd/nspawn/sidcheck.nspawn").unlink(missing_ok=True)
        remove_tree(Path("/etc/systemd/system/systemd-nspawn@sidcheck.service.d"))


def test_a_driver_pin_the_archive_lacks_lists_the_versions_it_has(env: Env) -> None:
    """Debian 12's NVIDIA driver pinned on Debian 13: the build fails at the bootstrap, and
    says which versions trixie has (read from the archive, not from a table here)."""
    recipe = env.tmp / "oldpin.toml"
    recipe.write_text(f'extends = "{ROOT / "recipes" / "ollama-gpu.toml"}"\nname = "oldpin"\n'
                      '[base]\ncomponents = ["main", "non-free"]\n'
                      '[features.gpu-nvidia]\ndriver = "image"\ndriver_version = "535.309.01"\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    listed = [line for line in r.stderr.splitlines()
              if "the archive has no version 535.309.01-* of nvidia-smi" in line]
    assert listed and "has: 550." in listed[0], r.stderr
    assert "driver_version" in r.stderr
    assert not list(env.out.glob("oldpin/*.tar*"))
    assert not [p for p in (env.cache / "bootstrap").iterdir() if ".tmp-" in p.name]


def test_the_ubuntu_example_builds_on_its_default_release(env: Env) -> None:
    """recipes/ubuntu-base.toml as it is (noble); the boot test boots a child of it."""
    r = env.nspawnbuild("build", "ubuntu-base", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads((env.out / "ubuntu-base" / "manifest.json").read_text())
    assert manifest["base"]["release"] == "noble" and manifest["target_systemd"] == 255
    version = next(p["version"] for p in manifest["packages"] if p["name"] == "systemd")
    assert version.startswith("255."), version
    assert manifest["artifacts"]["tarball"]["file"] == "ubuntu-base.tar.gz"  # pullable by 255
    check_sbom(env.out / "ubuntu-base")
