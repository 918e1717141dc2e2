"""The SBOM (NAME.spdx.json): valid SPDX 2.3 by the SPDX project's own validator, the same bytes
for the same build, purls as packageurl-python writes them, declared licenses read from the
package databases and Debian's copyright files (never through a link out of the image)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from packageurl import PackageURL
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from nspawnbuild import sbom
from nspawnbuild_plugins.alpine import parse_apk_installed
from nspawnbuild_plugins.debian import (
    Debian,
    archive_digests,
    copyright_licenses,
    parse_dpkg_status,
    read_copyright,
)
from nspawnbuild_plugins.fedora import parse_rpm_query

TARBALL = {"file": "img.tar.gz", "sha256": "ab" * 32}
DEB_PACKAGES = [
    {"name": "libstdc++6", "version": "12.2.0-14+deb12u1", "arch": "amd64", "source": "gcc-12",
     "license": "GPL-3+ with GCC-Runtime exception AND (GPL-2+ or Artistic)"},
    {"name": "base-files", "version": "12.4", "arch": "amd64", "license": "GPL-2+"},
    {"name": "tzdata", "version": "2024a-0+deb12u1", "arch": "all", "license": "public-domain"},
    {"name": "mawk", "version": "1.3.4", "arch": "amd64", "license": ""},
    {"name": "zlib1g", "version": "1:1.2.13.dfsg-1", "arch": "amd64", "source": "zlib",
     "license": "Zlib"},
]

DEP5 = """\
Format: https://example.invalid/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: thing
License: GPL-2+

Files: *
Copyright: 2001 Someone
License: GPL-2+

Files: lib/*
Copyright: 2002 Someone Else
License: BSD-3-clause or Artistic
Comment: a comment with License: not-a-field inside

License: GPL-2+
 This program is free software...
"""


def make(packages: list[dict[str, Any]] = DEB_PACKAGES, kind: str = "deb",
         distro: str = "debian", **over: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"name": "img", "description": "an image", "distro": distro,
                            "release": "bookworm", "arch": "amd64", "epoch": 1700000000,
                            "tool_version": "0.1.0", "purl_type": kind, "packages": packages,
                            "tarball": TARBALL}
    args.update(over)
    return sbom.document(**args)


def validate(doc: dict[str, Any], tmp_path: Path) -> list[str]:
    """The SPDX tools' verdict on the rendered file (parsed from disk, as a consumer would)."""
    path = tmp_path / "img.spdx.json"
    path.write_bytes(sbom.render(doc))
    parsed = parse_file(str(path))
    return [m.validation_message for m in validate_full_spdx_document(parsed, "SPDX-2.3")]


@pytest.mark.parametrize(("kind", "distro"), [("deb", "debian"), ("rpm", "fedora"),
                                               ("apk", "alpine"), ("deb", "ubuntu")])
def test_the_spdx_tools_accept_the_document(kind: str, distro: str, tmp_path: Path) -> None:
    assert validate(make(kind=kind, distro=distro), tmp_path) == []


def test_the_validator_is_not_a_json_parse(tmp_path: Path) -> None:
    """A license word that is neither an SPDX id nor a declared LicenseRef is refused, so the
    test above can fail."""
    doc = make()
    doc["packages"][1]["licenseDeclared"] = "GPL-2+"
    assert any("GPL-2+" in m for m in validate(doc, tmp_path))


def test_every_package_is_listed_with_its_facts_and_contained_in_the_image() -> None:
    doc = make()
    image, *packages = doc["packages"]
    assert image["SPDXID"] == sbom.IMAGE_ID and image["packageFileName"] == "img.tar.gz"
    assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": "ab" * 32}]
    assert [p["name"] for p in packages] == ["base-files", "libstdc++6", "mawk", "tzdata",
                                             "zlib1g"]
    by_name = {p["name"]: p for p in packages}
    lib = by_name["libstdc++6"]
    assert lib["versionInfo"] == "12.2.0-14+deb12u1" and lib["comment"] == "architecture: amd64"
    assert lib["sourceInfo"] == "built from the source package gcc-12"
    assert lib["licenseDeclared"] == ("LicenseRef-GPL-3-plus-with-GCC-Runtime-exception AND "
                                      "(GPL-2.0-or-later OR Artistic-1.0-Perl)")
    assert by_name["mawk"]["licenseDeclared"] == "NOASSERTION"
    assert by_name["tzdata"]["licenseDeclared"] == "LicenseRef-public-domain"
    refs = {r["licenseId"]: r["name"] for r in doc["hasExtractedLicensingInfos"]}
    assert refs == {"LicenseRef-GPL-3-plus-with-GCC-Runtime-exception":
                    "GPL-3+ with GCC-Runtime exception", "LicenseRef-public-domain": "public-domain"}
    contains = {r["relatedSpdxElement"] for r in doc["relationships"]
                if r["spdxElementId"] == sbom.IMAGE_ID and r["relationshipType"] == "CONTAINS"}
    assert contains == {p["SPDXID"] for p in packages}
    assert {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
            "relatedSpdxElement": sbom.IMAGE_ID} in doc["relationships"]
    assert doc["creationInfo"]["created"] == "2023-11-14T22:13:20Z"


def test_same_build_same_bytes_and_the_namespace_follows_the_content() -> None:
    a = sbom.render(make())
    assert a == sbom.render(make(packages=list(reversed(DEB_PACKAGES))))
    assert json.loads(a)["documentNamespace"].startswith("urn:uuid:")
    other = make(tarball={"file": "img.tar.gz", "sha256": "cd" * 32})
    assert other["documentNamespace"] != json.loads(a)["documentNamespace"]


@pytest.mark.parametrize(("kind", "distro", "package", "expected"), [
    ("deb", "debian", {"name": "libstdc++6", "version": "1:12.2.0-14+deb12u1", "arch": "amd64"},
     PackageURL("deb", "debian", "libstdc++6", "1:12.2.0-14+deb12u1",
                {"arch": "amd64", "distro": "bookworm"})),
    ("rpm", "fedora", {"name": "xorg-x11-drv-nvidia", "version": "3:550.54.14-1.fc41",
                       "arch": "x86_64"},
     PackageURL("rpm", "fedora", "xorg-x11-drv-nvidia", "550.54.14-1.fc41",
                {"arch": "x86_64", "epoch": "3", "distro": "fedora-bookworm"})),
    ("apk", "alpine", {"name": "musl", "version": "1.2.5-r10", "arch": "x86_64"},
     PackageURL("apk", "alpine", "musl", "1.2.5-r10",
                {"arch": "x86_64", "distro": "alpine-bookworm"})),
])
def test_purls_are_what_packageurl_python_writes(kind: str, distro: str,
                                                 package: dict[str, str],
                                                 expected: PackageURL) -> None:
    made = sbom.package_purl(kind, distro, "bookworm", package)
    assert made == expected.to_string()
    assert PackageURL.from_string(made).version == expected.version


@pytest.mark.parametrize(("declared", "expression"), [
    ("GPL-2+", "GPL-2.0-or-later"), ("LGPL-2.1", "LGPL-2.1-only"),
    ("GPL-2+ and BSD-3-clause", "GPL-2.0-or-later AND BSD-3-Clause"),
    ("Expat, or Apache-2.0", "MIT OR Apache-2.0"),
    ("GPL-2.0-or-later AND LGPL-2.1-or-later", "GPL-2.0-or-later AND LGPL-2.1-or-later"),
    ("GFDL-NIV-1.3+", "GFDL-1.3-no-invariants-or-later"),
    ("MIT BSD GPL2+", "LicenseRef-MIT-BSD-GPL2-plus"),  # not an expression: kept whole
    ("(GPL-2+", "LicenseRef-GPL-2-plus"),
    ("", "NOASSERTION"),
])
def test_declared_licenses_become_spdx_expressions(declared: str, expression: str) -> None:
    assert sbom.license_expression(declared)[0] == expression


def test_dep5_copyright_licenses() -> None:
    assert copyright_licenses(DEP5) == "GPL-2+ AND (BSD-3-clause or Artistic)"
    assert copyright_licenses("This is free software under the GPL.\n") == ""


def test_copyright_is_read_inside_the_image_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    doc = root / "usr/share/doc"
    (doc / "good").mkdir(parents=True)
    (doc / "good/copyright").write_text(DEP5)
    # a link to an absolute path resolves inside the image, not on the host
    secret = tmp_path / "host-secret"
    secret.write_text(DEP5)
    (doc / "evil").mkdir()
    os.symlink(str(secret), doc / "evil/copyright")
    os.symlink("good", doc / "linked")  # a package's doc directory linked to its sibling's
    assert read_copyright(root, "good") == "GPL-2+ AND (BSD-3-clause or Artistic)"
    assert read_copyright(root, "linked") == read_copyright(root, "good")
    assert read_copyright(root, "evil") == ""
    assert read_copyright(root, "../../../host-secret") == ""
    assert read_copyright(root, "absent") == ""
    (doc / "fifo").mkdir()
    os.mkfifo(doc / "fifo/copyright")  # left by a step: not read, and no hang
    assert read_copyright(root, "fifo") == ""
    (doc / "many").mkdir()
    (doc / "many/copyright").write_text(DEP5 + "".join(
        f"\nFiles: f{i}\nCopyright: x\nLicense: L{i}\n" for i in range(300)))
    assert read_copyright(root, "many") == ""  # more licenses than a package declares


def test_debian_lists_sources_licenses_and_archive_digests(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(
        "Package: libz\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\n"
        "Source: zlib (1:1.0-1)\n\n"
        "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2-1\n")
    lists = tmp_path / "var/lib/apt/lists"
    lists.mkdir(parents=True)
    (lists / "x_dists_y_main_binary-amd64_Packages").write_text(
        "Package: bash\nVersion: 5.1-1\nArchitecture: amd64\nSHA256: " + "0" * 64 + "\n\n"
        "Package: bash\nVersion: 5.2-1\nArchitecture: amd64\nDescription: x\n extra line\n"
        "SHA256: " + "1" * 64 + "\n")
    (tmp_path / "usr/share/doc/bash").mkdir(parents=True)
    (tmp_path / "usr/share/doc/bash/copyright").write_text(DEP5)
    packages = {p.name: p.as_dict() for p in Debian({"distro": "debian"}).list_packages(tmp_path)}
    assert packages["bash"] == {"name": "bash", "version": "5.2-1", "arch": "amd64",
                                "installed_size_kib": 0, "source": "bash",
                                "license": "GPL-2+ AND (BSD-3-clause or Artistic)",
                                "digest": "sha256:" + "1" * 64}
    assert packages["libz"]["source"] == "zlib" and "license" not in packages["libz"]
    assert "digest" not in packages["libz"]
    assert archive_digests(tmp_path / "absent", {("bash", "5.2-1", "amd64")}) == {}


def test_status_without_source_names_the_package_itself() -> None:
    (pkg,) = parse_dpkg_status("Package: a\nStatus: install ok installed\nVersion: 1\n")
    assert pkg.source == "a"


def test_rpm_and_apk_databases_give_license_source_and_digest() -> None:
    header = "f" * 64
    (bash,) = parse_rpm_query(f"bash\t0\t5.2.26-3.fc41\tx86_64\t8388608\tGPL-3.0-or-later\t"
                              f"bash-5.2.26-3.fc41.src.rpm\t{header}\n")
    assert (bash.source, bash.license, bash.digest) == (
        "bash", "GPL-3.0-or-later", f"rpm-header-sha256:{header}")
    (musl,) = parse_apk_installed("C:Q1abc=\nP:musl\nV:1.2.5-r10\nA:x86_64\nL:MIT\no:musl\n")
    assert (musl.source, musl.license, musl.digest) == ("musl", "MIT", "apk:Q1abc=")
