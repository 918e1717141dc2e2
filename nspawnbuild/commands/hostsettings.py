"""``nspawnbuild gpu-binds``: what install would add for this host, for hosts that install by
hand (the README's machinectl commands): the .nspawn and drop-in lines, the tree's files."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import AddCommand


def add_gpu_binds(command: AddCommand) -> None:
    p = command("gpu-binds", help="print the settings install makes on this host for an image "
                "whose features need them (the host's GPU driver): for installs by hand",
                description="Print what `nspawnbuild install` would add, on this host, to the "
                "installed .nspawn and unit drop-in of an image whose features need the host "
                "(gpu-nvidia with driver = \"host\", gpu-amd), and the files it would write in "
                "the installed tree. Nothing is written.",
                epilog="example:\n  nspawnbuild gpu-binds out/ollama-gpu   # on the GPU host")
    p.add_argument("artifact_dir", metavar="DIR", help="a build's out/NAME directory")
    p.add_argument("--name", help="the machine name it is installed as (default: the image's)")
    p.add_argument("--root", default="/", help="the host's root, where its driver, CDI spec and "
                   "device nodes are looked up (default: /)")
    p.set_defaults(func=cmd_gpu_binds)


def cmd_gpu_binds(args: argparse.Namespace) -> int:
    from ..artifact import Artifact, check_machine_name
    from ..hostneeds import HostContext, render_extra
    from ..hostsetup import settings_for
    from ..paths import dropin_name, nspawn_name
    from ..render import NSPAWN_ORDER, UNIT_ORDER

    if args.name is not None:
        check_machine_name(args.name, Path("--name"), None)
    art = Artifact.open(Path(args.artifact_dir))
    name = args.name or art.name
    if not art.manifest.get("host_needs"):
        print(f"{name}: the image asks nothing of its host: install its .nspawn and drop-in "
              "as they are")
        return 0
    nspawn = art.path("nspawn").read_bytes().decode("utf-8", errors="replace")
    made = settings_for(art.manifest, HostContext(Path(args.root), name, nspawn))
    for where, extra in ((f"/etc/systemd/nspawn/{nspawn_name(name)}",
                          render_extra(made.nspawn, NSPAWN_ORDER)),
                         (f"/etc/systemd/system/{dropin_name(name)}",
                          render_extra(made.unit, UNIT_ORDER))):
        if extra:
            print(f"# append to {where}:{extra}")
    for dest, text in sorted(made.files.items()):
        print(f"# write in the machine's tree, /var/lib/machines/{name}{dest}:\n{text}")
    for group, gid in sorted(made.group_ids.items()):
        print(f"# in the machine's /etc/group: give group {group} the id {gid}")
    for note in made.notes:
        print(f"# {note}")
    return 0
