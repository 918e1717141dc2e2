"""``nspawnbuild publish out/NAME DEST``: a tree any static web server or object store serves
as it is, so that many hosts pull the same signed image.

    DEST/NAME/BUILD/      the set as the build wrote it (tarball, .nspawn, drop-in,
                          manifest.json, SHA256SUMS, SHA256SUMS.gpg), never changed once there
    DEST/NAME/latest      a relative symlink to the newest BUILD, replaced atomically

BUILD is the first 16 hex digits of SHA256SUMS's sha256: the same set published twice is one
directory, and a changed build is a new one, so a host that pulls
``URL/NAME/latest/NAME.tar.gz`` gets one whole set (its SHA256SUMS and files from one BUILD,
the signature with them). The set is verified against its SHA256SUMS before anything is
written; each BUILD directory is written beside its final name and renamed into place. There
is no server of our own: DEST is synced with what a site already runs (rsync, rclone, aws s3
sync) and served by nginx or any static server (README "Serving images to many hosts").
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from .artifact import NOT_AN_ARTIFACT, read_bounded
from .errors import BuildError, Problem, RecipeError
from .install import MAX_SUMS_BYTES, check_listed, read_sums
from .signing import SIGNATURE
from .tree import remove_tree

LATEST = "latest"
BUILD_ID_HEX = 16


def build_id(artifact_dir: Path) -> str:
    """The set's name in the tree: a prefix of its SHA256SUMS's digest."""
    data = read_bounded(artifact_dir / "SHA256SUMS", MAX_SUMS_BYTES)
    return hashlib.sha256(data).hexdigest()[:BUILD_ID_HEX]


def _set_files(artifact_dir: Path) -> tuple[str, list[str]]:
    """The machine name and the files to publish (SHA256SUMS's, itself and its signature),
    after every listed file was checked against its digest."""
    art, checks = check_listed(artifact_dir, read_sums(artifact_dir / "SHA256SUMS"))
    bad = [c for c in checks if not c.ok]
    if art is None or bad:
        raise BuildError(f"{artifact_dir} does not match its SHA256SUMS ("
                         + ", ".join(c.name for c in bad) + "); nothing was published: "
                         "rebuild it")
    names = [c.name for c in checks] + ["SHA256SUMS"]
    if (artifact_dir / SIGNATURE).is_file():
        names.append(SIGNATURE)
    return art.name, names


def _point_latest(top: Path, build: str) -> None:
    """Make top/latest point at ``build`` in one rename (readers see the old or the new)."""
    tmp = top / f".{LATEST}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(build)
    os.replace(tmp, top / LATEST)


def _prune(top: Path, keep: int, current: str) -> list[str]:
    """Remove all but the ``keep`` newest builds (by the time they were published); never the
    current one."""
    builds = sorted((p for p in top.iterdir() if p.is_dir() and not p.is_symlink()
                     and len(p.name) == BUILD_ID_HEX and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for old in builds[keep:]:
        if old.name != current:
            remove_tree(old)
            removed.append(old.name)
    return removed


def publish_tree(artifact_dir: Path, dest: Path, *, keep: int | None = None) -> list[str]:
    """Publish the set in ``artifact_dir`` under ``dest``; what was done, one line each."""
    if not (artifact_dir / "SHA256SUMS").is_file():
        raise RecipeError(Problem(artifact_dir, None, "no SHA256SUMS here", NOT_AN_ARTIFACT))
    if dest.resolve().is_relative_to(artifact_dir.resolve()):
        raise RecipeError(Problem(dest, None, "is inside the artifact directory",
                                  "publish to a directory of its own"))
    name, files = _set_files(artifact_dir)
    build = build_id(artifact_dir)
    top = dest / name
    top.mkdir(parents=True, exist_ok=True)
    final = top / build
    done = []
    if final.is_dir():
        os.utime(final)  # the newest again, for --keep
        done.append(f"{final} is already there (the same set)")
    else:
        tmp = top / f".{build}.tmp-{os.getpid()}"
        remove_tree(tmp)
        try:
            for rel in files:
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(artifact_dir / rel, target)
            for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
                d.chmod(0o755)  # served: readable by the web server's user
            for f in (p for p in tmp.rglob("*") if p.is_file()):
                f.chmod(0o644)
            os.replace(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        done.append(f"published {len(files)} files as {final}")
    _point_latest(top, build)
    done.append(f"{top / LATEST} -> {build}")
    if keep is not None:
        for old in _prune(top, keep, build):
            done.append(f"removed the old build {top / old}")
    return done
