"""doit task creators and actions: resolve, bootstrap, rootfs, pack, configure, manifest.

Each recipe gets its own tasks (``rootfs:NAME``), so the state of one recipe never mixes with
another's. Actions are module-level functions (closures do not pickle for ``doit -n``) and
read what they need from the plan files that ``resolve`` wrote, so an action does exactly what
the recorded plan says.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit import get_var
from doit.exceptions import TaskFailed
from doit.tools import config_changed

from . import audit, cache
from .cache import touch
from .digests import digest, sha256_file
from .errors import BuildError, NspawnbuildError, RecipeError, error_lines
from .imagefs import parse_owner, write_file
from .lock import exclusive, hold, hold_shared, release_shared
from .namespaces import enter_private_mount_namespace, require_private_mount_namespace
from .overlay import ImageTree, umount
from .pack import SUFFIXES, pack
from .paths import Layout, dropin_name, nspawn_name, tarball_name
from .plan import Plan, make_distro, make_plan
from .plugins import get_plugin_manager
from .publish import publish
from .recipe import Recipe, list_recipes, load_recipe
from .render import render_dropin, render_nspawn
from .reporter import Reporter
from .rootfs import RootfsContext, drop_resolv_conf, scrub
from .sandbox import Sandbox
from .settings import Setting
from .steplog import StepLog
from .tree import copy_tree, mounts_below, remove_tree

STAGES = ("resolve", "bootstrap", "rootfs", "pack", "configure", "manifest")


def doit_config(layout: Layout | None = None) -> dict[str, Any]:
    """DOIT_CONFIG for dodo.py and the embedded runner: sqlite state under the work dir."""
    layout = layout or Layout.from_env()
    layout.work.mkdir(parents=True, exist_ok=True)
    install_signal_handlers()
    # before doit or the reporter start threads: the build's mounts live and die with it
    enter_private_mount_namespace()
    return {
        "backend": "sqlite3",
        "dep_file": str(layout.state_db),
        "default_tasks": ["build"],
        "reporter": Reporter,
        "verbosity": 0,
        "action_string_formatting": "new",
    }


# -- helpers ----------------------------------------------------------------------------------

_signal_received = signal.SIGINT


def _on_sigterm(signum: int, frame: object) -> None:
    global _signal_received
    _signal_received = signal.Signals(signum)
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """SIGTERM stops a build the way Ctrl-C does: children stopped, work cleaned, a clear exit."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def _guarded(fn: Callable[..., None]) -> Callable[..., TaskFailed | None]:
    """Turn our own errors into a doit failure with a clean message (no traceback).

    An interruption ends the whole run at once (SystemExit passes through doit, which saves its
    state): the action has already removed its half-made work, and nothing was published.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> TaskFailed | None:
        try:
            fn(*args, **kwargs)
        except NspawnbuildError as e:
            return TaskFailed(str(e))
        except OSError as e:  # disk full, a read-only out/, a file that vanished: one clear line
            return TaskFailed(os_error_line(e, fn.__name__.removeprefix("action_")))
        except KeyboardInterrupt:
            name = signal.Signals(_signal_received).name
            print(f"error: interrupted by {name} during {fn.__name__.removeprefix('action_')}; "
                  "the previous artifacts are unchanged", file=sys.__stderr__)  # doit captures stderr
            raise SystemExit(128 + _signal_received) from None
        return None
    return wrapper


def os_error_line(e: OSError, stage: str) -> str:
    """What went wrong, where, and how to fix it, for an error from the operating system."""
    where = f" ({e.filename})" if e.filename else ""
    fixes = {errno.ENOSPC: "free some space there (nspawnbuild cache prune helps) or build "
                           "elsewhere with --out/--work-dir/--cache-dir",
             errno.EDQUOT: "free some space there or build elsewhere with --out/--work-dir",
             errno.EROFS: "that file system is read-only: build elsewhere with --out/--work-dir",
             errno.EACCES: "make it writable for this user, or build elsewhere with --out/--work-dir",
             errno.EPERM: "make it writable for this user, or build elsewhere with --out/--work-dir"}
    fix = fixes.get(e.errno or 0, "fix the cause and build again")
    return f"{stage} failed: {e.strerror or e}{where}; {fix}; the previous artifacts are unchanged"


_recipes: dict[str, Recipe] = {}


def _recipe(path: str) -> Recipe:
    """The recipe loaded at task creation (actions run in the same process for -n 1)."""
    if path not in _recipes:
        _recipes[path] = load_recipe(Path(path))
    return _recipes[path]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json(path: Path, doc: Any) -> None:
    _write_atomic(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# -- actions ----------------------------------------------------------------------------------

@_guarded
def action_resolve(work: str, documents: dict[str, Any]) -> None:
    for stage, doc in documents.items():
        _write_json(Path(work) / "plan" / f"{stage}.json", doc)


@_guarded
def action_bootstrap(recipe_path: str, key: str) -> None:
    """Bootstrap into the content-addressed cache, unless the entry is already there."""
    recipe = _recipe(recipe_path)
    layout = Layout.from_env()
    entry = layout.bootstrap_entry(key)
    if (entry / "info.json").is_file():  # builds using it hold it shared: do not wait for them
        with StepLog(layout.log(recipe.name, "bootstrap")) as log:
            log.note(f"cache entry {key} is already there (an earlier build made it): "
                     "nothing to bootstrap")
        return
    _make_entry(recipe, key, layout)


def _make_entry(recipe: Recipe, key: str, layout: Layout) -> None:
    """Bootstrap the cache entry ``key`` (under its exclusive lock) and record its contents."""
    entry = layout.bootstrap_entry(key)
    spec = _read_json(layout.plan_file(recipe.name, "bootstrap"))
    with exclusive(_entry_lock(entry), wait=True, what=f"bootstrap cache entry {key}"):
        if (entry / "info.json").is_file():
            return
        for stale in entry.parent.glob(f".{key}.tmp-*"):  # left by a killed build
            remove_tree(stale)
        remove_tree(entry)  # a half-removed entry (no info.json)
        tmp = entry.with_name(f".{key}.tmp-{os.getpid()}")
        private_dir(entry.parent)  # bootstraps hold setuid files: no other user may reach them
        tmp.mkdir()
        try:
            with StepLog(layout.log(recipe.name, "bootstrap")) as log:
                distro = make_distro(recipe)
                log.note(f"bootstrapping {distro.name} {distro.release} {distro.arch} with "
                         f"{spec['bootstrapper'][0]} {spec['bootstrapper'][1]}")
                distro.bootstrap(tmp / "root", spec["packages"], spec["epoch"], log)
                contents = cache.write_contents(tmp)
                log.note(f"recorded the contents of the new cache entry: {contents}")
            _write_json(tmp / "info.json", {"key": key, "spec": spec, "contents": contents})
            os.replace(tmp, entry)
        except BaseException:
            remove_tree(tmp)
            raise


def private_dir(path: Path) -> None:
    """``path`` exists, belongs to root and only root may enter it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, 0o700)


def _entry_lock(entry: Path) -> Path:
    return entry.with_suffix(".lock")


def use_entry(recipe: Recipe, key: str, layout: Layout, log: StepLog) -> str:
    """Hold the cache entry ``key`` shared for the rest of the build and check its contents.

    A damaged entry (a truncated file, anything changed since it was made) is dropped and
    bootstrapped again, with a note; returns the entry's contents digest.
    """
    entry = layout.bootstrap_entry(key)
    for _attempt in range(2):
        hold_shared(_entry_lock(entry), what=f"bootstrap cache entry {key}")
        info = entry / "info.json"
        if info.is_file():
            expected = _read_json(info).get("contents")
            problems = cache.verify_contents(entry, expected)
            if not problems and expected:
                touch(info)  # last use, for `nspawnbuild cache prune --older-than`
                return str(expected)
            message = (f"note: bootstrap cache entry {key[:16]} is damaged "
                       f"({'; '.join(problems) or 'no contents digest'}); dropped it, "
                       "bootstrapping again")
            log.note(message)
            print(message, file=sys.__stderr__)
        release_shared(_entry_lock(entry))
        with exclusive(_entry_lock(entry), wait=True, what=f"bootstrap cache entry {key}"):
            current = entry / "info.json"
            if current.is_file() and cache.verify_contents(entry, _read_json(current).get("contents")):
                remove_tree(entry)
        _make_entry(recipe, key, layout)
    raise BuildError(f"bootstrap cache entry {key} is damaged again right after it was made; "
                     f"check the disk under {entry.parent}")


def image_tree(layout: Layout, name: str, key: str, *, new: bool = False) -> ImageTree:
    """The overlay of recipe ``name``: the cache entry below, its own layer above."""
    work = layout.work_dir(name)
    return ImageTree(layout.bootstrap_entry(key) / "root", work / ("layer.new" if new else "layer"),
                     layout.rootfs(name))


@_guarded
def action_rootfs(recipe_path: str) -> None:
    """On an overlay of the cached bootstrap: features, files, post-steps, scrub, list packages."""
    recipe = _recipe(recipe_path)
    layout = Layout.from_env()
    name = recipe.name
    spec = _read_json(layout.plan_file(name, "rootfs"))
    key = spec["bootstrap_key"]
    work = layout.work_dir(name)
    require_private_mount_namespace()
    private_dir(work)  # the layer holds the image's setuid files: no other user may reach them
    with StepLog(layout.log(name, "rootfs")) as log:
        contents = use_entry(recipe, key, layout, log)
        tree = image_tree(layout, name, key, new=True)
        umount(tree.merged)
        remove_tree(tree.layer)
        tree.create()
        log.note(f"overlay on bootstrap {key[:16]} (read-only) at {tree.merged}, "
                 f"changes in {tree.upper}")
        tree.mount()
        new = tree.merged
        try:
            with Sandbox(tree, name) as sandbox:
                if sandbox.stale:
                    note = (f"note: removed {len(sandbox.stale)} cgroups a killed earlier build "
                            f"of {name} left: " + ", ".join(sandbox.stale))
                    log.note(note)
                    print(note, file=sys.__stderr__)
                drop_resolv_conf(new)
                distro = make_distro(recipe)
                ctx = RootfsContext(new, recipe, distro, log, layout.cache, sandbox=sandbox)
                get_plugin_manager().hook.nspawnbuild_configure_rootfs(ctx=ctx)
                for f in recipe.files:
                    uid, gid = parse_owner(new, f.owner)
                    log.note(f"file {f.dest} from {f.src}")
                    write_file(new, f.dest, f.content,
                               mode=f.mode if f.mode is not None else 0o644, uid=uid, gid=gid)
                for i, step in enumerate(recipe.post, start=1):
                    label = f"post-step {i}" + (f" ({step['name']})" if step.get("name") else "")
                    shell = step.get("shell", "/bin/sh")
                    first = step["run"].strip().splitlines()[0] if step["run"].strip() else ""
                    sandbox.run(log, [shell, "-e", "-c", step["run"]], step=label,
                                network=step.get("network", True),
                                env={"SOURCE_DATE_EPOCH": str(recipe.epoch)},
                                shown_command=first + (" ..." if "\n" in step["run"].strip() else ""))
                get_plugin_manager().hook.nspawnbuild_finalize_rootfs(ctx=ctx)
                scrub(new, name)
                distro.clean(new)
                packages = [p.as_dict() for p in distro.list_packages(new)]
            tree.umount()
            remove_tree(work / "layer")
            os.replace(tree.layer, work / "layer")
            remove_tree(work / "rootfs.failed")  # a kept failure is stale once the step works
        except NspawnbuildError as e:
            if not keep_rootfs():
                _discard(tree)
                raise
            kept = _keep_failed(tree, work / "rootfs.failed", log)
            raise BuildError(f"{e}\n{kept}") from None
        except BaseException:
            _discard(tree)
            raise
        _write_json(work / "rootfs.json", {"spec": digest(spec), "packages": packages,
                                           "bootstrap": {"key": key, "contents": contents}})


def _discard(tree: ImageTree) -> None:
    tree.umount()
    remove_tree(tree.layer)


def keep_rootfs() -> bool:
    """``--keep-rootfs`` (``doit build keep_rootfs=1``): keep the tree of a failed rootfs step."""
    return bool(os.environ.get("NSPAWNBUILD_KEEP_ROOTFS") or get_var("keep_rootfs", ""))


def _keep_failed(tree: ImageTree, kept: Path, log: StepLog) -> str:
    """Copy a failed tree aside for a look inside (a copy: it shares nothing with the cache);
    return the lines that say how."""
    remove_tree(kept)
    copy_tree(tree.merged, kept)
    _discard(tree)
    message = (f"  the tree as the failing step left it is kept (--keep-rootfs): {kept}\n"
               "  look inside without changing it: systemd-nspawn --register=no --keep-unit "
               f"--volatile=overlay -D {kept}\n"
               "  (the next good build or nspawnbuild clean removes it)")
    log.note(message.strip())
    return message


@_guarded
def action_pack(name: str) -> None:
    layout = Layout.from_env()
    spec = _read_json(layout.plan_file(name, "pack"))
    work = layout.work_dir(name)
    built = _read_json(work / "rootfs.json")["bootstrap"]
    dest = layout.tarball(name, spec["compression"])
    dest.parent.mkdir(parents=True, exist_ok=True)  # the staging directory
    for stale in dest.parent.glob(".*.tmp-*"):  # left by a killed build
        stale.unlink()
    require_private_mount_namespace()
    entry = layout.bootstrap_entry(built["key"])
    hold_shared(_entry_lock(entry), what=f"bootstrap cache entry {built['key']}")
    info = entry / "info.json"
    if not info.is_file() or _read_json(info).get("contents") != built["contents"] \
            or cache.verify_contents(entry, built["contents"]):
        raise BuildError(f"the bootstrap cache entry {built['key'][:16]} under this image changed "
                         f"or was pruned since its rootfs was made; rebuild with: "
                         f"nspawnbuild clean {name} && nspawnbuild build {name}")
    tree = image_tree(layout, name, built["key"])
    umount(tree.merged)
    if mounts_below(tree.merged):
        raise BuildError(f"something is mounted below {tree.merged}; unmount it and rebuild")
    tree.mount_read_only()
    try:
        auditor = audit.Auditor(machine=name)
        result = pack(tree.merged, dest, spec["epoch"], spec["compression"], spec["level"],
                      inspect=auditor.add)
    finally:
        tree.umount()
    for compression in SUFFIXES:  # a tarball of another compression is now stale
        other = layout.tarball(name, compression)
        if other != dest:
            other.unlink(missing_ok=True)
    _write_json(work / "pack.json", {"file": dest.name, **result.as_dict(),
                                     "audit": [[f.check, f.path, f.detail] for f in auditor.result()]})


@_guarded
def action_configure(name: str) -> None:
    layout = Layout.from_env()
    spec = _read_json(layout.plan_file(name, "config"))
    common = {"name": spec["name"], "digest": spec["digest"], "version": spec["version"]}
    nspawn = render_nspawn([Setting(*s) for s in spec["nspawn"]], **common)
    dropin = render_dropin([Setting(*s) for s in spec["unit"]], **common)
    _write_atomic(layout.nspawn_file(name), nspawn.encode())
    _write_atomic(layout.dropin(name), dropin.encode())


@_guarded
def action_manifest(name: str) -> None:
    """Write manifest.json and SHA256SUMS, then publish the whole set into out/NAME."""
    layout = Layout.from_env()
    spec = _read_json(layout.plan_file(name, "manifest"))
    work = layout.work_dir(name)
    stage = layout.stage_dir(name)
    rootfs = _read_json(work / "rootfs.json")
    packed = _read_json(work / "pack.json")
    nspawn, dropin = layout.nspawn_file(name), layout.dropin(name)
    artifacts = {packed["file"]: stage / packed["file"], nspawn_name(name): nspawn,
                 dropin_name(name): dropin}
    digests = {rel: sha256_file(path) for rel, path in artifacts.items()}
    if digests[packed["file"]] != packed["sha256"]:
        raise BuildError(f"{stage / packed['file']} changed since it was packed; rebuild it "
                         f"with: nspawnbuild build {name}")
    # the packer audited every entry as it wrote it; the digest check above ties that to this file
    findings = [audit.Finding(*f) for f in packed["audit"]]
    findings += audit.settings_findings(nspawn.read_text(), dropin.read_text(),
                                        nspawn_name(name), dropin_name(name))
    failing, allowed = audit.split(findings, spec["audit_allow"])
    if failing:
        raise BuildError(f"the audit of {packed['file']} and its settings found secrets, host "
                         "state or risky settings; nothing "
                         "was published:\n" + "\n".join(f"  {f}" for f in failing)
                         + "\n  fix the recipe, or accept a finding with [audit] allow = "
                         "[\"CHECK:PATH\"]")
    manifest = {
        "format": 1,
        **{k: spec[k] for k in ("name", "description", "recipe_digest", "source_date_epoch",
                                "target_systemd", "base", "bootstrapper")},
        "tool": {"name": "nspawnbuild", "version": spec["nspawnbuild"]},
        "packages": rootfs["packages"],
        "tree": {"bytes": packed["tree_bytes"], **packed["counts"]},
        "audit": {"checks": list(audit.CHECKS), "allowed": [str(f) for f in allowed]},
        "artifacts": {
            "tarball": {"file": packed["file"], "sha256": packed["sha256"],
                        "size": packed["size"], **spec["compression"]},
            "tar": {"sha256": packed["tar_sha256"], "size": packed["tar_size"]},
            "nspawn": {"file": nspawn_name(name), "sha256": digests[nspawn_name(name)]},
            "dropin": {"file": dropin_name(name), "sha256": digests[dropin_name(name)]},
        },
    }
    _write_json(stage / "manifest.json", manifest)
    artifacts["manifest.json"] = stage / "manifest.json"
    digests["manifest.json"] = sha256_file(stage / "manifest.json")
    _write_atomic(stage / "SHA256SUMS",
                  "".join(f"{h}  {f}\n" for f, h in sorted(digests.items())).encode())
    artifacts["SHA256SUMS"] = stage / "SHA256SUMS"
    publish(artifacts, layout.out_dir(name))


# -- uptodate checks --------------------------------------------------------------------------

def cache_entry_exists(key: str) -> bool:
    return (Layout.from_env().bootstrap_entry(key) / "info.json").is_file()


def rootfs_current(name: str, key: str) -> bool:
    """The image's layer exists and sits on the very cache entry contents it was made on."""
    layout = Layout.from_env()
    work = layout.work_dir(name)
    try:
        built = _read_json(work / "rootfs.json")["bootstrap"]
        info = _read_json(layout.bootstrap_entry(key) / "info.json")
    except (OSError, ValueError, KeyError):
        return False
    return ((work / "layer" / "upper").is_dir() and built["key"] == key
            and built["contents"] == info.get("contents"))


# -- task creation ----------------------------------------------------------------------------

def recipe_tasks(recipe: Recipe, plan: Plan, layout: Layout) -> Iterator[dict[str, Any]]:
    """The six tasks of one recipe, wired by their files."""
    name = recipe.name
    work = layout.work_dir(name)
    docs = plan.documents()
    plan_files = {stage: str(layout.plan_file(name, stage)) for stage in docs}
    rootfs_json, pack_json = str(work / "rootfs.json"), str(work / "pack.json")
    tarball = str(layout.tarball(name, plan.pack["compression"]))
    nspawn, dropin = str(layout.nspawn_file(name)), str(layout.dropin(name))
    out = layout.out_dir(name)
    published = [str(out / tarball_name(name, plan.pack["compression"])),
                 str(out / nspawn_name(name)), str(out / dropin_name(name)),
                 str(out / "manifest.json"), str(out / "SHA256SUMS")]

    yield {"basename": "resolve", "name": name, "doc": f"resolve and validate recipe {name}",
           "actions": [(action_resolve, [str(work), docs])],
           "targets": list(plan_files.values()),
           "uptodate": [config_changed(digest(docs))], "verbosity": 0}
    yield {"basename": "bootstrap", "name": name,
           "doc": f"bootstrap {recipe.base['distro']} {recipe.base.get('release', '')} "
                  f"(cache key {plan.bootstrap_key[:12]})",
           "actions": [(action_bootstrap, [str(recipe.path), plan.bootstrap_key])],
           "file_dep": [plan_files["bootstrap"]],
           "uptodate": [(cache_entry_exists, [plan.bootstrap_key])], "verbosity": 0}
    yield {"basename": "rootfs", "name": name, "doc": "features, files, post-steps, scrub",
           "actions": [(action_rootfs, [str(recipe.path)])],
           "file_dep": [plan_files["rootfs"]], "task_dep": [f"bootstrap:{name}"],
           "targets": [rootfs_json],
           "uptodate": [(rootfs_current, [name, plan.bootstrap_key])], "verbosity": 0}
    yield {"basename": "pack", "name": name, "doc": "pack the rootfs into a tarball",
           "actions": [(action_pack, [name])],
           "file_dep": [plan_files["pack"], rootfs_json],
           "targets": [tarball, pack_json], "verbosity": 0}
    yield {"basename": "configure", "name": name, "doc": "render .nspawn and unit drop-in",
           "actions": [(action_configure, [name])],
           "file_dep": [plan_files["config"]], "targets": [nspawn, dropin], "verbosity": 0}
    yield {"basename": "manifest", "name": name,
           "doc": f"manifest.json and SHA256SUMS; publish all artifacts into {out}",
           "actions": [(action_manifest, [name])],
           "file_dep": [plan_files["manifest"], rootfs_json, pack_json, tarball, nspawn, dropin],
           "targets": published, "verbosity": 0}


def selected_recipes() -> list[str]:
    """Recipes named by ``recipe=a,b`` on the doit command line, or every recipe found."""
    value = get_var("recipe", None) or os.environ.get("NSPAWNBUILD_RECIPES", "")
    if value:
        return [r for r in (part.strip() for part in value.split(",")) if r]
    return [str(p) for p in list_recipes()]


def load_or_exit(refs: list[str]) -> list[Recipe]:
    """Load every selected recipe; on bad input print every problem and exit 2 (no traceback)."""
    recipes, problems = [], []
    for ref in refs:
        try:
            recipes.append(load_recipe(ref))
        except RecipeError as e:
            problems.append(error_lines(e))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        raise SystemExit(2)
    return recipes


def task_build() -> Iterator[dict[str, Any]]:
    """Build recipes: ``doit build recipe=NAME[,NAME...]`` (default: every recipe found)."""
    layout = Layout.from_env()
    for recipe in load_or_exit(selected_recipes()):
        _recipes[str(recipe.path)] = recipe
        try:
            # one build of a recipe at a time: held until this process ends
            hold(layout.work_dir(recipe.name) / "lock", what=f"recipe {recipe.name}")
            plan = make_plan(recipe)
        except NspawnbuildError as e:
            print(error_lines(e), file=sys.stderr)
            raise SystemExit(e.exit_code) from None
        yield from recipe_tasks(recipe, plan, layout)
        yield {"name": recipe.name, "doc": f"build {recipe.name} into {layout.out_dir(recipe.name)}",
               "actions": None, "task_dep": [f"manifest:{recipe.name}"]}

