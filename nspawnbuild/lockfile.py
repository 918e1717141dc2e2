"""Package lock files: ``NAME.lock.json`` beside a recipe, the exact package set of its image.

(Not :mod:`nspawnbuild.lock`, which holds the flocks that keep two builds apart.)

``nspawnbuild lock RECIPE`` writes one from a build made for it alone (its own cache, so
every package is resolved against the archive as it is now, bootstrap, features and
post-steps alike): every installed package's name, version, architecture and, where the
package manager gives one, its digest (a .deb's sha256 from the archive's Packages file, an
rpm's header sha256, apk's checksum), and the archive's state (Debian: each Release file's
sha256 and Date; the recipe's snapshot).

A build of a recipe with a lock (the file beside it, or ``--lock FILE``) pins the distro to
those versions (Debian and Ubuntu: an apt preferences file in the bootstrap and in every apt
run of features and post-steps; Fedora: every other version of a locked name excluded from
dnf; Alpine: each dependency apk would take in another version requested as NAME=VERSION;
a post-step's own dnf or apk is not pinned) and, for every distro, compares what it
installed with the lock: a package whose version differs, one the lock does not list, one
the build did not install, fails the build (exit 1) naming each, before anything is
published. The lock's sha256 is in the plan (the bootstrap cache key, the rootfs stage) and
in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from .errors import BuildError, Problem, RecipeError

LOCK_FORMAT = 1
MAX_LOCK_BYTES = 16 << 20
SUFFIX = ".lock.json"

_STR = {"type": "string", "maxLength": 4096}
#: what a build reads of a lock file (``lock`` writes more: the archive's state); a hand-edited
#: or foreign one is a clear error naming the file, not a KeyError
LOCK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["format", "name", "base", "packages"],
    "properties": {
        "format": {"const": LOCK_FORMAT},
        "name": _STR,
        "base": {"type": "object", "required": ["distro", "release", "arch"],
                 "properties": {"distro": _STR, "release": _STR, "arch": _STR}},
        "packages": {"type": "array", "maxItems": 100_000, "items": {
            "type": "object", "required": ["name", "version", "arch"],
            # a name is a package manager's argument: never an option ("--setopt=..."),
            # only the characters deb, rpm and apk names use
            "properties": {"name": {**_STR, "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_+.~@-]*$"},
                           "version": {**_STR, "pattern": r"^[A-Za-z0-9_][^\s,]*$"},
                           "arch": _STR,
                           "digest": _STR}}},
    },
}


def path_for(recipe_path: Path, name: str) -> Path:
    """Where the lock of recipe ``name`` (read from ``recipe_path``) lives: beside it."""
    return recipe_path.parent / f"{name}{SUFFIX}"


@dataclass(frozen=True)
class Lock:
    """A lock file as read: its path, its bytes' sha256, and its document."""

    path: Path
    sha256: str
    document: dict[str, Any]

    @property
    def packages(self) -> list[dict[str, Any]]:
        return list(self.document["packages"])

    def pins(self) -> dict[str, str]:
        """``{name: version}``: what a package manager is told to install."""
        return {p["name"]: p["version"] for p in self.packages}

    def record(self) -> dict[str, str]:
        """What the manifest records of the lock."""
        return {"file": self.path.name, "sha256": self.sha256}


def read(path: Path) -> Lock:
    """The lock at ``path``; RecipeError (exit 2) naming the file when it is not one."""
    hint = "write it with: nspawnbuild lock RECIPE (or --update an old one)"
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_LOCK_BYTES + 1)
    except OSError as e:
        raise RecipeError(Problem(path, None, f"cannot read the lock file: {e.strerror}",
                                  hint)) from None
    if len(data) > MAX_LOCK_BYTES:
        raise RecipeError(Problem(path, None, f"larger than {MAX_LOCK_BYTES} bytes", hint))
    try:
        doc = json.loads(data)
        jsonschema.validate(doc, LOCK_SCHEMA)
    except ValueError as e:
        raise RecipeError(Problem(path, None, f"not a lock file: {e}", hint)) from None
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "(top)"
        raise RecipeError(Problem(path, where, f"not a lock file: {e.message}", hint)) from None
    return Lock(path, hashlib.sha256(data).hexdigest(), doc)


def check_base(lock: Lock, base: Mapping[str, Any]) -> None:
    """The lock was made for this distro, release and architecture (exit 2 otherwise)."""
    have = {k: str(lock.document["base"][k]) for k in ("distro", "release", "arch")}
    want = {k: str(base[k]) for k in ("distro", "release", "arch")}
    if have != want:
        raise RecipeError(Problem(
            lock.path, "base", f"the lock is for {' '.join(have.values())}, the recipe builds "
            f"{' '.join(want.values())}", "refresh it with: nspawnbuild lock --update RECIPE"))


# -- writing ----------------------------------------------------------------------------------

def _entry(package: Mapping[str, Any]) -> dict[str, Any]:
    entry = {k: str(package.get(k, "")) for k in ("name", "version", "arch")}
    if package.get("digest"):
        entry["digest"] = str(package["digest"])
    return entry


def document(name: str, base: Mapping[str, Any], packages: Iterable[Mapping[str, Any]],
             archive: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A lock's document: sorted, no time of its own (the same resolution, the same bytes)."""
    doc: dict[str, Any] = {
        "format": LOCK_FORMAT, "name": name,
        "base": {k: str(base[k]) for k in ("distro", "release", "arch")},
    }
    if base.get("snapshot"):
        doc["snapshot"] = str(base["snapshot"])
    if archive:
        doc["archive"] = sorted((dict(a) for a in archive),
                                key=lambda a: json.dumps(a, sort_keys=True))
    doc["packages"] = sorted((_entry(p) for p in packages),
                             key=lambda p: (p["name"], p["arch"], p["version"]))
    return doc


def render(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


# -- comparing --------------------------------------------------------------------------------

def _by_name(packages: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    return {(str(p["name"]), str(p.get("arch", ""))): str(p["version"]) for p in packages}


def _differences(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]
                 ) -> Iterator[tuple[str, str, str | None, str | None]]:
    """``(name, arch, old version, new version)`` for each package that differs, sorted; a
    version is None on the side that lacks the package."""
    a, b = _by_name(old), _by_name(new)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            yield key[0], key[1], a.get(key), b.get(key)


def changes(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[str]:
    """What differs between two package sets, one line each, sorted by package: ``+ NAME
    VERSION (ARCH)`` added, ``- ...`` removed, ``~ NAME OLD -> NEW (ARCH)`` another version."""
    return [f"+ {name} {v_new} ({arch})" if v_old is None
            else f"- {name} {v_old} ({arch})" if v_new is None
            else f"~ {name} {v_old} -> {v_new} ({arch})"
            for name, arch, v_old, v_new in _differences(old, new)]


def compare(locked: Iterable[Mapping[str, Any]], installed: Iterable[Mapping[str, Any]],
            lock_name: str) -> None:
    """BuildError (exit 1) naming every package where the build's ``installed`` set differs
    from the lock's: the archive no longer has a locked version (the package manager took
    another), or the recipe now installs other packages."""
    lines = [f"{name} {want} ({arch}): locked, not installed" if got is None
             else f"{name} {got} ({arch}): installed, not in the lock" if want is None
             else f"{name} ({arch}): locked {want}, the build installed {got}: "
                  f"the archive no longer has {want}"
             for name, arch, want, got in _differences(locked, installed)]
    if lines:
        raise BuildError(
            f"the image does not match its lock {lock_name} ({len(lines)} packages); nothing "
            "was published:\n" + "\n".join(f"  {line}" for line in lines)
            + "\n  when the archive moved on, refresh the lock with: nspawnbuild lock --update "
            "RECIPE (it prints what changed); to build the locked versions, use an archive "
            "that still has them ([base] snapshot)")
