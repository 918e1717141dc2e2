"""The image's SBOM in CycloneDX 1.6 JSON, ``NAME.cdx.json``: written beside the SPDX one when
the recipe asks for it (``[output] sbom = ["spdx", "cyclonedx"]``).

Some scanners and registries read CycloneDX only. It is made from the very inputs
:func:`nspawnbuild.sbom.document` gets, so the two documents list the same packages with the
same purls, and it is built and serialized by the CycloneDX project's own library
(``cyclonedx-python-lib``) rather than by hand: the library knows the 1.6 schema, its license
id list and its key names, and its validator is what the tests check the output with.

The image is the BOM's ``metadata.component`` (type ``container``, the tarball's sha256);
every installed package is a ``library`` component whose bom-ref is its purl, with the
architecture and source package as properties, and the image ``dependsOn`` each of them.
Licenses are the declared ones, mapped as :mod:`nspawnbuild.sbom` maps them: one SPDX
identifier becomes a license ``id``, an SPDX expression an ``expression``; a declaration
that maps only in part (``LicenseRef-`` words, which CycloneDX cannot define) keeps the
declared words as a license ``name``; nothing declared, no license.

Same build, same bytes: the timestamp is the build's SOURCE_DATE_EPOCH, the components are
sorted (the library sorts them), and the ``serialNumber`` is a UUID derived from the digest
of the rest of the document, as the SPDX document's namespace is.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import (
    DisjunctiveLicense,
    License,
    LicenseAcknowledgement,
    LicenseExpression,
)
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.spdx import is_supported_id
from packageurl import PackageURL

from . import sbom

SPEC_VERSION = "1.6"
FORMAT = "cyclonedx-1.6"
IMAGE_REF = "image"
#: the namespace of this tool's properties (CycloneDX asks for a prefix that names their owner)
PROPERTY_PREFIX = "nspawnbuild:"


def file_name(name: str) -> str:
    """The CycloneDX SBOM's name in out/NAME."""
    return f"{name}.cdx.json"


def licenses(declared: str) -> list[License]:
    """A declared license in CycloneDX terms (see the module's docstring); ``declared``
    acknowledges that the package, not an analysis, says so."""
    expression, refs = sbom.license_expression(declared)
    how = LicenseAcknowledgement.DECLARED
    if expression == sbom.NOASSERTION:
        return []
    if refs:
        return [DisjunctiveLicense(name=declared.strip(), acknowledgement=how)]
    if is_supported_id(expression):
        return [DisjunctiveLicense(id=expression, acknowledgement=how)]
    return [LicenseExpression(expression, acknowledgement=how)]


def _component(kind: str, distro: str, release: str, package: Mapping[str, Any]) -> Component:
    purl = sbom.package_purl(kind, distro, release, package)
    props = [Property(name=f"{PROPERTY_PREFIX}{key}", value=str(package[key]))
             for key in ("arch", "source") if package.get(key)]
    return Component(type=ComponentType.LIBRARY, name=str(package["name"]),
                     version=str(package["version"]), bom_ref=purl,
                     purl=PackageURL.from_string(purl),
                     licenses=licenses(str(package.get("license", ""))), properties=props)


def bom(*, name: str, description: str, distro: str, release: str, arch: str, epoch: int,
        tool_version: str, purl_type: str, packages: Iterable[Mapping[str, Any]],
        tarball: Mapping[str, Any], serial: uuid.UUID | None = None) -> Bom:
    """The CycloneDX BOM of one build (arguments as :func:`nspawnbuild.sbom.document`'s);
    ``serial`` is left to :func:`render`, which derives it from the content."""
    components = [_component(purl_type, distro, release, p) for p in packages]
    image = Component(
        type=ComponentType.CONTAINER, name=name, bom_ref=IMAGE_REF,
        description=description or f"systemd-nspawn image of {distro} {release} {arch}, "
                                   "built by nspawnbuild",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=str(tarball["sha256"]))],
        properties=[Property(name=f"{PROPERTY_PREFIX}{key}", value=value) for key, value in
                    (("file", str(tarball["file"])), ("distro", distro),
                     ("release", release), ("arch", arch))])
    tool = Component(type=ComponentType.APPLICATION, name="nspawnbuild", version=tool_version,
                     bom_ref="nspawnbuild")
    metadata = BomMetaData(timestamp=datetime.fromtimestamp(epoch, UTC), component=image,
                           tools=ToolRepository(components=[tool]))
    out = Bom(components=components, metadata=metadata, serial_number=serial or uuid.UUID(int=0))
    out.register_dependency(image, components)
    return out


#: the keys that say what the file is, first (the library writes them last)
_HEAD = ("$schema", "bomFormat", "specVersion", "serialNumber", "version")


def _text(document: Bom) -> str:
    """The library's JSON of ``document``, its identifying keys first, two-space indent."""
    data = json.loads(JsonV1Dot6(document).output_as_string())
    head = {key: data.pop(key) for key in _HEAD if key in data}
    return json.dumps({**head, **data}, indent=2, ensure_ascii=False) + "\n"


def render(**inputs: Any) -> bytes:
    """The file's bytes for :func:`bom`'s arguments, its serialNumber a UUID made from the
    digest of the document as written with the nil UUID there: unique per content, the same
    for the same build."""
    digest = hashlib.sha256(_text(bom(**inputs)).encode()).digest()
    return _text(bom(**inputs, serial=uuid.UUID(bytes=digest[:16], version=5))).encode()
