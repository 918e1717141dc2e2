"""The loaded recipe: frozen and typed, with its source map, its parsed settings and its distro.

A :class:`Recipe` is made once, by ``recipe.load.load_recipe``, after every check passed; nothing
changes it afterwards. ``data`` is the resolved recipe exactly as ``nspawnbuild show`` prints it
(``extends`` applied, defaults filled in) and, with the content of its files, its identity
(:meth:`Recipe.digest`). Everything else is the same information parsed into types, so that no
stage parses a table again.

The model knows nothing of feature plugins: a recipe carries its enabled features as objects of
whatever class the registry gives (``Recipe[Feature]``), so that this module imports neither the
feature API nor the plugins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from ..digests import canonical_json
from ..distro import Distro
from ..schema import SOURCE_MAX_SIZE_DEFAULT, SOURCE_TIMEOUT_DEFAULT
from ..settings import Setting
from ..sizes import parse_size
from .sourcemap import SourceMap

F = TypeVar("F")


def freeze(value: Any) -> Any:
    """``value`` made read-only all the way down: tables as read-only mappings, arrays as
    tuples. The loaded recipe's data is frozen so that no stage can change what the others,
    and the recipe's digest, see."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class FileEntry:
    """A ``[[files]]`` entry with its source resolved against the recipe that declared it."""

    src: Path
    dest: str
    mode: int | None
    owner: str | None
    template: bool
    declared_in: Path
    index: int
    content: bytes = field(repr=False, default=b"")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class SourceEntry:
    """A ``[[sources]]`` entry: a file to download by URL, check by sha256 and install."""

    url: str
    sha256: str  # lower case
    dest: str
    extract: bool
    strip_components: int
    mode: int  # without extract; 0o644 unless the recipe says otherwise
    declared_in: Path
    index: int  # position among the [[sources]] of the file that declares it
    max_size: int = parse_size(SOURCE_MAX_SIZE_DEFAULT)  # bytes the download may have
    timeout: int = SOURCE_TIMEOUT_DEFAULT  # seconds the whole download may take

    @property
    def key(self) -> str:
        """``sources[N]`` as the declaring file counts, for messages."""
        return f"sources[{self.index}]"

    def as_dict(self) -> dict[str, Any]:
        """What shapes the installed result (for the rootfs digest)."""
        out: dict[str, Any] = {"url": self.url, "sha256": self.sha256, "dest": self.dest,
                               "extract": self.extract}
        if self.extract:
            out["strip_components"] = self.strip_components
        else:
            out["mode"] = self.mode
        return out


@dataclass(frozen=True)
class PostStep:
    """A ``[[post]]`` step: a shell script run inside the image, in the sandbox."""

    run: str
    name: str | None = None
    shell: str = "/bin/sh"
    network: bool = True

    @property
    def label(self) -> str:
        return self.name or ""


@dataclass(frozen=True)
class Output:
    """``[output]``: how the tarball is compressed, and the key that signs the published set."""

    compression: str
    level: int
    #: ``sign``: a key id, fingerprint or user id, or a key file's path (``nspawnbuild.signing``)
    sign: str | None = None
    #: the directory of the recipe file that set ``sign``: a relative key file is found there
    sign_dir: Path | None = None
    #: ``sbom``: the SBOM formats published, "spdx" always first (``schema.SBOM_FORMATS``)
    sbom: tuple[str, ...] = ("spdx",)

    def as_dict(self) -> dict[str, Any]:
        """What shapes the tarball (the pack stage's key, the manifest's record); the signing
        key is not in it: a signature changes no artifact, only adds SHA256SUMS.gpg."""
        return {"compression": self.compression, "level": self.level}


@dataclass(frozen=True)
class Recipe(Generic[F]):
    """A validated recipe with ``extends`` applied and defaults filled in."""

    name: str
    path: Path
    #: the resolved recipe (what ``show`` prints), read-only all the way down (``freeze``)
    data: Mapping[str, Any]
    #: where each key was written, for problems found after loading
    sources: SourceMap
    #: the distro of ``[base]``, made once
    distro: Distro
    #: the enabled features, in the order they run (see ``nspawnbuild.feature``)
    features: tuple[F, ...]
    files: tuple[FileEntry, ...]
    source_entries: tuple[SourceEntry, ...]
    post: tuple[PostStep, ...]
    #: the recipe's own ``packages``
    packages: tuple[str, ...]
    output: Output
    #: the recipe's own ``[nspawn]`` and ``[unit]`` tables, parsed
    nspawn: tuple[Setting, ...]
    unit: tuple[Setting, ...]
    epoch: int
    target_systemd: int
    description: str
    audit_allow: tuple[str, ...]

    @property
    def chain(self) -> tuple[Path, ...]:
        """The files of the ``extends`` chain, root ancestor first, this recipe last."""
        return self.sources.chain

    @property
    def base(self) -> Mapping[str, Any]:
        """``[base]`` with the distro's defaults filled in."""
        return self.data["base"]  # type: ignore[no-any-return]

    @property
    def feature_tables(self) -> Mapping[str, Mapping[str, Any]]:
        """The ``[features.*]`` tables as written (what the rootfs digest records)."""
        return self.data.get("features", {})  # type: ignore[no-any-return]

    def feature(self, name: str) -> F | None:
        """The enabled feature called ``name``, or None when it is off."""
        for f in self.features:
            if getattr(f, "name", None) == name:
                return f
        return None

    def digest(self) -> str:
        """sha256 of the resolved recipe and the content of its files: its identity.

        Whitespace, comments, key order and the recipe's location do not change it.
        """
        doc = {"recipe": unsigned(self.data), "files": [f.sha256 for f in self.files]}
        return hashlib.sha256(canonical_json(doc)).hexdigest()


#: ``[output]`` keys that say what is published about the image, not what it is
NOT_IDENTIFYING = ("sign", "sbom")


def unsigned(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` without ``[output] sign`` and ``sbom``: the key that signs a set and the SBOM
    formats published beside it are not part of what the set is (the digest is in
    manifest.json and the .nspawn), so the tarball and the .nspawn stay byte-identical whether
    and by whom they are signed, and whether a CycloneDX SBOM is added (``sbom = ["spdx"]``
    written out is the default, to the byte)."""
    output = data.get("output")
    if not isinstance(output, Mapping) or not any(k in output for k in NOT_IDENTIFYING):
        return data
    return {**data, "output": {k: v for k, v in output.items() if k not in NOT_IDENTIFYING}}
