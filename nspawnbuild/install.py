"""Install built artifacts on a target host (or into a directory tree, with --root).

What a person would do by hand from the README, as one checked step: verify SHA256SUMS, import
the tarball the way ``machinectl import-tar`` does (its own program, systemd-import, which
before systemd 258 cannot read zstd, so the stream is decompressed here), put the .nspawn where
its privileged settings are honoured and the drop-in where systemd reads it.

An artifact directory may come from anywhere, so everything is checked before anything is
touched: the machine name (``--name`` and the manifest's), that SHA256SUMS lists every artifact
and that each matches, the tarball's headers (with the bounded reader), and that every path
written stays below ROOT/var/lib/machines or ROOT/etc/systemd with symlinks followed.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import cgroups, emulation, hostneeds, hostnet, instance, tarread
from .artifact import (
    MAX_MANIFEST_BYTES,
    NOT_AN_ARTIFACT,
    Artifact,
    check_machine_name,
    confined,
    read_bounded,
)
from .atomic import replacing
from .digests import sha256_file
from .errors import BuildError, Problem, RecipeError
from .host import machine_arch, run, succeeds
from .hostneeds import HostContext, HostSettings, HostSettingsFor
from .imagefs import resolve_in_root
from .instance import Overrides
from .netconf import NetSpec
from .paths import dropin_name, nspawn_name
from .render import NSPAWN_ORDER, UNIT_ORDER
from .steplog import run_fed
from .tree import remove_tree

IMPORT = "/lib/systemd/systemd-import"
MAX_SUMS_BYTES = 1 << 20
#: seconds a machine's unit may take to stop (or to start, for the job itself)
STOP_TIMEOUT = 90
#: seconds a newly started machine must stay active to count as started
START_SETTLE = 5
#: ``sha256sum`` output: digest, a space, a space (text) or '*' (binary), the name
_SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")
ARTIFACTS = ("tarball", "nspawn", "dropin")
#: the option a command-line problem is reported at (in place of a file)
NAME_OPTION = Path("--name")


def read_sums(sums_file: Path) -> dict[str, str]:
    """``{file: sha256}`` from a SHA256SUMS file (``sha256sum``'s format), every line checked:
    an empty or garbled file would otherwise verify nothing and let install go on."""
    try:
        text = read_bounded(sums_file, MAX_SUMS_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise RecipeError(Problem(sums_file.parent, None, "no SHA256SUMS here",
                                  NOT_AN_ARTIFACT)) from None
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise RecipeError(Problem(sums_file, None, f"cannot read it ({why})",
                                  NOT_AN_ARTIFACT)) from None
    sums: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        match = _SUM_LINE.fullmatch(line)
        name = match.group(2) if match else ""
        parts = PurePosixPath(name).parts
        if not match or name.startswith("/") or ".." in parts or name in sums:
            raise RecipeError(Problem(sums_file, None, f"bad line {line[:80]!r}", "each line is "
                                      "'SHA256  FILE' for a file of this directory, once",
                                      line=lineno))
        sums[name] = match.group(1).lower()
    if not sums:
        raise RecipeError(Problem(sums_file, None, "empty: it lists no file to verify",
                                  NOT_AN_ARTIFACT))
    return sums


def _require_listed(sums: dict[str, str], sums_file: Path, files: list[str]) -> None:
    """Refuse an artifact SHA256SUMS does not list: it would be installed unverified."""
    missing = [f for f in files if f not in sums]
    if missing:
        raise RecipeError(Problem(sums_file, None, f"does not list {', '.join(missing)}",
                                  "a build lists every artifact; rebuild it, or give the "
                                  "directory a build wrote"))


def _mismatch(path: Path, expected: str, actual: str) -> BuildError:
    return BuildError(f"{path} does not match SHA256SUMS (expected {expected}, got {actual}); "
                      "the artifacts are damaged or were changed")


@dataclass(frozen=True)
class FileCheck:
    """One file SHA256SUMS lists, checked: its actual digest, or why it has none."""

    name: str
    path: Path
    expected: str
    #: None: the file could not be read (``error`` says why)
    actual: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.actual == self.expected

    def failure(self) -> BuildError:
        """What install raises for it (exit 1: the artifacts are damaged or incomplete)."""
        if self.actual is None:
            return BuildError(f"{self.path}: {self.error}; the artifacts are incomplete")
        return _mismatch(self.path, self.expected, self.actual)


def check_file(artifact_dir: Path, name: str, expected: str) -> FileCheck:
    """One listed file: inside the directory (symlinks followed, else RecipeError) and its
    digest compared with ``expected``."""
    path = confined(artifact_dir / name, artifact_dir.resolve(),
                    "an artifact's files are inside its directory; " + NOT_AN_ARTIFACT)
    try:
        return FileCheck(name, path, expected, sha256_file(path))
    except OSError as e:
        return FileCheck(name, path, expected, None, e.strerror)


def check_listed(artifact_dir: Path, sums: dict[str, str], *,
                 keep_going: bool = False) -> tuple[Artifact | None, list[FileCheck]]:
    """Every file ``sums`` lists, checked, manifest.json first: the artifact is parsed from the
    very manifest bytes whose digest matched, and SHA256SUMS must list the files it names
    (RecipeError otherwise: they would be used unverified). A manifest that does not match
    ends the checks (None, its check) unless ``keep_going`` (``nspawnbuild verify`` reports
    every file)."""
    sums_file = artifact_dir / "SHA256SUMS"
    _require_listed(sums, sums_file, ["manifest.json"])
    manifest_file = confined(artifact_dir / "manifest.json", artifact_dir.resolve(),
                             NOT_AN_ARTIFACT)
    art = None
    try:
        data = read_bounded(manifest_file, MAX_MANIFEST_BYTES)
        first = FileCheck("manifest.json", manifest_file, sums["manifest.json"],
                          hashlib.sha256(data).hexdigest())
    except OSError as e:
        first = FileCheck("manifest.json", manifest_file, sums["manifest.json"], None, e.strerror)
    if first.ok:
        art = Artifact.parse(artifact_dir, data)
        _require_listed(sums, sums_file, [art.manifest["artifacts"][w]["file"] for w in ARTIFACTS])
    elif not keep_going:
        return None, [first]
    return art, [first] + [check_file(artifact_dir, name, digest)
                           for name, digest in sums.items() if name != "manifest.json"]


def verify(artifact_dir: Path) -> tuple[Artifact, dict[str, str]]:
    """Check SHA256SUMS lists every artifact and that every file it lists matches; return the
    artifact (from the very manifest bytes that were checked) and ``{file: sha256}``."""
    sums = read_sums(artifact_dir / "SHA256SUMS")
    art, checks = check_listed(artifact_dir, sums)
    for check in checks:
        if not check.ok:
            raise check.failure()
    assert art is not None  # a manifest that matched was parsed
    return art, sums


@dataclass(frozen=True)
class Targets:
    """Every path install writes, each checked to stay where install may write."""

    image: Path
    nspawn: Path
    dropin: Path
    wants: Path


def targets(root: Path, name: str) -> Targets:
    """Where machine ``name`` goes under ``root``. A symlink on the way (ROOT/var/lib/machines
    to /, ROOT/etc/systemd/nspawn elsewhere) would make install replace or ``rm -rf`` something
    it does not own, so each path must resolve below ROOT/var/lib/machines or ROOT/etc/systemd.
    """
    top = root.resolve()
    machines, systemd = top / "var/lib/machines", top / "etc/systemd"
    hint = ("install writes only below ROOT/var/lib/machines and ROOT/etc/systemd; replace the "
            "symlink with a directory (or a mount), or pick another --root")
    t = Targets(image=machines / name, nspawn=systemd / "nspawn" / nspawn_name(name),
                dropin=systemd / "system" / dropin_name(name),
                wants=systemd / "system/machines.target.wants")
    if confined(t.image, machines, hint).resolve() == machines:
        raise RecipeError(Problem(t.image, None, f"leads to {machines} itself", hint))
    for path in (t.nspawn, t.dropin, t.wants):
        confined(path, systemd, hint)
    return t


def check_tarball(tarball: Path) -> int:
    """Read every header of the tarball with the bounded reader before systemd-import sees
    it, and refuse names that leave the image (GNU tar would skip them and fail the import
    half-way); return the member count."""
    count = 0
    with tarread.open_tar(tarball) as tar:
        for m in tarread.members(tar):
            count += 1
            names = [m.name] + ([m.linkname] if m.islnk() else [])
            for n in names:
                if n.startswith("/") or ".." in PurePosixPath(n).parts:
                    raise tarread.TarballError(tarball, f"member {n[:80]!r} leaves the image")
    return count


def import_tarball(tarball: Path, image_root: Path, name: str, *,
                   headers_checked: bool = False) -> Path:
    """Import like ``machinectl import-tar``, with its own program; zstd is decompressed here.
    The headers are read with the bounded reader first (:func:`check_tarball`) unless the
    caller has just done so."""
    if not Path(IMPORT).exists():
        raise BuildError(f"{IMPORT} is missing; install it with: apt-get install systemd-container")
    if not headers_checked:
        check_tarball(tarball)
    image_root.mkdir(parents=True, exist_ok=True)
    with tarread.reading(tarball), tarread.open_stream(tarball) as stream:
        code, out = run_fed([IMPORT, "tar", f"--image-root={image_root}", "-", name], stream)
    if code != 0:
        raise BuildError(f"systemd-import failed:\n{out.strip()}")
    return image_root / name


def processes_in(tree: Path) -> list[int]:
    """PIDs whose root directory is ``tree``: a container running from it (or a chroot).

    Compared by device and inode, not by path: inside a container's own mount namespace
    ``/proc/PID/root`` reads as ``/``, but it is the very directory of the image."""
    try:
        want = tree.stat()
    except OSError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            got = (entry / "root").stat()
        except OSError:  # gone, or a kernel thread
            continue
        if (got.st_dev, got.st_ino) == (want.st_dev, want.st_ino):
            pids.append(int(entry.name))
    return sorted(pids)


def check_not_running(image: Path, name: str) -> None:
    """Refuse to replace a tree a container still runs from: removing it under the container
    empties its root (its shell and stop then fail, the unit hangs)."""
    pids = processes_in(image)
    if pids:
        shown = ", ".join(map(str, pids[:5])) + (" ..." if len(pids) > 5 else "")
        raise RecipeError(Problem(image, None, f"machine '{name}' is running from it (PID "
                                  f"{shown}); installing over it would pull its root from "
                                  "under it, so nothing was changed",
                                  f"stop it first (machinectl stop {name}), then install again"))


def _swap_in(staged: Path, image: Path) -> Path | None:
    """Put the newly imported ``staged`` tree at ``image``; the old tree, moved aside, is
    returned (the caller removes it once the new one is in service): a failure at any point
    leaves one of the two at ``image``."""
    old = image.with_name(f".{image.name}.old-{os.getpid()}")
    had_old = image.exists() or image.is_symlink()
    if had_old:
        remove_tree(old)
        os.rename(image, old)
    try:
        os.rename(staged, image)
    except BaseException:
        if had_old:
            os.rename(old, image)
        raise
    return old if had_old else None


def _carry_state(paths: list[str], old: Path, new: Path, done: list[str]) -> list[str]:
    """Move the directories the recipe names as state (``state = [...]``, in the manifest) from
    the old tree into the new one, replacing the image's fresh copies; the paths moved, for
    :func:`_return_state` (relative: the trees are renamed afterwards). Paths resolve inside
    each tree (symlinks in the tree are the tree's: they cannot lead out of it)."""
    moved = []
    for rel in paths:
        src, dst = resolve_in_root(old, rel), resolve_in_root(new, rel)
        if not (src.exists() or src.is_symlink()):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        remove_tree(dst)
        os.rename(src, dst)
        moved.append(rel)
        done.append(f"kept the machine's state {rel} (moved from the old tree)")
    return moved


def _return_state(moved: list[str], new: Path, old: Path) -> None:
    """Move the state back from the new tree (now at the machine's path) to the old one."""
    for rel in reversed(moved):
        src, dst = resolve_in_root(new, rel), resolve_in_root(old, rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)


def _unit(name: str) -> str:
    return f"systemd-nspawn@{name}.service"


def _stop(name: str, image: Path) -> None:
    """Stop the machine's unit and wait until no process runs from its tree."""
    run(["systemctl", "stop", _unit(name)], f"stop machine {name} (systemctl stop {_unit(name)})")
    deadline = time.monotonic() + STOP_TIMEOUT
    while processes_in(image):
        if time.monotonic() > deadline:
            raise BuildError(f"machine '{name}' still runs from {image} {STOP_TIMEOUT} s after "
                             f"systemctl stop; nothing was changed: stop it (machinectl terminate "
                             f"{name}) and install again")
        time.sleep(0.5)


def _started(name: str) -> str | None:
    """Start the machine's unit; None when it is still active after START_SETTLE seconds,
    else what systemd says about it."""
    unit = _unit(name)
    done = subprocess.run(["systemctl", "start", unit], capture_output=True, text=True,
                          check=False, timeout=STOP_TIMEOUT)
    if done.returncode == 0:
        time.sleep(START_SETTLE)
        if succeeds(["systemctl", "is-active", "--quiet", unit]):
            return None
    status = subprocess.run(["systemctl", "status", "--no-pager", "--lines=5", unit],
                            capture_output=True, text=True, check=False)
    return (done.stderr.strip() or status.stdout.strip() or "it did not stay active")[-600:]


def systemd_runs(root: Path) -> bool:
    return root == Path("/") and Path("/run/systemd/system").is_dir()


def _put(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` atomically, mode 0644, through a new temporary file (never an
    existing path, which could be a symlink planted to redirect the write)."""
    with replacing(dest, mode=0o644) as tmp, open(tmp, "wb") as out, open(src, "rb") as fh:
        shutil.copyfileobj(fh, out)


def bridged_nspawn(text: str, bridge: str) -> str:
    """The .nspawn with its [Network] wiring (VirtualEthernet=, Bridge=, Zone=) replaced by
    ``Bridge=bridge``: an instance joins a bridge the image's recipe did not name."""
    out, section, placed = [], "", False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            if section == "Network" and not placed:
                out.append(f"Bridge={bridge}")
                placed = True
            section = stripped.strip("[]")
        elif section == "Network" and stripped.split("=", 1)[0] in (
                "VirtualEthernet", "Bridge", "Zone"):
            continue
        out.append(line)
    if not placed:
        out += ([f"Bridge={bridge}"] if section == "Network" else ["", "[Network]",
                                                                   f"Bridge={bridge}"])
    return "\n".join(out) + "\n"


def recipe_network(art: Artifact) -> NetSpec | None:
    """The network the image was built with (manifest.json's ``network``), None without one."""
    table = art.manifest.get("network")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise RecipeError(Problem(art.dir / "manifest.json", "network", "is not a table",
                                  NOT_AN_ARTIFACT))
    return NetSpec.from_table(table)


def check_runs_here(art: Artifact, root: Path) -> None:
    """Refuse an image of an architecture this host cannot run (natively or through an
    emulator registered with binfmt_misc with the F flag): installed, it would fail at its
    first start with an exec-format error. Only for ROOT ``/``: a tree under --root belongs to
    another host (an arm64 board's disk) whose CPU this one cannot know. A manifest written
    before manifests recorded the machine is not checked."""
    machine = art.manifest.get("machine")
    if machine is None or root.resolve() != Path("/"):
        return
    where = art.dir / "manifest.json"
    if not isinstance(machine, str):
        raise RecipeError(Problem(where, "machine", "is not a string", NOT_AN_ARTIFACT))
    try:
        emulation.check(machine, machine_arch(), purpose="run")
    except emulation.EmulatorMissing as e:
        raise RecipeError(Problem(where, "machine", f"{e}; nothing was installed",
                                  "or install it into that host's tree with --root DIR")) from None


def check_boots_here(art: Artifact, root: Path) -> None:
    """Refuse an image whose systemd does not boot on this host's cgroup hierarchy (systemd
    258 and newer need the unified one): installed, it would stop at its first start. Only for
    ROOT ``/``, for the same reason as :func:`check_runs_here`."""
    if root.resolve() != Path("/"):
        return
    packages = art.manifest.get("packages")
    why = cgroups.refusal(packages if isinstance(packages, list) else [],
                          cgroups.MOUNTINFO.read_text())
    if why:
        raise RecipeError(Problem(art.dir / "manifest.json", "packages",
                                  f"{why}; nothing was installed", cgroups.FIX))


def install(artifact_dir: Path, *, name: str | None, root: Path, force: bool,
            enable: bool, start: bool, restart: bool = False,
            overrides: Overrides | None = None, host_network: bool = False,
            host_settings: HostSettingsFor | None = None) -> list[str]:
    """Install; return what was done, one line each. All checks come before the first write.

    Over an installed machine (``--force``), the new tree is imported beside it and swapped
    in, with the directories the recipe names as state moved over from the old one. A running
    machine is refused unless ``restart``: then its unit is stopped, the new image put in place
    and started, and, when it does not stay up, the old image, state and settings are put back
    and started again.

    ``overrides`` are the instance's own (``--address``, ``--gateway``, ``--dns``,
    ``--bridge``), laid over what an earlier install recorded for the machine, which is laid
    over the recipe's; ``host_network`` installs and applies the host's half of the network
    (:mod:`hostnet`). ``host_settings`` gives what the image's features ask of this host
    (the manifest's ``host_needs``: a GPU driver's files, see :mod:`hostneeds`)."""
    if name is not None:
        check_machine_name(name, NAME_OPTION, None)
    art, sums = verify(artifact_dir)
    check_runs_here(art, root)
    check_boots_here(art, root)
    name = name or art.name
    tarball = art.tarball
    t = targets(root, name)
    over = (overrides or Overrides()).over(instance.load(root, name))
    net = instance.effective(recipe_network(art), over)
    host_files = hostnet.host_files(name, net) if net is not None else {}
    needs = host_needs(art, HostContext(root, name), host_settings)
    managed = systemd_runs(root)
    if restart and not managed:
        raise RecipeError(Problem(Path("--restart"), None, "needs systemd running on this host "
                                  "(it stops and starts the machine's unit)",
                                  "stop the machine yourself, then install --force"))
    if (t.image.exists() or t.image.is_symlink() or t.nspawn.exists()) and not (force or restart):
        raise BuildError(f"machine '{name}' already exists "
                         f"({t.image if t.image.exists() else t.nspawn}); "
                         "use --force to replace it, or --name to install under another name")
    running = bool(processes_in(t.image))
    if not restart:
        check_not_running(t.image, name)
    members = check_tarball(tarball)
    done = [f"verified {len(sums)} files against SHA256SUMS",
            f"read the {members} headers of {tarball.name}"]
    t.image.parent.mkdir(parents=True, exist_ok=True)
    # imported beside the machines, under an image root of its own (no machine name taken),
    # then swapped in: the old tree stays until the new one is in service
    staging = t.image.parent / f".{name}.new-{os.getpid()}"
    remove_tree(staging)
    try:
        # under a name of its own: systemd-import refuses a name any image root already has
        temp = f"nspawnbuild-new-{secrets.token_hex(6)}"
        staged = import_tarball(tarball, staging, temp, headers_checked=True)
        done.append(f"imported {tarball.name}")
        done += instance.apply_to_tree(staged, name, net, over)
        settings = {dest: dest.read_bytes() if dest.is_file() else None
                    for dest in (t.nspawn, t.dropin)}
        if running:
            _stop(name, t.image)
            done.append(f"stopped machine {name}")
        check_not_running(t.image, name)  # started while the import ran
        state = [str(p) for p in art.manifest.get("state", [])]
        moved = _carry_state(state, t.image, staged, done) if t.image.is_dir() else []
        done += hostneeds.apply_to_tree(staged, needs)  # after the state: a kept /etc keeps them
        old = _swap_in(staged, t.image)
    finally:
        remove_tree(staging)
    done.append(f"installed the image as {t.image}")
    extras = {t.nspawn: hostneeds.render_extra(needs.nspawn, NSPAWN_ORDER),
              t.dropin: hostneeds.render_extra(needs.unit, UNIT_ORDER)}
    for src, dest in ((art.path("nspawn"), t.nspawn), (art.path("dropin"), t.dropin)):
        bridge = over.bridge if dest == t.nspawn else None
        if bridge is not None or extras[dest]:
            text = src.read_bytes().decode("utf-8", errors="replace")
            with replacing(dest, mode=0o644) as tmp:
                tmp.write_text((bridged_nspawn(text, bridge) if bridge is not None else text)
                               + extras[dest])
        else:
            _put(src, dest)
        done.append(f"installed {dest}")
    done += needs.notes
    if host_network and not host_files:
        done.append("--host-network: the image has no network of its own (mode 'host', or "
                    "no [features.network]): nothing to install on the host")
    elif host_network:
        hostnet.apply(host_files, root, live=managed, uplink=net.uplink if net else None,
                      say=done.append)
    elif len(host_files) > 1:
        done.append(f"the host's half of the network is not installed: add --host-network "
                    f"(what it writes: {artifact_dir / hostnet.NOTE})")
    if managed:
        run(["systemctl", "daemon-reload"], "reload systemd's units (systemctl daemon-reload)")
        done.append("systemctl daemon-reload")
        if enable:
            run(["machinectl", "enable", name], f"enable machine {name} (machinectl enable)")
            done.append(f"machinectl enable {name}")
        if start or (restart and running):
            failure = _started(name)
            if failure is not None:
                _roll_back(name, t, old, moved, settings, restart_old=running)
                raise BuildError(f"the new image of machine '{name}' did not start: {failure}\n"
                                 "  the old image, its state and settings were put back"
                                 + (" and started again" if running and old else ""))
            done.append(f"started machine {name} (systemctl start {_unit(name)})")
    else:
        if enable:
            t.wants.mkdir(parents=True, exist_ok=True)
            link = t.wants / f"systemd-nspawn@{name}.service"
            if not link.is_symlink():
                link.symlink_to("/lib/systemd/system/systemd-nspawn@.service")
            done.append(f"enabled: {link}")
        if start:
            done.append("not started: systemd is not running for this root")
    if over.network:  # once the machine is in service: a rolled back update keeps the old
        done.append(f"recorded {name}'s own settings in {instance.save(root, name, over)}")
    if old is not None:
        remove_tree(old)
        done.append("removed the old image (kept until the new one was in place)")
    return done


def host_needs(art: Artifact, host: HostContext,
               provider: HostSettingsFor | None) -> HostSettings:
    """What the image's features ask of this host, found before anything is written."""
    needs = art.manifest.get("host_needs")
    if not needs:
        return HostSettings()
    if not isinstance(needs, dict):
        raise BuildError(f"{art.dir / 'manifest.json'}: 'host_needs' is not a table; rebuild "
                         "the image")
    if provider is None:
        raise BuildError(f"the image needs settings made on its host "
                         f"({', '.join(sorted(map(str, needs)))}): install it with "
                         "`nspawnbuild install`, which makes them")
    nspawn = art.path("nspawn").read_bytes().decode("utf-8", errors="replace")
    return provider(art.manifest, HostContext(host.root, host.machine, nspawn))


def _roll_back(name: str, t: Targets, old: Path | None, moved: list[str],
               settings: dict[Path, bytes | None], *, restart_old: bool) -> None:
    """Put the old image, its state and its settings back after the new one failed to start;
    start the old one again when it was running."""
    subprocess.run(["systemctl", "stop", _unit(name)], capture_output=True, check=False)
    if old is not None:
        _return_state(moved, t.image, old)
    failed = t.image.with_name(f".{name}.failed-{os.getpid()}")
    os.rename(t.image, failed)
    if old is not None:
        os.rename(old, t.image)
    remove_tree(failed)
    for dest, data in settings.items():
        if data is None:
            dest.unlink(missing_ok=True)
        else:
            with replacing(dest, mode=0o644) as tmp:
                tmp.write_bytes(data)
    run(["systemctl", "daemon-reload"], "reload systemd's units (systemctl daemon-reload)")
    if restart_old and old is not None:
        subprocess.run(["systemctl", "start", _unit(name)], capture_output=True, check=False,
                       timeout=STOP_TIMEOUT)
