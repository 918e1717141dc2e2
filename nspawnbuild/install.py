"""Install built artifacts on a target host (or into a directory tree, with --root).

What a person would do by hand from the README, as one checked step: verify SHA256SUMS, import
the tarball the way ``machinectl import-tar`` does (its own program, systemd-import, which
before systemd 258 cannot read zstd, so the stream is decompressed here), put the .nspawn where
its privileged settings are honoured and the drop-in where systemd reads it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .audit import open_tarball
from .errors import BuildError, Problem, RecipeError
from .pack import sha256_file
from .render import DROPIN_NAME
from .rootfs import remove_tree

IMPORT = "/lib/systemd/systemd-import"


def read_sums(sums_file: Path) -> dict[str, str]:
    """``{file: sha256}`` from a SHA256SUMS file (``sha256sum``'s format), names checked."""
    sums: dict[str, str] = {}
    for line in sums_file.read_text().splitlines():
        digest, _, name = line.partition("  ")
        name = name.lstrip("*")
        if not name or "/.." in f"/{name}" or name.startswith("/"):
            raise BuildError(f"{sums_file}: bad line {line!r}")
        sums[name] = digest
    return sums


def verify(artifact_dir: Path) -> dict[str, str]:
    """Check every line of SHA256SUMS; return ``{file: sha256}``."""
    sums_file = artifact_dir / "SHA256SUMS"
    if not sums_file.is_file():
        raise RecipeError(Problem(artifact_dir, None, "no SHA256SUMS here",
                                  "give the directory a build wrote, e.g. out/NAME"))
    sums = read_sums(sums_file)
    for name, digest in sums.items():
        try:
            actual = sha256_file(artifact_dir / name)
        except OSError as e:
            raise BuildError(f"{artifact_dir / name}: {e.strerror}; the artifacts are incomplete") from None
        if actual != digest:
            raise BuildError(f"{artifact_dir / name} does not match SHA256SUMS (expected {digest}, "
                             f"got {actual}); the artifacts are damaged or were changed")
    return sums


def import_tarball(tarball: Path, image_root: Path, name: str) -> Path:
    """Import like ``machinectl import-tar``, with its own program; zstd is decompressed here."""
    if not Path(IMPORT).exists():
        raise BuildError(f"{IMPORT} is missing; install it with: apt-get install systemd-container")
    image_root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([IMPORT, "tar", f"--image-root={image_root}", "-", name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with open_tarball(tarball) as stream:
            shutil.copyfileobj(stream, proc.stdin, 1 << 20)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    out = proc.stdout.read().decode(errors="replace")
    if proc.wait() != 0:
        raise BuildError(f"systemd-import failed:\n{out.strip()}")
    return image_root / name


def systemd_runs(root: Path) -> bool:
    return root == Path("/") and Path("/run/systemd/system").is_dir()


def install(artifact_dir: Path, *, name: str | None, root: Path, force: bool,
            enable: bool, start: bool) -> list[str]:
    """Install; return what was done, one line each."""
    sums = verify(artifact_dir)
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    built = manifest["name"]
    name = name or built
    tarball = artifact_dir / manifest["artifacts"]["tarball"]["file"]
    image = root / "var/lib/machines" / name
    nspawn = root / "etc/systemd/nspawn" / f"{name}.nspawn"
    dropin = root / "etc/systemd/system" / f"systemd-nspawn@{name}.service.d" / DROPIN_NAME
    if (image.exists() or nspawn.exists()) and not force:
        raise BuildError(f"machine '{name}' already exists ({image if image.exists() else nspawn}); "
                         "use --force to replace it, or --name to install under another name")
    done = [f"verified {len(sums)} files against SHA256SUMS"]
    if image.exists():
        remove_tree(image)
        done.append(f"removed the old {image}")
    image.parent.mkdir(parents=True, exist_ok=True)
    import_tarball(tarball, image.parent, name)
    done.append(f"imported {tarball.name} as {image}")
    for src, dest in ((artifact_dir / f"{built}.nspawn", nspawn),
                      (artifact_dir / f"systemd-nspawn@{built}.service.d" / DROPIN_NAME, dropin)):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        done.append(f"installed {dest}")
    if systemd_runs(root):
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        done.append("systemctl daemon-reload")
        for flag, verb in ((enable, "enable"), (start, "start")):
            if flag:
                subprocess.run(["machinectl", verb, name], check=True)
                done.append(f"machinectl {verb} {name}")
    else:
        if enable:
            wants = root / "etc/systemd/system/machines.target.wants"
            wants.mkdir(parents=True, exist_ok=True)
            link = wants / f"systemd-nspawn@{name}.service"
            if not link.is_symlink():
                link.symlink_to("/lib/systemd/system/systemd-nspawn@.service")
            done.append(f"enabled: {link}")
        if start:
            done.append("not started: systemd is not running for this root")
    return done
