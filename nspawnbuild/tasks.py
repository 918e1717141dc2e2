"""doit task creators and actions: resolve, bootstrap, rootfs, pack, configure, manifest.

Each recipe gets its own tasks (``rootfs:NAME``), so the state of one recipe never mixes with
another's. Actions are module-level functions (closures do not pickle for ``doit -n``) and
read what they need from the plan files that ``resolve`` wrote, so an action does exactly what
the recorded plan says.
"""

from __future__ import annotations

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

from . import audit
from .cache import touch
from .errors import BuildError, NspawnbuildError, RecipeError, error_lines
from .lock import exclusive, hold
from .pack import SUFFIXES, pack, sha256_file
from .paths import Layout, dropin_name, nspawn_name, tarball_name
from .plan import Plan, digest, make_distro, make_plan
from .plugins import get_plugin_manager
from .publish import publish
from .recipe import Recipe, list_recipes, load_recipe
from .render import render_dropin, render_nspawn
from .reporter import Reporter
from .rootfs import (
    RootfsContext,
    changed,
    drop_resolv_conf,
    fingerprint,
    link_tree,
    mounts_below,
    parse_owner,
    remove_tree,
    scrub,
    write_file,
)
from .sandbox import run_in_root
from .settings import Setting
from .steplog import StepLog

STAGES = ("resolve", "bootstrap", "rootfs", "pack", "configure", "manifest")


def doit_config(layout: Layout | None = None) -> dict[str, Any]:
    """DOIT_CONFIG for dodo.py and the embedded runner: sqlite state under the work dir."""
    layout = layout or Layout.from_env()
    layout.work.mkdir(parents=True, exist_ok=True)
    install_signal_handlers()
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
        except KeyboardInterrupt:
            name = signal.Signals(_signal_received).name
            print(f"error: interrupted by {name} during {fn.__name__.removeprefix('action_')}; "
                  "the previous artifacts are unchanged", file=sys.__stderr__)  # doit captures stderr
            raise SystemExit(128 + _signal_received) from None
        return None
    return wrapper


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
    spec = _read_json(layout.plan_file(recipe.name, "bootstrap"))
    with exclusive(entry.with_suffix(".lock"), wait=True, what=f"bootstrap cache entry {key}"):
        if (entry / "info.json").is_file():
            with StepLog(layout.log(recipe.name, "bootstrap")) as log:
                log.note(f"cache entry {key} is already there (an earlier build made it): "
                         "nothing to bootstrap")
            return
        for stale in entry.parent.glob(f".{key}.tmp-*"):  # left by a killed build
            remove_tree(stale)
        tmp = entry.with_name(f".{key}.tmp-{os.getpid()}")
        remove_tree(tmp)
        tmp.mkdir(parents=True)
        try:
            with StepLog(layout.log(recipe.name, "bootstrap")) as log:
                distro = make_distro(recipe)
                log.note(f"bootstrapping {distro.name} {distro.release} {distro.arch} with "
                         f"{spec['bootstrapper'][0]} {spec['bootstrapper'][1]}")
                distro.bootstrap(tmp / "root", spec["packages"], spec["epoch"], log)
            _write_json(tmp / "info.json", {"key": key, "spec": spec})
            os.replace(tmp, entry)
        except BaseException:
            remove_tree(tmp)
            raise


@_guarded
def action_rootfs(recipe_path: str) -> None:
    """Copy the cached bootstrap, apply features, files and post-steps, scrub, list packages."""
    recipe = _recipe(recipe_path)
    layout = Layout.from_env()
    name = recipe.name
    spec = _read_json(layout.plan_file(name, "rootfs"))
    entry = layout.bootstrap_entry(spec["bootstrap_key"])
    work = layout.work_dir(name)
    new = work / "rootfs.new"
    with StepLog(layout.log(name, "rootfs")) as log:
        remove_tree(new)
        log.note(f"linking bootstrap {spec['bootstrap_key'][:16]} into {new}")
        touch(entry / "info.json")  # last use, for `nspawnbuild cache prune --older-than`
        pristine = fingerprint(entry / "root")
        if not link_tree(entry / "root", new):
            log.note("cache and work directory are on different filesystems: copied instead")
        try:
            drop_resolv_conf(new)
            distro = make_distro(recipe)
            ctx = RootfsContext(new, recipe, distro, log, layout.cache)
            get_plugin_manager().hook.nspawnbuild_configure_rootfs(ctx=ctx)
            for f in recipe.files:
                uid, gid = parse_owner(new, f.owner)
                log.note(f"file {f.dest} from {f.src}")
                write_file(new, f.dest, f.content, mode=f.mode if f.mode is not None else 0o644,
                           uid=uid, gid=gid)
            for i, step in enumerate(recipe.post, start=1):
                label = f"post-step {i}" + (f" ({step['name']})" if step.get("name") else "")
                shell = step.get("shell", "/bin/sh")
                first = step["run"].strip().splitlines()[0] if step["run"].strip() else ""
                run_in_root(log, new, name, [shell, "-e", "-c", step["run"]], step=label,
                            network=step.get("network", True),
                            env={"SOURCE_DATE_EPOCH": str(recipe.epoch)},
                            shown_command=first + (" ..." if "\n" in step["run"].strip() else ""))
            get_plugin_manager().hook.nspawnbuild_finalize_rootfs(ctx=ctx)
            scrub(new, name)
            distro.clean(new)
            packages = [p.as_dict() for p in distro.list_packages(new)]
            _check_cache(entry, pristine, log)
            remove_tree(work / "rootfs")
            os.replace(new, work / "rootfs")
            remove_tree(work / "rootfs.failed")  # a kept failure is stale once the step works
        except NspawnbuildError as e:
            _check_cache(entry, pristine, log)  # a failing step may have written in place too
            if not keep_rootfs():
                remove_tree(new)
                raise
            raise BuildError(f"{e}\n{_keep_failed(new, work / 'rootfs.failed', log)}") from None
        except BaseException:
            remove_tree(new)
            _check_cache(entry, pristine, log)
            raise
        _write_json(work / "rootfs.json", {"spec": digest(spec), "packages": packages})


def keep_rootfs() -> bool:
    """``--keep-rootfs`` (``doit build keep_rootfs=1``): keep the tree of a failed rootfs step."""
    return bool(os.environ.get("NSPAWNBUILD_KEEP_ROOTFS") or get_var("keep_rootfs", ""))


def _keep_failed(tree: Path, kept: Path, log: StepLog) -> str:
    """Move a failed tree aside for a look inside; return the lines that say how."""
    remove_tree(kept)
    os.replace(tree, kept)
    message = (f"  the tree as the failing step left it is kept (--keep-rootfs): {kept}\n"
               "  look inside without changing it: systemd-nspawn --register=no --keep-unit "
               f"--volatile=overlay -D {kept}\n"
               "  (it shares files with the bootstrap cache; the next good build or "
               "nspawnbuild clean removes it)")
    log.note(message.strip())
    return message


def _check_cache(entry: Path, pristine: dict[str, tuple[object, ...]], log: StepLog) -> None:
    """Drop the cached bootstrap if the steps changed any of its files in place."""
    touched = changed(pristine, fingerprint(entry / "root"))
    if touched:
        _evict(entry, touched, log)


def _evict(entry: Path, touched: list[str], log: StepLog) -> None:
    """A step wrote into files shared with the cached bootstrap: drop that cache entry.

    This build is right (it has what the steps did); the cache is not pristine any more, so
    the next build that needs it bootstraps again.
    """
    shown = ", ".join(str(Path(p).relative_to(entry / "root")) for p in touched[:3])
    message = (f"note: a step changed files of the cached bootstrap in place ({shown}"
               f"{', ...' if len(touched) > 3 else ''}); dropped cache entry {entry.name[:16]}, "
               "the next build of this base bootstraps again")
    log.note(message)
    print(message, file=sys.__stderr__)
    with exclusive(entry.with_suffix(".lock"), wait=True, what=f"bootstrap cache entry {entry.name}"):
        remove_tree(entry)


@_guarded
def action_pack(name: str) -> None:
    layout = Layout.from_env()
    spec = _read_json(layout.plan_file(name, "pack"))
    work = layout.work_dir(name)
    dest = layout.tarball(name, spec["compression"])
    dest.parent.mkdir(parents=True, exist_ok=True)  # the staging directory
    for stale in dest.parent.glob(".*.tmp-*"):  # left by a killed build
        stale.unlink()
    if mounts_below(work / "rootfs"):
        raise BuildError(f"something is mounted below {work / 'rootfs'}; unmount it and rebuild")
    auditor = audit.Auditor(machine=name)
    result = pack(work / "rootfs", dest, spec["epoch"], spec["compression"], spec["level"],
                  inspect=auditor.add)
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
    failing, allowed = audit.split([audit.Finding(*f) for f in packed["audit"]],
                                   spec["audit_allow"])
    if failing:
        raise BuildError(f"the audit of {packed['file']} found secrets or host state; nothing "
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


def tree_exists(path: str) -> bool:
    return Path(path).is_dir()


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
           "uptodate": [(tree_exists, [str(layout.rootfs(name))])], "verbosity": 0}
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

