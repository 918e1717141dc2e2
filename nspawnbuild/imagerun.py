"""``shell`` and ``boot``: try a built image locally, with its generated settings.

The tarball is imported into a scratch image root (with systemd-import, as on a host), the
.nspawn is put in /run/systemd/nspawn/ for the duration (the only place besides /etc where its
privileged settings are honoured), and everything is removed afterwards. Bind sources, bridges
and GPUs the settings name must exist on this machine, as they must on a target host.

(Not to be confused with :mod:`nspawnbuild.sandbox`, which runs build steps inside an image
being built; this module runs a finished one, as a host would.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .artifact import Artifact
from .errors import BuildError
from .install import import_tarball, verify
from .paths import Layout, nspawn_name
from .recipe.load import load_recipe
from .steplog import run_attached
from .tree import remove_tree

TRUSTED = Path("/run/systemd/nspawn")


def locate_image(ref: str, layout: Layout) -> Path:
    """The artifact directory ``ref`` names: itself when it holds a manifest.json, else the
    out/NAME of the recipe ``ref`` (a recipe name or path)."""
    target = Path(ref)
    if (target / "manifest.json").is_file():
        return target
    return layout.out_dir(load_recipe(ref).name)


def run_image(art: Artifact, scratch: Path, *, boot: bool, command: list[str]) -> int:
    """Import ``art`` into ``scratch``, run a shell, a command or the boot in it with its
    settings; return the exit code of what ran."""
    verify(art.dir)
    name = art.name
    trusted = TRUSTED / nspawn_name(name)
    if trusted.exists():
        raise BuildError(f"{trusted} exists: a machine named {name} is configured on this host; "
                         "stop and remove it, or try the image on another machine")
    scratch.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(prefix=f"run-{name}-", dir=scratch))
    try:
        tree = import_tarball(art.tarball, top, name)
        TRUSTED.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(art.dir / nspawn_name(name), trusted)
        argv = ["systemd-nspawn", "--quiet", "-D", str(tree), "-M", name, "--register=no",
                "--keep-unit"]
        if boot:
            argv.append("--boot")
        elif command:
            argv += ["--pipe", "--", *command] if not os.isatty(0) else ["--", *command]
        return run_attached(argv)
    finally:
        trusted.unlink(missing_ok=True)
        remove_tree(top)
