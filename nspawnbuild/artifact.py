"""A built image's artifact directory (out/NAME): opened and checked, and what the commands
report on it: ``inspect`` (what is in the image) and ``diff`` (what changed between two builds).

They read only the artifact directory (manifest.json, the tarball's headers, the .nspawn and
the drop-in), so they work on artifacts downloaded from CI as well as on local builds. Such a
directory may be hostile: the manifest is checked against the fields the tools read, its file
names must stay inside the directory, small files are read with a size bound, and the tarball
with the bounded reader (:mod:`nspawnbuild.tarread`). :class:`Artifact` is also what install,
shell and boot open; :func:`audit_target` is how ``audit`` finds the tarball of a directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from . import tarread
from .errors import EXIT_BAD_INPUT, NspawnbuildError, Problem, RecipeError
from .schema import MACHINE_NAME_HINT, MACHINE_NAME_PATTERN, STATE_PATH_PATTERN
from .sizes import human_size

BAR = 30
MAX_MANIFEST_BYTES = 16 << 20  # a manifest with 10 000 packages is about 1.5 MiB
MAX_SETTINGS_BYTES = 1 << 20
NOT_AN_ARTIFACT = "give a directory a build wrote, e.g. out/NAME"
#: an artifact's file, relative to its directory and inside it
ARTIFACT_FILE_PATTERN = r"^(?!/)(?!.*(^|/)\.\.?(/|$))[^\x00-\x1f]+$"
_STR = {"type": "string"}
_INT = {"type": "integer"}
_FILE = {"type": "string", "pattern": ARTIFACT_FILE_PATTERN}


def _object(**props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(props), "properties": props}


#: the fields of manifest.json that install, inspect, diff, shell and boot read (a build writes
#: more); checked on opening, so that a foreign or damaged manifest is a clear error, not a
#: KeyError in the middle of a report
MANIFEST_SCHEMA = _object(
    name=_STR, recipe_digest=_STR, source_date_epoch=_INT,
    base=_object(distro=_STR, release=_STR, arch=_STR),
    tool=_object(version=_STR),
    tree=_object(bytes=_INT),
    packages={"type": "array", "items": _object(name=_STR, version=_STR,
                                                 installed_size_kib={"type": "number"})},
    artifacts=_object(tarball=_object(file=_FILE, size=_INT, compression=_STR),
                      nspawn=_object(file=_FILE), dropin=_object(file=_FILE)),
)


#: optional: the directories install carries from an old tree to the new (a manifest comes
#: from anywhere: each is checked as the recipe schema checks it)
MANIFEST_SCHEMA["properties"]["state"] = {
    "type": "array", "maxItems": 64,
    "items": {"type": "string", "maxLength": 4096, "pattern": STATE_PATH_PATTERN}}


#: optional: what the image's features ask of the target host (hostneeds.py); each feature
#: checks its own entry, install that it is a table of them
MANIFEST_SCHEMA["properties"]["host_needs"] = {"type": "object", "maxProperties": 64}


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a small file of an artifact directory; a larger one is refused before it is
    read (artifact directories may come from anywhere)."""
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise RecipeError(Problem(path, None, f"larger than {limit} bytes, far more than a build "
                                  "writes", NOT_AN_ARTIFACT))
    return data


def _short(text: str, limit: int = 80) -> str:
    """``text`` cut to fit an error line: hostile input can be megabytes long."""
    return text if len(text) <= limit else text[:limit] + "..."


def confined(path: Path, top: Path, hint: str) -> Path:
    """``path``, refused when it leads (symlinks followed) outside ``top``, an already resolved
    directory: what it names is read or written, and must be what the tool means to touch."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
        raise RecipeError(Problem(path, None, f"cannot be resolved ({e})", hint)) from None
    if real != top and not real.is_relative_to(top):
        raise RecipeError(Problem(path, None, f"leads to {real}, outside {top}", hint))
    return path


def check_machine_name(name: str, where: Path, key: str | None) -> str:
    """``name``, refused unless it is a valid machine name: it becomes a path below
    /var/lib/machines, /etc/systemd and /run/systemd, so it must not be able to leave them."""
    if not isinstance(name, str) or not re.fullmatch(MACHINE_NAME_PATTERN, name):
        raise RecipeError(Problem(where, key, f"{_short(repr(name))} is not a valid machine name",
                                  MACHINE_NAME_HINT))
    return name


@dataclass
class Artifact:
    dir: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> Artifact:
        try:
            data = read_bounded(path / "manifest.json", MAX_MANIFEST_BYTES)
        except OSError as e:
            raise RecipeError(Problem(path, None, f"not an artifact directory (manifest.json: "
                                      f"{e.strerror})", NOT_AN_ARTIFACT)) from None
        return cls.parse(path, data)

    @classmethod
    def parse(cls, path: Path, data: bytes) -> Artifact:
        """The artifact at ``path`` whose manifest.json holds ``data`` (install parses the very
        bytes it checked against SHA256SUMS); every field the tools read is checked here."""
        where = path / "manifest.json"
        try:
            manifest = json.loads(data)
        except (ValueError, RecursionError) as e:
            why = str(e) if isinstance(e, ValueError) else "nested too deeply"
            raise RecipeError(Problem(where, None, f"not valid JSON ({why})",
                                      NOT_AN_ARTIFACT)) from None
        errors = sorted(jsonschema.Draft202012Validator(MANIFEST_SCHEMA).iter_errors(manifest),
                        key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            first = errors[0]
            key = ".".join(map(str, first.absolute_path)) or None
            what = (f"{_short(repr(first.instance))} is not a path inside the artifact directory"
                    if first.validator == "pattern" else _short(first.message, 160))
            raise RecipeError(Problem(where, key, f"{what}; not a manifest nspawnbuild wrote",
                                      NOT_AN_ARTIFACT))
        check_machine_name(manifest["name"], where, "name")
        return cls(path, manifest)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    def path(self, which: str) -> Path:
        """The file of artifact ``which`` (tarball, nspawn, dropin), refused when a symlink takes
        it out of the artifact directory (inspect would print another file's lines)."""
        path = self.dir / self.manifest["artifacts"][which]["file"]
        return confined(path, self.dir.resolve(), "an artifact's files are inside its "
                        "directory; " + NOT_AN_ARTIFACT)

    @property
    def tarball(self) -> Path:
        return self.path("tarball")

    def settings(self, which: str) -> list[str]:
        path = self.path(which)
        try:
            text = read_bounded(path, MAX_SETTINGS_BYTES).decode(errors="replace")
        except OSError as e:
            raise RecipeError(Problem(path, None, f"cannot read it ({e.strerror})",
                                      NOT_AN_ARTIFACT)) from None
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    def files(self, with_digests: bool = False) -> dict[str, tuple[int, str]]:
        """``{path: (size, kind or digest)}`` from the tarball (headers; digests on request),
        read with the bounded reader: the tarball may be hostile."""
        out: dict[str, tuple[int, str]] = {}
        with tarread.open_tar(self.tarball) as tar:
            for m in tarread.members(tar):
                name = "/" + m.name.removeprefix("./").strip("/")
                if m.isfile() and with_digests:
                    fh = tar.extractfile(m)
                    h = hashlib.sha256()
                    while fh and (chunk := fh.read(1 << 20)):
                        h.update(chunk)
                    out[name] = (m.size, f"{m.mode:o}:{m.uid}:{m.gid}:{h.hexdigest()}")
                else:
                    out[name] = (m.size, f"{m.mode:o}:{m.uid}:{m.gid}:{m.type!r}:{m.linkname}")
        return out


class UnreadableArtifact(NspawnbuildError):
    """What a command was given is no tarball or artifact directory: bad input, exit 2."""

    exit_code = EXIT_BAD_INPUT


def audit_target(ref: str) -> tuple[Path, str | None]:
    """The tarball ``audit`` reads for ``ref`` (a tarball, or an artifact directory whose
    manifest names it) and the machine name to check it against (None for a bare tarball)."""
    path, machine = Path(ref), None
    if path.is_dir():
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise UnreadableArtifact(f"{path}: no readable manifest.json ({e})") from None
        machine = manifest["name"]
        path = path / manifest["artifacts"]["tarball"]["file"]
    if not path.is_file():
        raise UnreadableArtifact(f"{ref}: no such tarball or artifact directory")
    return path, machine


def _bar(value: float, top: float) -> str:
    return "█" * max(1, round(BAR * value / top)) if top else ""


def inspect_report(art: Artifact, top: int = 15) -> str:
    m = art.manifest
    lines = [f"{art.name}: {m['base']['distro']} {m['base']['release']} {m['base']['arch']}, "
             f"{len(m['packages'])} packages, tree {human_size(m['tree']['bytes'])}, tarball "
             f"{human_size(m['artifacts']['tarball']['size'])} ({m['artifacts']['tarball']['compression']})",
             f"  recipe digest {m['recipe_digest'][:16]}, nspawnbuild {m['tool']['version']}, "
             f"epoch {m['source_date_epoch']}", "", f"largest packages (top {top}):"]
    pkgs = sorted(m["packages"], key=lambda p: -p["installed_size_kib"])[:top]
    biggest = pkgs[0]["installed_size_kib"] if pkgs else 0
    for p in pkgs:
        lines.append(f"  {p['name'][:28]:28} {human_size(p['installed_size_kib'] * 1024):>10}  "
                     f"{_bar(p['installed_size_kib'], biggest)}")
    sizes: dict[str, int] = defaultdict(int)
    for path, (size, _) in art.files().items():
        sizes["/" + path.strip("/").split("/")[0]] += size
    lines += ["", "size by top-level directory:"]
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])
    for d, size in ranked:
        if size:
            lines.append(f"  {d:28} {human_size(size):>10}  {_bar(size, ranked[0][1])}")
    lines += ["", "settings (.nspawn):"] + [f"  {s}" for s in art.settings("nspawn")]
    unit = art.settings("dropin")
    lines += ["", "unit drop-in:"] + ([f"  {s}" for s in unit] or ["  (none)"])
    return "\n".join(lines)


def diff_report(a: Artifact, b: Artifact) -> tuple[str, bool]:
    """A readable comparison of two builds, and whether they differ at all."""
    lines: list[str] = [f"--- {a.dir}", f"+++ {b.dir}"]
    pa = {p["name"]: p["version"] for p in a.manifest["packages"]}
    pb = {p["name"]: p["version"] for p in b.manifest["packages"]}
    pkg_lines = [f"  + {n} {pb[n]}" for n in sorted(pb.keys() - pa.keys())]
    pkg_lines += [f"  - {n} {pa[n]}" for n in sorted(pa.keys() - pb.keys())]
    pkg_lines += [f"  ~ {n} {pa[n]} -> {pb[n]}" for n in sorted(pa.keys() & pb.keys())
                  if pa[n] != pb[n]]
    lines += ["packages:"] + (pkg_lines or ["  (same)"])
    fa, fb = a.files(with_digests=True), b.files(with_digests=True)
    by_dir: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for path in fa.keys() | fb.keys():
        parents = path.strip("/").split("/")[:-1]  # summarise by directory, two levels deep
        d = "/" + "/".join(parents[:2])
        if path not in fa:
            by_dir[d][0] += 1
        elif path not in fb:
            by_dir[d][1] += 1
        elif fa[path] != fb[path]:
            by_dir[d][2] += 1
    lines.append("files (added / removed / changed, by directory):")
    file_lines = [f"  {d:40} +{x} -{y} ~{z}" for d, (x, y, z) in sorted(by_dir.items())]
    lines += file_lines or ["  (same)"]
    sa, sb = a.manifest["tree"]["bytes"], b.manifest["tree"]["bytes"]
    ta, tb = a.manifest["artifacts"]["tarball"]["size"], b.manifest["artifacts"]["tarball"]["size"]
    lines.append(f"size: tree {human_size(sa)} -> {human_size(sb)} ({human_size(sb - sa)}), "
                 f"tarball {human_size(ta)} -> {human_size(tb)} ({human_size(tb - ta)})")
    setting_lines = []
    for which in ("nspawn", "dropin"):
        xa, xb = a.settings(which), b.settings(which)
        setting_lines += [f"  - {s}" for s in xa if s not in xb]
        setting_lines += [f"  + {s}" for s in xb if s not in xa]
    lines += ["settings:"] + (setting_lines or ["  (same)"])
    differs = bool(pkg_lines or file_lines or setting_lines or sa != sb)
    return "\n".join(lines), differs
