"""The image's software bill of materials: ``NAME.spdx.json``, an SPDX 2.3 JSON document.

Made in the manifest stage from what the build already recorded (the installed packages the
distro read from the image's package database, the tarball's digest), so it costs no look at
the tree of its own and says exactly what the manifest says. It lists the image as a package
with the tarball's sha256, every installed package with name, version, architecture, source
package, a package URL (purl) and its license as declared, and a CONTAINS relationship from
the image to each.

Same build, same bytes: the creation time is the recipe's SOURCE_DATE_EPOCH, the document's
namespace a UUID derived from the rest of its content, everything sorted. Declared licenses
come in the distro's own words (Debian's DEP-5 short names such as ``GPL-2+``); they are
mapped to SPDX license identifiers where the name says which (``GPL-2.0-or-later``) and
otherwise kept as a ``LicenseRef-`` whose extracted text says where it was declared: the SPDX
tools accept no other word in a license expression. A package whose database and copyright
file declare nothing a tool can read has ``NOASSERTION``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

SPDX_VERSION = "SPDX-2.3"
NOASSERTION = "NOASSERTION"
IMAGE_ID = "SPDXRef-Image"
#: the purl qualifier ``distro`` of each type: Debian's example uses the release's name,
#: rpm's and apk's the distro and release
_DISTRO_QUALIFIER = {"deb": "{release}"}

#: SPDX license identifiers that distro package databases use, matched without regard to
#: case; anything else that is not a GNU family name (``GPL-2+``) or an alias below becomes a
#: LicenseRef
SPDX_IDS = {i.lower(): i for i in """
0BSD AFL-2.1 AFL-3.0 AGPL-3.0-only AGPL-3.0-or-later Apache-1.0 Apache-1.1 Apache-2.0 APSL-2.0
Artistic-1.0 Artistic-1.0-Perl Artistic-2.0 Beerware BlueOak-1.0.0 BSD-1-Clause BSD-2-Clause
BSD-2-Clause-Patent BSD-3-Clause BSD-3-Clause-Clear BSD-4-Clause BSD-4-Clause-UC BSD-Source-Code
BSL-1.0 bzip2-1.0.6 CC-BY-3.0 CC-BY-4.0 CC-BY-SA-3.0 CC-BY-SA-4.0 CC0-1.0 CDDL-1.0 CDDL-1.1
CPL-1.0 curl ECL-2.0 EFL-2.0 EPL-1.0 EPL-2.0 EUPL-1.2 FSFAP FSFUL FSFULLR FTL GFDL-1.1-only
GFDL-1.1-or-later GFDL-1.2-only GFDL-1.2-or-later GFDL-1.3-only GFDL-1.3-or-later GPL-1.0-only
GPL-1.0-or-later GPL-2.0-only GPL-2.0-or-later GPL-3.0-only GPL-3.0-or-later HPND ICU IJG Info-ZIP
IPA ISC LGPL-2.0-only LGPL-2.0-or-later LGPL-2.1-only LGPL-2.1-or-later LGPL-3.0-only
LGPL-3.0-or-later Libpng libtiff LPPL-1.3c MirOS MIT MIT-0 MIT-CMU MPL-1.1 MPL-2.0 MS-PL NCSA
OFL-1.1 OLDAP-2.8 OpenSSL PHP-3.01 PostgreSQL PSF-2.0 Python-2.0 Ruby Sleepycat SMLNJ TCL
Unicode-3.0 Unicode-DFS-2016 Unlicense UPL-1.0 Vim W3C WTFPL X11 XFree86-1.1 Zlib ZPL-2.1
""".split()}
#: Debian's DEP-5 short names (and common spellings) that are not SPDX identifiers as written
ALIASES = {"expat": "MIT", "artistic": "Artistic-1.0-Perl", "apache-2": "Apache-2.0",
           "mpl-2": "MPL-2.0", "cc0": "CC0-1.0", "bsd-3-clause-berkeley": "BSD-3-Clause",
           "psf": "PSF-2.0", "zlib/libpng": "Zlib"}
_GNU = re.compile(r"^(A?GPL|LGPL|GFDL)(-NIV)?-?v?(\d)(\.\d)?(\.0)?(\+|-or-later|-only)?$",
                  re.IGNORECASE)
_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")
_OPERATORS = {"and": "AND", "or": "OR", ",": None}


def file_name(name: str) -> str:
    """The SBOM's name in out/NAME."""
    return f"{name}.spdx.json"


# -- package URLs -----------------------------------------------------------------------------

def _pct(text: str, safe: str = "") -> str:
    """Percent-encoding as the purl specification asks: all but unreserved characters."""
    return quote(text, safe=safe)


def purl(kind: str, namespace: str, name: str, version: str,
         qualifiers: Mapping[str, str]) -> str:
    """``pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`` (qualifiers sorted, empty ones left
    out), encoded as packageurl-python encodes it."""
    quals = "&".join(f"{k}={_pct(v, ':/')}" for k, v in sorted(qualifiers.items()) if v)
    out = f"pkg:{kind}/{_pct(namespace.lower())}/{_pct(name)}"
    if version:
        out += f"@{_pct(version, ':')}"
    return out + (f"?{quals}" if quals else "")


def package_purl(kind: str, distro: str, release: str, package: Mapping[str, Any]) -> str:
    """A package's purl. rpm's epoch is a qualifier (the version is VERSION-RELEASE), Debian's
    stays in the version, as the purl types define them; ``distro`` names the release."""
    version, quals = str(package["version"]), {"arch": str(package.get("arch", ""))}
    if kind == "rpm" and re.match(r"^\d+:", version):
        epoch, _, version = version.partition(":")
        quals["epoch"] = epoch
    quals["distro"] = _DISTRO_QUALIFIER.get(kind, "{distro}-{release}").format(
        distro=distro, release=release)
    return purl(kind, distro, str(package["name"]), version, quals)


# -- licenses ---------------------------------------------------------------------------------

def license_ref(words: str) -> str:
    """The LicenseRef for a license that has no SPDX identifier (idstring: letters, digits,
    dots and dashes)."""
    words = words.replace("+", "-plus")  # GPL-2+ and GPL-2 stay apart
    return "LicenseRef-" + (re.sub(r"[^A-Za-z0-9.]+", "-", words).strip("-") or "unknown")


def spdx_license_id(word: str) -> str:
    """One declared license name as an SPDX identifier, or its LicenseRef."""
    low = word.lower()
    if low in SPDX_IDS:
        return SPDX_IDS[low]
    if low in ALIASES:
        return ALIASES[low]
    if low.startswith("licenseref-"):
        return license_ref(word[len("licenseref-"):])
    m = _GNU.match(word)
    if m:
        family, niv, major, minor, _, suffix = m.groups()
        family = family.upper()
        minor = minor or ".0"
        later = "or-later" if suffix and suffix.lower() in ("+", "-or-later") else "only"
        if family == "GFDL":
            ident = f"GFDL-{major}{minor}" + ("-no-invariants" if niv else "") + f"-{later}"
        else:
            ident = f"{family}-{major}{minor}-{later}"
        if ident.lower() in SPDX_IDS or niv:
            return ident
    return license_ref(word)


def license_expression(declared: str) -> tuple[str, dict[str, str]]:
    """``(SPDX expression, {LicenseRef: what was declared})`` for a declared license:
    NOASSERTION when nothing is declared; operators are DEP-5's ``and``/``or`` (a comma
    before one is dropped), parentheses kept; ``X with Y exception`` has no SPDX form and
    becomes one LicenseRef, as does a declaration that is not a well-formed expression."""
    declared = declared.strip()
    if not declared:
        return NOASSERTION, {}
    tokens = [t.rstrip(",") if t not in ("(", ")") else t for t in _TOKEN.findall(declared)]
    tokens = [t for t in tokens if t]
    out: list[str] = []
    refs: dict[str, str] = {}
    depth, expect_operand, i = 0, True, 0
    while i < len(tokens):
        tok = tokens[i]
        low = tok.lower()
        if tok == "(" and expect_operand:
            depth += 1
            out.append("(")
        elif tok == ")" and not expect_operand and depth:
            depth -= 1
            out.append(")")
        elif low in _OPERATORS and _OPERATORS[low] and not expect_operand:
            out.append(str(_OPERATORS[low]))
            expect_operand = True
        elif expect_operand and low not in _OPERATORS and tok not in ("(", ")"):
            words = [tok]
            if i + 1 < len(tokens) and tokens[i + 1].lower() == "with":
                # the exception's words run to the next operator or parenthesis
                j = i + 1
                while j < len(tokens) and tokens[j].lower() not in ("and", "or", "(", ")"):
                    words.append(tokens[j])
                    j += 1
                i = j - 1
                ident = license_ref(" ".join(words))
            else:
                ident = spdx_license_id(tok)
            if ident.startswith("LicenseRef-"):
                refs[ident] = " ".join(words)
            out.append(ident)
            expect_operand = False
        else:
            break  # not an expression: kept whole, below
        i += 1
    if i < len(tokens) or depth or expect_operand:
        ident = license_ref(declared)
        return ident, {ident: declared}
    return " ".join(out).replace("( ", "(").replace(" )", ")"), refs


# -- the document -----------------------------------------------------------------------------

def spdx_id(kind: str, package: Mapping[str, Any]) -> str:
    """A package's SPDXID: readable, and unique by a digest of name, version and arch (two
    names may sanitize alike, ``libstdc++6``)."""
    key = f"{package['name']}\0{package['version']}\0{package.get('arch', '')}"
    short = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9.]+", "-", str(package["name"])).strip("-")
    return f"SPDXRef-Package-{kind}-{name}-{short}"


def created(epoch: int) -> str:
    """The document's creation time: the build's SOURCE_DATE_EPOCH, not the clock."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _package(kind: str, distro: str, release: str, package: Mapping[str, Any],
             refs: dict[str, str]) -> dict[str, Any]:
    expression, found = license_expression(str(package.get("license", "")))
    for ident, words in found.items():
        refs.setdefault(ident, words)
    entry: dict[str, Any] = {
        "SPDXID": spdx_id(kind, package),
        "name": str(package["name"]),
        "versionInfo": str(package["version"]),
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": expression,
        "copyrightText": NOASSERTION,
        "supplier": NOASSERTION,
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": package_purl(kind, distro, release, package)}],
    }
    if package.get("arch"):
        entry["comment"] = f"architecture: {package['arch']}"
    if package.get("source"):
        entry["sourceInfo"] = f"built from the source package {package['source']}"
    return entry


def document(*, name: str, description: str, distro: str, release: str, arch: str,
             epoch: int, tool_version: str, purl_type: str, packages: Iterable[Mapping[str, Any]],
             tarball: Mapping[str, Any]) -> dict[str, Any]:
    """The SPDX 2.3 document of one build, as JSON data (see :func:`render`)."""
    refs: dict[str, str] = {}
    ordered = sorted(packages, key=lambda p: (str(p["name"]), str(p.get("arch", "")),
                                              str(p["version"])))
    entries = [_package(purl_type, distro, release, p, refs) for p in ordered]
    image: dict[str, Any] = {
        "SPDXID": IMAGE_ID,
        "name": name,
        "packageFileName": str(tarball["file"]),
        "checksums": [{"algorithm": "SHA256", "checksumValue": str(tarball["sha256"])}],
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
        "comment": f"systemd-nspawn image of {distro} {release} {arch}, built by nspawnbuild",
    }
    if description:
        image["description"] = description
    doc: dict[str, Any] = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{name} image",
        "creationInfo": {"created": created(epoch),
                         "creators": [f"Tool: nspawnbuild-{tool_version}"]},
        "packages": [image, *entries],
        "relationships": [
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
             "relatedSpdxElement": IMAGE_ID},
            *({"spdxElementId": IMAGE_ID, "relationshipType": "CONTAINS",
               "relatedSpdxElement": e["SPDXID"]} for e in entries)],
    }
    if refs:
        doc["hasExtractedLicensingInfos"] = [
            {"licenseId": ident, "name": words,
             "extractedText": f"declared as \"{words}\" by the package's database or copyright "
                              "file; it names no SPDX license"}
            for ident, words in sorted(refs.items())]
    # the namespace is unique per content and the same for the same build: a UUID made from
    # the digest of everything else
    content = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).digest()
    doc["documentNamespace"] = f"urn:uuid:{uuid.UUID(bytes=content[:16], version=5)}"
    return doc


def render(doc: Mapping[str, Any]) -> bytes:
    """The file's bytes: sorted keys, two-space indent, a final newline."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
