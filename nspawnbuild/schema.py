"""The recipe's JSON Schema: the core keys here, ``[base]`` extras and features from plugins.

One schema serves three purposes: validating recipes (with jsonschema), documenting them, and
giving editors completion (``nspawnbuild schema``). Nodes may carry ``x-hint``, a sentence
telling the user how to fix a value that does not match.

This module holds only what the core owns (and the limits other modules share); it imports
nothing of the package, so that anything may use its constants. The plugins' parts are added
by ``nspawnbuild.recipe.load``: a distro's ``base_schema`` for ``[base]`` beyond distro,
release and arch, and each feature's table.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

MACHINE_NAME_PATTERN = r"^(?![-.])(?!.*\.\.)(?!.*[.-]$)[A-Za-z0-9.-]{1,64}$"
MACHINE_NAME_HINT = (
    "a machine name has 1 to 64 letters, digits, '-' and '.', does not start or end with "
    "'-' or '.', and has no '..' and no '_'"
)
PACKAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9+._~:=-]*$"
ABSOLUTE_PATH_PATTERN = r"^/(?!.*(^|/)\.\.?(/|$))[^\x00-\x1f]*$"
#: a directory of the image's own data (``state``): absolute, not ``/`` itself
STATE_PATH_PATTERN = r"^/(?!.*(^|/)\.\.?(/|$))(?!/)[^\x00-\x1f]+$"
SOURCE_URL_PATTERN = r"^(https?|file)://[^\s\x00-\x1f\x7f]+$"
SHA256_PATTERN = r"^[0-9A-Fa-f]{64}$"
SCALAR = {"type": ["string", "integer", "boolean"]}
SETTING_VALUE = {"anyOf": [SCALAR, {"type": "array", "items": SCALAR}],
                 "x-hint": "a string, an integer or a boolean, or an array of them"}

COMPRESSION_LEVELS = {"zstd": (1, 22), "xz": (0, 9), "gzip": (1, 9), "none": (0, 0)}
#: ``[output] sbom``: the SBOM formats a build can publish; "spdx" is always among them
SBOM_FORMATS = ("spdx", "cyclonedx")

#: the most entries a list may have (in one recipe file, and after ``extends`` is applied):
#: a bound on what a hostile recipe can make validation and the build chew on, far above what
#: real recipes need
LIST_LIMITS = {"packages": 10_000, "post": 1_000, "files": 1_000, "sources": 1_000}
#: a size: bytes, or a number with K, M, G or T (powers of 1024), as ``cache prune --max-size``
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?[KMGT]?$"
#: ``[[sources]]`` limits unless the entry sets them; nspawnbuild.fetch uses the same numbers
SOURCE_MAX_SIZE_DEFAULT = "4G"
SOURCE_TIMEOUT_DEFAULT = 1800
SOURCE_TIMEOUT_MAX = 86400


def mode_schema(example: str) -> dict[str, Any]:
    """A file mode: an octal string ("0644") or its number."""
    return {"anyOf": [{"type": "string", "pattern": r"^0?[0-7]{3,4}$"},
                      {"type": "integer", "minimum": 0, "maximum": 0o7777}],
            "x-hint": f"an octal string such as \"{example}\""}


def core_schema() -> dict[str, Any]:
    """The schema of the keys the core owns (everything but feature tables and distro extras).

    A new dict each call: callers add the plugins' parts to it."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "nspawnbuild recipe",
        "type": "object",
        "additionalProperties": False,
        "required": ["base"],
        "properties": {
            "name": {
                "type": "string", "pattern": MACHINE_NAME_PATTERN, "x-hint": MACHINE_NAME_HINT,
                "description": "Machine name of the image; defaults to the recipe file's stem.",
            },
            "description": {"type": "string", "maxLength": 1000},
            "extends": {
                "type": "string", "minLength": 1,
                "description": "Parent recipe: a name on the search path or a path relative "
                               "to this file. Child values win; packages, post, files and sources "
                               "append.",
            },
            "epoch": {
                "type": "integer", "minimum": 86400, "maximum": 4102444800,
                "x-hint": "a Unix time in seconds, e.g. 1704067200 for 2024-01-01",
                "description": "SOURCE_DATE_EPOCH: mtimes in the image are clamped to it.",
            },
            "state": {
                "type": "array", "uniqueItems": True, "maxItems": 64,
                "items": {"type": "string", "maxLength": 4096, "pattern": STATE_PATH_PATTERN,
                          "x-hint": "an absolute path inside the image, such as "
                                    "/var/lib/postgresql, without . or .. components"},
                "description": "Directories that are the machine's own data: install over an "
                               "installed machine moves them from the old tree into the new "
                               "one instead of taking the image's.",
            },
            "target_systemd": {
                "type": "integer", "minimum": 230, "maximum": 999,
                "description": "systemd version of the hosts the image is for (default: the "
                               "systemd of the image's own release, else 252).",
            },
            "base": {
                "type": "object",
                "additionalProperties": False,
                "required": ["distro"],
                "properties": {
                    "distro": {"type": "string"},
                    "release": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                                "x-hint": "a release code name or number, e.g. bookworm"},
                    "arch": {"type": "string", "pattern": r"^[a-z0-9_]+$",
                             "x-hint": "an architecture name such as amd64 or arm64"},
                    # every other key is a distro's own: its plugin's Distro.base_schema
                },
            },
            "packages": {
                "type": "array", "uniqueItems": True, "maxItems": LIST_LIMITS["packages"],
                "items": {"type": "string", "pattern": PACKAGE_PATTERN,
                          "x-hint": "package names have letters, digits and + . _ ~ : = -"},
                "description": "Extra packages installed in the bootstrap run (appends).",
            },
            "features": {"type": "object", "additionalProperties": False, "properties": {}},
            "post": {
                "type": "array", "maxItems": LIST_LIMITS["post"],
                "description": "Shell scripts run inside the image with systemd-nspawn (appends).",
                "items": {
                    "type": "object", "additionalProperties": False, "required": ["run"],
                    "properties": {
                        "run": {"type": "string", "minLength": 1},
                        "name": {"type": "string", "maxLength": 200},
                        "network": {"type": "boolean"},
                        "shell": {"type": "string", "pattern": ABSOLUTE_PATH_PATTERN,
                                  "x-hint": "an absolute path inside the image, e.g. /bin/bash"},
                    },
                },
            },
            "files": {
                "type": "array", "maxItems": LIST_LIMITS["files"],
                "description": "Files copied into the image (appends).",
                "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["src", "dest"],
                    "properties": {
                        "src": {"type": "string", "minLength": 1,
                                "description": "A regular file inside the directory of the recipe "
                                               "that names it (relative to it, or absolute)."},
                        "dest": {"type": "string", "pattern": ABSOLUTE_PATH_PATTERN,
                                 "x-hint": "an absolute path inside the image without '..', "
                                           "e.g. /etc/motd"},
                        "mode": mode_schema("0644"),
                        "owner": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$",
                                  "x-hint": "USER or USER:GROUP, names or numbers"},
                        "template": {"type": "boolean"},
                    },
                },
            },
            "sources": {
                "type": "array", "maxItems": LIST_LIMITS["sources"],
                "description": "Files downloaded by URL, checked against their sha256, cached by "
                               "digest, and copied or unpacked into the image (appends).",
                "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["url", "sha256", "dest"],
                    "properties": {
                        "url": {"type": "string", "pattern": SOURCE_URL_PATTERN,
                                "x-hint": "an http://, https:// or file:// URL without spaces, "
                                          "e.g. https://example.invalid/tool-1.2.tar.gz",
                                "description": "http(s)://, or file:///PATH of a regular file "
                                               "inside the directory of the recipe that names it."},
                        "sha256": {"type": "string", "pattern": SHA256_PATTERN,
                                   "x-hint": "the file's sha256: 64 hex digits, as "
                                             "`sha256sum FILE` prints them"},
                        "dest": {"type": "string", "pattern": ABSOLUTE_PATH_PATTERN,
                                 "x-hint": "an absolute path inside the image without '..': the "
                                           "file's path, or the directory to unpack into with "
                                           "extract = true"},
                        "extract": {"type": "boolean"},
                        "strip_components": {"type": "integer", "minimum": 0, "maximum": 64,
                                             "x-hint": "a number of leading path components, "
                                                       "0 to 64"},
                        "mode": mode_schema("0755"),
                        "max_size": {
                            "anyOf": [{"type": "string", "pattern": SIZE_PATTERN},
                                      {"type": "integer", "minimum": 1}],
                            "x-hint": "bytes, or a number with K, M, G or T (powers of 1024), "
                                      "e.g. \"2G\"",
                            "description": "The most bytes the download may have (default "
                                           f"{SOURCE_MAX_SIZE_DEFAULT}); more stops the build.",
                        },
                        "timeout": {
                            "type": "integer", "minimum": 1, "maximum": SOURCE_TIMEOUT_MAX,
                            "x-hint": f"seconds, 1 to {SOURCE_TIMEOUT_MAX}",
                            "description": "Seconds the whole download may take (default "
                                           f"{SOURCE_TIMEOUT_DEFAULT}); longer stops the build.",
                        },
                    },
                },
            },
            "nspawn": {
                "type": "object",
                "description": "Extra .nspawn settings: [nspawn.Exec], [nspawn.Files], [nspawn.Network].",
                "additionalProperties": {"type": "object", "additionalProperties": SETTING_VALUE},
            },
            "unit": {
                "type": "object",
                "description": "Extra drop-in settings for systemd-nspawn@NAME.service.",
                "additionalProperties": {"type": "object", "additionalProperties": SETTING_VALUE},
            },
            "audit": {
                "type": "object", "additionalProperties": False,
                "description": "The end-of-build audit for secrets and host state.",
                "properties": {"allow": {
                    "type": "array",
                    # a path in the image (/...), or a setting: FILE:Key=value, FILE the
                    # generated .nspawn or drop-in (.conf), as audit.settings_findings names it
                    "items": {"type": "string", "pattern":
                              r"^([a-z-]+:)?(/|[^\x00-\x1f:/][^\x00-\x1f:]*\.(nspawn|conf):)"
                              r"[^\x00-\x1f]*$",
                              "x-hint": "CHECK:GLOB, GLOB, or CHECK:FILE:Key=value, e.g. "
                                        "\"private-key:/usr/share/doc/*\" or "
                                        "\"nspawn-private-users:NAME.nspawn:PrivateUsers=no\""},
                    "description": "Findings to accept: CHECK:GLOB or GLOB (every check), "
                                   "CHECK:FILE:Key=value for a setting."}},
            },
            "output": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "compression": {
                        "enum": list(COMPRESSION_LEVELS),
                        "description": "The tarball's compression (default: what the target "
                                       "hosts can pull: zstd when target_systemd is 258 or "
                                       "more, else gzip)."},
                    "level": {"type": "integer", "minimum": 0, "maximum": 22},
                    "sbom": {
                        # the SPDX SBOM is always published (the manifest records it, and its
                        # digest stays what it was); CycloneDX is added beside it on request
                        "type": "array", "uniqueItems": True,
                        "items": {"enum": list(SBOM_FORMATS)},
                        "contains": {"const": "spdx", "x-why": "every build publishes its "
                                     "SPDX SBOM; CycloneDX is published beside it"},
                        "x-hint": 'e.g. sbom = ["spdx", "cyclonedx"]',
                        "description": "The SBOMs to publish: \"spdx\" (NAME.spdx.json, "
                                       "always) and optionally \"cyclonedx\" (NAME.cdx.json, "
                                       "CycloneDX 1.6); default [\"spdx\"].",
                    },
                    "sign": {
                        "type": "string", "minLength": 1, "maxLength": 4096,
                        "pattern": r"^[^\x00-\x1f]+$",
                        "x-hint": "a key id, fingerprint or user id in the builder's gpg "
                                  "keyring, or the path of an exported secret key file",
                        "description": "Sign SHA256SUMS (SHA256SUMS.gpg) with this key: a key "
                                       "id, fingerprint or user id in the keyring, or an "
                                       "exported secret key file beside the recipe; --sign, "
                                       "NSPAWNBUILD_SIGN_KEY and --no-sign override it.",
                    },
                },
            },
        },
    }


def full_schema(distro_schema: Mapping[str, Any] | None,
                features: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The core schema with a distro's ``[base]`` extras and the plugins' feature tables.

    The arguments are copied: the result can be changed without changing a plugin's class."""
    schema = copy.deepcopy(core_schema())
    if distro_schema:
        schema["properties"]["base"]["properties"].update(copy.deepcopy(distro_schema))
    schema["properties"]["features"]["properties"] = {
        name: copy.deepcopy(dict(table)) for name, table in features.items()}
    return schema
