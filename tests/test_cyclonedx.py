"""The CycloneDX SBOM (NAME.cdx.json, ``[output] sbom = ["spdx", "cyclonedx"]``): valid
CycloneDX 1.6 by the CycloneDX library's own strict validator, the same bytes for the same
build, the same packages and purls as the SPDX document, declared licenses as ids, expressions
or names; the recipe key's errors; the manifest stage writes it only when asked, and a recipe
that does not ask gets the very files it got before."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from nspawnbuild import cyclonedx, pipeline, sbom
from nspawnbuild.errors import RecipeError
from nspawnbuild.options import Options
from nspawnbuild.plan import make_plan
from nspawnbuild.recipe.load import load_recipe

TARBALL = {"file": "img.tar.gz", "sha256": "ab" * 32}
PACKAGES = [
    {"name": "libstdc++6", "version": "12.2.0-14+deb12u1", "arch": "amd64", "source": "gcc-12",
     "license": "GPL-3+ with GCC-Runtime exception AND (GPL-2+ or Artistic)"},
    {"name": "base-files", "version": "12.4", "arch": "amd64", "license": "GPL-2+"},
    {"name": "tzdata", "version": "2024a-0+deb12u1", "arch": "all", "license": "public-domain"},
    {"name": "mawk", "version": "1.3.4", "arch": "amd64", "license": ""},
    {"name": "zlib1g", "version": "1:1.2.13.dfsg-1", "arch": "amd64", "source": "zlib",
     "license": "Zlib and Expat"},
    {"name": "bash", "version": "3:5.2.26-3.fc41", "arch": "x86_64", "license": "GPLv3+"},
]


def inputs(**over: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"name": "img", "description": "an image", "distro": "debian",
                            "release": "bookworm", "arch": "amd64", "epoch": 1700000000,
                            "tool_version": "0.1.0", "purl_type": "deb", "packages": PACKAGES,
                            "tarball": TARBALL}
    return {**args, **over}


def rendered(**over: Any) -> dict[str, Any]:
    return json.loads(cyclonedx.render(**inputs(**over)))


def errors(data: bytes) -> list[str]:
    """The strict 1.6 validator's messages on the file's text (none when valid)."""
    found = JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode(), all_errors=True)
    return [e.data.message for e in found or []]


@pytest.mark.parametrize(("kind", "distro"), [("deb", "debian"), ("rpm", "fedora"),
                                               ("apk", "alpine"), ("deb", "ubuntu")])
def test_the_cyclonedx_validator_accepts_the_document(kind: str, distro: str) -> None:
    data = cyclonedx.render(**inputs(purl_type=kind, distro=distro))
    assert errors(data) == []
    doc = json.loads(data)
    assert (doc["bomFormat"], doc["specVersion"], doc["version"]) == ("CycloneDX", "1.6", 1)
    assert list(doc)[:3] == ["$schema", "bomFormat", "specVersion"]


def test_the_validator_is_not_a_json_parse() -> None:
    doc = rendered()
    doc["components"][0]["licenses"] = [{"license": {"id": "GPL-2+"}}]  # not an SPDX id
    assert errors(json.dumps(doc).encode())


def test_the_image_is_the_metadata_component_with_the_tarballs_digest() -> None:
    meta = rendered()["metadata"]
    image = meta["component"]
    assert image["type"] == "container" and image["name"] == "img"
    assert image["hashes"] == [{"alg": "SHA-256", "content": TARBALL["sha256"]}]
    assert {"name": "nspawnbuild:file", "value": "img.tar.gz"} in image["properties"]
    assert image["description"] == "an image"
    assert meta["timestamp"] == "2023-11-14T22:13:20+00:00"  # SOURCE_DATE_EPOCH, not the clock
    assert meta["tools"]["components"] == [{
        "bom-ref": "nspawnbuild", "name": "nspawnbuild", "type": "application",
        "version": "0.1.0"}]


def test_the_same_packages_and_purls_as_the_spdx_document() -> None:
    doc = rendered()
    spdx = sbom.document(**inputs())
    spdx_purls = {p["externalRefs"][0]["referenceLocator"] for p in spdx["packages"][1:]}
    purls = {c["purl"] for c in doc["components"]}
    assert purls == spdx_purls and len(purls) == len(PACKAGES)
    for c in doc["components"]:
        purl = PackageURL.from_string(c["purl"])
        assert (purl.type, purl.namespace, purl.name, c["name"]) == (
            "deb", "debian", c["name"], purl.name)
        assert c["bom-ref"] == c["purl"] and c["type"] == "library"
    lib = next(c for c in doc["components"] if c["name"] == "libstdc++6")
    assert lib["version"] == "12.2.0-14+deb12u1"
    assert lib["properties"] == [{"name": "nspawnbuild:arch", "value": "amd64"},
                                 {"name": "nspawnbuild:source", "value": "gcc-12"}]
    (graph,) = [d for d in doc["dependencies"] if d["ref"] == "image"]
    assert sorted(graph["dependsOn"]) == sorted(purls)


def test_same_build_same_bytes_and_the_serial_follows_the_content() -> None:
    a = cyclonedx.render(**inputs())
    shuffled = list(PACKAGES)
    random.Random(1).shuffle(shuffled)
    assert cyclonedx.render(**inputs(packages=shuffled)) == a
    serial = json.loads(a)["serialNumber"]
    assert serial.startswith("urn:uuid:") and serial != f"urn:uuid:{uuid.UUID(int=0)}"
    other = json.loads(cyclonedx.render(**inputs(tarball={**TARBALL, "sha256": "cd" * 32})))
    assert other["serialNumber"] != serial
    assert json.loads(cyclonedx.render(**inputs(epoch=1700000001)))["serialNumber"] != serial


@pytest.mark.parametrize(("declared", "license"), [
    ("GPL-2+", {"license": {"id": "GPL-2.0-or-later", "acknowledgement": "declared"}}),
    ("Expat", {"license": {"id": "MIT", "acknowledgement": "declared"}}),
    ("Zlib and Expat", {"expression": "Zlib AND MIT", "acknowledgement": "declared"}),
    ("GPL-2+ or Artistic", {"expression": "GPL-2.0-or-later OR Artistic-1.0-Perl",
                            "acknowledgement": "declared"}),
    # only partly mapped (a LicenseRef): the declared words, as a named license
    ("public-domain", {"license": {"name": "public-domain", "acknowledgement": "declared"}}),
    ("GPL-3+ with GCC-Runtime exception AND (GPL-2+ or Artistic)",
     {"license": {"name": "GPL-3+ with GCC-Runtime exception AND (GPL-2+ or Artistic)",
                  "acknowledgement": "declared"}}),
])
def test_declared_licenses(declared: str, license: dict[str, Any]) -> None:
    doc = rendered(packages=[{"name": "p", "version": "1", "arch": "amd64",
                              "license": declared}])
    assert doc["components"][0]["licenses"] == [license]
    assert errors(cyclonedx.render(**inputs(packages=[{"name": "p", "version": "1",
                                                       "license": declared}]))) == []


def test_nothing_declared_is_no_license() -> None:
    doc = rendered(packages=[{"name": "p", "version": "1", "arch": "amd64", "license": " "}])
    assert "licenses" not in doc["components"][0]


# -- the recipe key ---------------------------------------------------------------------------

def recipe(tmp_path: Path, output: str = "", where: str = "") -> Path:
    path = tmp_path / where / "r.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('[base]\ndistro = "debian"\n' + (f"\n[output]\n{output}\n" if output else ""))
    return path


def test_default_is_spdx_and_naming_it_changes_nothing(tmp_path: Path) -> None:
    default = load_recipe(recipe(tmp_path))
    assert default.output.sbom == ("spdx",)
    spdx = load_recipe(recipe(tmp_path, 'sbom = ["spdx"]', "s"))
    both = load_recipe(recipe(tmp_path, 'sbom = ["cyclonedx", "spdx"]', "b"))
    assert both.output.sbom == ("spdx", "cyclonedx")
    # the SBOMs published are not what the image is: tarball and .nspawn stay the same
    assert default.digest() == spdx.digest() == both.digest()
    plans = [make_plan(r) for r in (default, spdx, both)]
    assert "sbom" not in plans[0].manifest and plans[0].manifest == plans[1].manifest
    assert plans[2].manifest == {**plans[0].manifest, "sbom": ["spdx", "cyclonedx"]}
    for stage in ("bootstrap", "rootfs", "pack", "config"):
        assert getattr(plans[0], stage) == getattr(plans[2], stage), stage


@pytest.mark.parametrize(("value", "key", "text"), [
    ('["cyclonedx"]', "output.sbom", "must list 'spdx': every build publishes its SPDX SBOM"),
    ("[]", "output.sbom", "must list 'spdx'"),
    ('["spdx", "spdx"]', "output.sbom", "'spdx' is there twice"),
    ('["spdx", "cdx"]', "output.sbom[1]", "must be one of 'spdx', 'cyclonedx'"),
    ('"cyclonedx"', "output.sbom", "must be an array, not a string"),
])
def test_bad_values_are_reported_with_key_and_hint(tmp_path: Path, value: str, key: str,
                                                   text: str) -> None:
    path = recipe(tmp_path, f"sbom = {value}")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert f"{path}:5: key '{key}': " in message and text in message, message
    if key == "output.sbom":
        assert 'e.g. sbom = ["spdx", "cyclonedx"]' in message


def test_the_command_line_gives_a_clean_error(tmp_path: Path) -> None:
    path = recipe(tmp_path, 'sbom = ["cyclonedx"]')
    r = subprocess.run([sys.executable, "-m", "nspawnbuild.cli", "validate", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{path}:5: key 'output.sbom': must list 'spdx'" in r.stderr


# -- the manifest stage -----------------------------------------------------------------------

def published(tmp_path: Path, output: str) -> Path:
    """out/r as the manifest stage publishes it for a recipe with ``output``, on a made-up
    tarball and package list (no build: the stage reads only the records the others wrote)."""
    rec = load_recipe(recipe(tmp_path, output))
    options = Options.from_environment({}, out=tmp_path / "out", work=tmp_path / "work",
                                       cache=tmp_path / "cache")
    layout = options.layout
    plan = make_plan(rec)
    plan.manifest["machine"] = rec.distro.machine  # as pipeline.plan adds it
    for stage, spec in plan.documents().items():
        layout.plan_file("r", stage).parent.mkdir(parents=True, exist_ok=True)
        layout.plan_file("r", stage).write_text(json.dumps(spec))
    layout.stage_dir("r").mkdir(parents=True)
    pipeline.configure(options, "r")
    tarball = layout.tarball("r", rec.output.compression)
    tarball.write_bytes(b"not really a tarball")
    work = layout.work_dir("r")
    (work / "rootfs.json").write_text(json.dumps({"packages": PACKAGES, "purl_type": "deb"}))
    (work / "pack.json").write_text(json.dumps({
        "file": tarball.name, "sha256": hashlib.sha256(tarball.read_bytes()).hexdigest(),
        "size": 20, "tar_sha256": "0" * 64, "tar_size": 10240, "tree_bytes": 0,
        "counts": {"files": 0}, "audit": []}))
    pipeline.manifest(options, "r")
    return layout.out_dir("r")


def listing(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file())


def test_the_manifest_stage_publishes_it_only_when_asked(tmp_path: Path) -> None:
    default = published(tmp_path / "a", "")
    same = published(tmp_path / "b", 'sbom = ["spdx"]')
    both = published(tmp_path / "c", 'sbom = ["spdx", "cyclonedx"]')
    files = listing(default)
    assert "r.cdx.json" not in files and listing(same) == files
    for f in files:  # naming the default changes no byte of any file
        assert (same / f).read_bytes() == (default / f).read_bytes(), f
    assert listing(both) == sorted([*files, "r.cdx.json"])
    data = (both / "r.cdx.json").read_bytes()
    assert errors(data) == []
    digest = hashlib.sha256(data).hexdigest()
    assert f"{digest}  r.cdx.json\n" in (both / "SHA256SUMS").read_text()
    manifest = json.loads((both / "manifest.json").read_text())
    assert manifest["artifacts"]["sbom_cyclonedx"] == {"file": "r.cdx.json", "sha256": digest,
                                                       "format": "cyclonedx-1.6"}
    assert "sbom_cyclonedx" not in json.loads((default / "manifest.json").read_text())["artifacts"]
    for f in ("r.spdx.json", "r.nspawn", "r.tar.gz"):  # the rest of the set is as it was
        assert (both / f).read_bytes() == (default / f).read_bytes(), f
