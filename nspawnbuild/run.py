"""``shell`` and ``boot``: try a built image locally, with its generated settings.

The tarball is imported into a scratch image root (with systemd-import, as on a host), the
.nspawn is put in /run/systemd/nspawn/ for the duration (the only place besides /etc where its
privileged settings are honoured), and everything is removed afterwards. Bind sources, bridges
and GPUs the settings name must exist on this machine, as they must on a target host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import BuildError
from .inspect import Artifact
from .install import import_tarball, verify
from .tree import remove_tree

TRUSTED = Path("/run/systemd/nspawn")


def run_image(art: Artifact, scratch: Path, *, boot: bool, command: list[str]) -> int:
    verify(art.dir)
    name = art.name
    trusted = TRUSTED / f"{name}.nspawn"
    if trusted.exists():
        raise BuildError(f"{trusted} exists: a machine named {name} is configured on this host; "
                         "stop and remove it, or try the image on another machine")
    scratch.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(prefix=f"run-{name}-", dir=scratch))
    try:
        tree = import_tarball(art.tarball, top, name)
        TRUSTED.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(art.dir / f"{name}.nspawn", trusted)
        argv = ["systemd-nspawn", "--quiet", "-D", str(tree), "-M", name, "--register=no",
                "--keep-unit"]
        if boot:
            argv.append("--boot")
        elif command:
            argv += ["--pipe", "--", *command] if not os.isatty(0) else ["--", *command]
        return subprocess.run(argv).returncode
    finally:
        trusted.unlink(missing_ok=True)
        remove_tree(top)
