"""Container Device Interface specs: what a host's GPU vendor says a container needs.

``nvidia-ctk cdi generate`` writes, for each device of a host, the device nodes, the driver's
files to mount and the hooks to run (``/etc/cdi/*.yaml|json``, ``/var/run/cdi/*``); podman,
containerd and Kubernetes consume it, and so does ``install`` for a ``driver = "host"`` image:
the spec is the host's own, current account of its driver, so reading it beats guessing.

Read here: ``cdiVersion`` 0.5.0 to 1.1.0 (what the toolkit writes today is 0.5–0.8; the later
ones only add fields nspawn has no use for), ``kind``, ``devices[].name`` and both levels of
``containerEdits``: ``deviceNodes`` (``path``, ``hostPath``), ``mounts`` (``hostPath``,
``containerPath``, ``options``), ``env`` and ``hooks``. nspawn runs no OCI hooks; the two the
toolkit emits that only shape files are turned into what does the same at the container's
boot (``create-symlinks`` into tmpfiles ``L`` lines, ``update-ldcache`` into an ld.so.conf
entry and ``ldconfig``); any other hook is reported, not run.

A spec is host input, but a damaged or foreign one must still be a clear error, not a
traceback: every field read is checked for its type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import yaml

from .errors import BuildError

#: the directories a CDI consumer reads specs from, in order (the later one wins on a name)
SPEC_DIRS = ("etc/cdi", "var/run/cdi")
MIN_VERSION = (0, 5, 0)
MAX_VERSION = (1, 1, 0)
MAX_SPEC_BYTES = 4 << 20
#: the programs whose hooks are understood (nvidia-ctk's "hook" verb, or the hook binary)
HOOK_PROGRAMS = ("nvidia-ctk", "nvidia-cdi-hook")
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
T = TypeVar("T")


@dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    read_only: bool


@dataclass
class Edits:
    """The container edits of the chosen devices and of the spec's top level, merged."""

    device_nodes: list[tuple[str, str]] = field(default_factory=list)  # (host, container)
    mounts: list[Mount] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    symlinks: list[tuple[str, str]] = field(default_factory=list)  # (link path, target)
    ldconfig_dirs: list[str] = field(default_factory=list)
    skipped_hooks: list[str] = field(default_factory=list)

    def add(self, other: Edits) -> None:
        """``other``'s edits after these, each once (a node both levels list is bound once)."""
        _extend(self.device_nodes, other.device_nodes)
        _extend(self.mounts, other.mounts)
        _extend(self.env, other.env)
        _extend(self.symlinks, other.symlinks)
        _extend(self.ldconfig_dirs, other.ldconfig_dirs)
        _extend(self.skipped_hooks, other.skipped_hooks)


def _extend(mine: list[T], theirs: list[T]) -> None:
    mine.extend(x for x in theirs if x not in mine)


@dataclass(frozen=True)
class Spec:
    path: Path
    version: str
    kind: str
    devices: dict[str, Mapping[str, Any]]  # name -> containerEdits
    common: Mapping[str, Any]

    def edits(self, names: Iterable[str]) -> Edits:
        """The edits for the devices ``names`` (each must exist), plus the spec's common ones."""
        out = Edits()
        for name in names:
            if name not in self.devices:
                known = ", ".join(sorted(self.devices)) or "none"
                raise BuildError(f"{self.path}: no device '{self.kind}={name}' (the spec has: "
                                 f"{known}); regenerate it with `nvidia-ctk cdi generate` if the "
                                 "host's GPUs changed")
            out.add(_edits(self.devices[name], f"{self.path}: device '{name}'"))
        out.add(_edits(self.common, f"{self.path}: containerEdits"))
        return out


def _bad(where: str, what: str) -> BuildError:
    return BuildError(f"{where}: {what}; is this a CDI spec? Regenerate it with "
                      "`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`")


def _list(value: Any, where: str, key: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(where, f"'{key}' is not a list")
    return value


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value or "\n" in value or "\x00" in value:
        raise _bad(where, f"'{key}' is not a one-line string")
    return value


def _absolute(value: Any, where: str, key: str) -> str:
    text = _text(value, where, key)
    path = PurePosixPath(text)
    if not path.is_absolute() or ".." in path.parts:
        raise _bad(where, f"'{key}' {text!r} is not an absolute path without '..'")
    return str(path)


def _hook(hook: Any, where: str, out: Edits) -> None:
    if not isinstance(hook, Mapping):
        raise _bad(where, "a hook is not a table")
    program = _absolute(hook.get("path"), where, "hooks[].path")
    args = [_text(a, where, "hooks[].args[]") for a in _list(hook.get("args"), where, "args")]
    words = args[1:] if args else []
    if PurePosixPath(program).name == "nvidia-ctk" and words[:1] == ["hook"]:
        words = words[1:]
    described = " ".join(args) or program
    if PurePosixPath(program).name not in HOOK_PROGRAMS or not words:
        out.skipped_hooks.append(described)
        return
    verb, rest = words[0], words[1:]
    flags: list[tuple[str, str]] = []  # (--flag, value) in argument order, both spellings
    for i, arg in enumerate(rest):
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            flags.append((flag, value))
        elif arg.startswith("--") and i + 1 < len(rest):
            flags.append((arg, rest[i + 1]))
    # what each understood verb's flags mean; a flag outside these (Tegra's --csv-filename,
    # a future one) means the hook does more than we would: it is reported, not half-done
    known = {"create-symlinks": {"--link"},
             "update-ldcache": {"--folder", "--ldconfig-path"}}.get(verb)
    if known is None or any(f not in known for f, _ in flags):
        out.skipped_hooks.append(described)
        return
    if verb == "create-symlinks":
        for _, value in flags:
            if "::" not in value:
                raise _bad(where, f"create-symlinks --link {value!r} is not TARGET::LINK")
            target, link = value.split("::", 1)
            out.symlinks.append((_absolute(link, where, "--link"), _text(target, where,
                                                                          "--link")))
        return
    out.ldconfig_dirs += [_absolute(v, where, "--folder") for f, v in flags if f == "--folder"]


def _edits(edits: Any, where: str) -> Edits:
    out = Edits()
    if edits is None:
        return out
    if not isinstance(edits, Mapping):
        raise _bad(where, "containerEdits is not a table")
    for node in _list(edits.get("deviceNodes"), where, "deviceNodes"):
        if not isinstance(node, Mapping):
            raise _bad(where, "a device node is not a table")
        inside = _absolute(node.get("path"), where, "deviceNodes[].path")
        host = _absolute(node.get("hostPath", inside), where, "deviceNodes[].hostPath")
        out.device_nodes.append((host, inside))
    for mount in _list(edits.get("mounts"), where, "mounts"):
        if not isinstance(mount, Mapping):
            raise _bad(where, "a mount is not a table")
        options = [_text(o, where, "mounts[].options[]")
                   for o in _list(mount.get("options"), where, "options")]
        out.mounts.append(Mount(_absolute(mount.get("hostPath"), where, "mounts[].hostPath"),
                                _absolute(mount.get("containerPath"), where,
                                          "mounts[].containerPath"),
                                read_only="rw" not in options))
    for env in _list(edits.get("env"), where, "env"):
        text = _text(env, where, "env[]")
        if "=" not in text:
            raise _bad(where, f"env entry {text!r} is not NAME=VALUE")
        out.env.append(text)
    for hook in _list(edits.get("hooks"), where, "hooks"):
        _hook(hook, where, out)
    return out


def _version(text: Any, where: str) -> str:
    match = _VERSION.match(text) if isinstance(text, str) else None
    if not match:
        raise _bad(where, f"cdiVersion {text!r} is not a version like 0.5.0")
    number = tuple(int(g) for g in match.groups())
    if not MIN_VERSION <= number <= MAX_VERSION:
        raise BuildError(f"{where}: CDI spec version {text} is not one nspawnbuild reads "
                         "(0.5.0 to 1.1.0); regenerate it with a newer or older nvidia-ctk")
    return str(text)


def load(path: Path, only_kind: str | None = None) -> Spec | None:
    """A CDI spec file (YAML or JSON), checked as far as it is read; with ``only_kind``, None
    for a spec of another kind (read no further than its ``kind``)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise BuildError(f"{path}: cannot read it: {e.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise _bad(str(path), f"larger than {MAX_SPEC_BYTES} bytes")
    try:
        doc = json.loads(data) if path.suffix == ".json" else yaml.safe_load(data)
    except (ValueError, yaml.YAMLError, RecursionError) as e:
        raise _bad(str(path), f"not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                   f"({(str(e).splitlines() or ['nested too deeply'])[0]})") from None
    where = str(path)
    if not isinstance(doc, Mapping):
        raise _bad(where, "the document is not a table")
    if only_kind is not None and doc.get("kind") != only_kind:
        return None  # another vendor's spec: none of its business, whatever its version
    version = _version(doc.get("cdiVersion"), where)
    kind = _text(doc.get("kind"), where, "kind")
    devices: dict[str, Mapping[str, Any]] = {}
    for device in _list(doc.get("devices"), where, "devices"):
        if not isinstance(device, Mapping):
            raise _bad(where, "a device is not a table")
        devices[_text(device.get("name"), where, "devices[].name")] = \
            device.get("containerEdits") or {}
    common = doc.get("containerEdits") or {}
    spec = Spec(path, version, kind, devices, common)
    for name in devices:  # every device's edits are checked, not only the chosen ones
        _edits(devices[name], f"{where}: device '{name}'")
    _edits(common, f"{where}: containerEdits")
    return spec


def find(root: Path, kind: str) -> list[Spec]:
    """The specs of ``kind`` among the host's spec files under ``root``, in the order CDI reads
    them: name order, /var/run/cdi after /etc/cdi (a later spec wins on a device name: the
    toolkit's refresh service writes /var/run/cdi/nvidia.yaml beside a hand-made
    /etc/cdi/nvidia.yaml). Other kinds' files are passed over unread beyond their kind."""
    found: list[Spec] = []
    for d in SPEC_DIRS:
        directory = root / d
        if not directory.is_dir() or directory.is_symlink():
            continue
        for path in sorted(directory.iterdir()):
            if path.suffix not in (".yaml", ".json") or not path.is_file():
                continue
            spec = load(path, kind)
            if spec is not None:
                found.append(spec)
    return found


def select(specs: list[Spec], names: Iterable[str]) -> tuple[Edits, list[Spec]]:
    """The edits of the devices ``names``, each from the last spec that has it, with the
    common edits of the specs they come from (only those: a stale spec's files stay out)."""
    chosen: dict[Path, list[str]] = {}
    for name in names:
        owner = next((s for s in reversed(specs) if name in s.devices), None)
        if owner is None:
            known = ", ".join(sorted({n for s in specs for n in s.devices})) or "none"
            where = " and ".join(str(s.path) for s in specs)
            raise BuildError(f"{where}: no device '{specs[0].kind}={name}' (the spec has: "
                             f"{known}); regenerate it with `nvidia-ctk cdi generate` if the "
                             "host's GPUs changed")
        chosen.setdefault(owner.path, []).append(name)
    out = Edits()
    used = [s for s in specs if s.path in chosen]
    for spec in used:
        out.add(spec.edits(chosen[spec.path]))
    return out, used
