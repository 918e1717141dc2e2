"""Settings only the target host can give: what ``install`` adds for features that need it.

Most of an image's ``.nspawn`` and drop-in are known at build time. Some are not: which GPU
driver files to bind depends on the host's driver, which device nodes on its GPUs. A feature
says so at build with ``host_needs`` (JSON data, recorded in the manifest under
``host_needs``), and at install, on the target host, its ``host_settings`` turns that data
and the host into settings for the installed ``.nspawn`` and drop-in and files for the
installed tree. The artifacts themselves stay host-independent, so one build serves every host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import imagefs
from .errors import BuildError
from .settings import Setting


@dataclass(frozen=True)
class HostContext:
    #: the host's root: ``/``, or ``install --root DIR``, under which every host path is read
    root: Path
    #: the machine name it is installed as
    machine: str
    #: the image's .nspawn as built (what it asks of the host: PrivateUsers=, ...)
    nspawn: str = ""


@dataclass
class HostSettings:
    nspawn: list[Setting] = field(default_factory=list)
    unit: list[Setting] = field(default_factory=list)
    #: image path -> content, written into the installed tree (never through a symlink)
    files: dict[str, str] = field(default_factory=dict)
    #: group name -> the id it must have in the installed tree: the host's group of a device
    #: node, so that the container's members of that group can open it
    group_ids: dict[str, int] = field(default_factory=dict)
    #: lines to tell the user (a hook skipped, where the driver files came from)
    notes: list[str] = field(default_factory=list)

    def add(self, other: HostSettings) -> None:
        self.nspawn += other.nspawn
        self.unit += other.unit
        self.files.update(other.files)
        self.group_ids.update(other.group_ids)
        self.notes += other.notes


#: what install is handed to make them: the command line's :func:`hostsetup.settings_for`
HostSettingsFor = Callable[[Mapping[str, Any], HostContext], HostSettings]


def apply_to_tree(tree: Path, settings: HostSettings) -> list[str]:
    """Write the settings' files into the installed tree and give its groups the host's ids;
    what was done, one line each. The tree is the image's: nothing is followed out of it."""
    done = []
    for dest, text in sorted(settings.files.items()):
        imagefs.write_file(tree, dest, text.encode())
        done.append(f"wrote {dest} in the image")
    if settings.group_ids:
        groups = imagefs.read_text_in_root(tree, "/etc/group")
        if groups is None:
            raise BuildError("the image has no /etc/group: its groups cannot be given the "
                             "host's device group ids")
        lines = groups.splitlines()
        for name, gid in sorted(settings.group_ids.items()):
            fields = [line.split(":") for line in lines]
            mine = [i for i, f in enumerate(fields) if len(f) == 4 and f[0] == name]
            taken = [f[0] for f in fields if len(f) == 4 and f[2] == str(gid) and f[0] != name]
            if not mine:
                raise BuildError(f"the image has no group '{name}', which must have the host's "
                                 f"id {gid} to open its devices; rebuild the image")
            if taken:
                raise BuildError(f"the image's group '{taken[0]}' has id {gid}, which the "
                                 f"host's '{name}' group of the devices has: the container "
                                 "cannot tell them apart; give the image's group another id")
            f = fields[mine[0]]
            if f[2] != str(gid):
                done.append(f"group {name} in the image: id {f[2]} -> {gid} (the host's)")
                f[2] = str(gid)
                lines[mine[0]] = ":".join(f)
        imagefs.write_file(tree, "/etc/group", ("\n".join(lines) + "\n").encode())
    return done


def render_extra(settings: list[Setting], order: tuple[str, ...]) -> str:
    """Settings appended to an installed .nspawn or drop-in, as sections of their own (systemd
    merges a repeated section into the first), under a comment saying where they came from."""
    if not settings:
        return ""
    origins = ", ".join(sorted({s.origin for s in settings if s.origin}))
    lines = [f"\n# Added by nspawnbuild install, made on this host for: {origins}"]
    for section in order:
        rows = [s for s in settings if s.section == section]
        if rows:
            lines += [f"[{section}]"] + [f"{s.key}={s.value}" for s in rows]
    return "\n".join(lines) + "\n"
