"""The checks every integration build's SBOM passes (imported by the tests that build the
example recipes, so that no build runs for the SBOM alone)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from packageurl import PackageURL
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

PURL_TYPES = {"debian": "deb", "ubuntu": "deb", "fedora": "rpm", "alpine": "apk"}


def check_sbom(out: Path) -> dict[str, Any]:
    """out/NAME's NAME.spdx.json: listed in SHA256SUMS and the manifest, valid SPDX 2.3 by the
    SPDX tools, the image with the tarball's digest, every manifest package with its purl.
    Returns the document."""
    manifest = json.loads((out / "manifest.json").read_text())
    name = manifest["name"]
    path = out / f"{name}.spdx.json"
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert f"{digest}  {name}.spdx.json\n" in (out / "SHA256SUMS").read_text()
    assert manifest["artifacts"]["sbom"] == {"file": path.name, "sha256": digest,
                                             "format": "spdx-2.3"}
    messages = [m.validation_message
                for m in validate_full_spdx_document(parse_file(str(path)), "SPDX-2.3")]
    assert messages == [], messages[:10]
    doc = json.loads(data)
    image, *packages = doc["packages"]
    tarball = manifest["artifacts"]["tarball"]
    assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": tarball["sha256"]}]
    assert image["packageFileName"] == tarball["file"]
    kind = PURL_TYPES[manifest["base"]["distro"]]
    listed = set()
    for p in packages:
        (ref,) = p["externalRefs"]
        purl = PackageURL.from_string(ref["referenceLocator"])
        assert purl.type == kind and purl.namespace == manifest["base"]["distro"]
        assert purl.name == p["name"]
        listed.add((p["name"], p["versionInfo"], purl.qualifiers.get("arch", "")))
    assert listed == {(p["name"], p["version"], p["arch"]) for p in manifest["packages"]}
    contained = {r["relatedSpdxElement"] for r in doc["relationships"]
                 if r["relationshipType"] == "CONTAINS"}
    assert contained == {p["SPDXID"] for p in packages}
    return doc


def declared_share(doc: dict[str, Any]) -> float:
    """The share of the packages whose license is declared (not NOASSERTION)."""
    packages = doc["packages"][1:]
    return sum(p["licenseDeclared"] != "NOASSERTION" for p in packages) / max(len(packages), 1)
