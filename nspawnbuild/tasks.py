"""doit tasks: each stage of :mod:`nspawnbuild.pipeline` wired to doit, per recipe.

Each recipe gets its own tasks (``rootfs:NAME``), so the state of one recipe never mixes with
another's. This module holds only what doit needs: the task dicts with their files and
up-to-date checks, the actions that call the pipeline and turn its errors into a clean doit
failure, and ``DOIT_CONFIG``. The run's :class:`~nspawnbuild.options.Options` and the loaded
recipes are passed to the actions as arguments (doit's thread runner calls them in this
process), so nothing is read from the environment or a module-level cache.

``nspawnbuild build`` (the CLI) and ``doit build recipe=NAME`` (``dodo.py``) run the same tasks;
only where the options come from differs.
"""

from __future__ import annotations

import errno
import functools
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from doit import get_var
from doit.exceptions import TaskFailed
from doit.tools import config_changed

from . import pipeline
from .digests import digest
from .errors import NspawnbuildError, RecipeError, error_lines
from .feature import AnyFeature
from .lock import hold
from .namespaces import enter_private_mount_namespace
from .options import Options
from .paths import dropin_name, nspawn_name, tarball_name
from .plan import Plan
from .recipe.find import list_recipes
from .recipe.load import load_recipe
from .recipe.model import Recipe
from .reporter import reporter_for
from .signing import SIGNATURE, SigningKey

STAGES = pipeline.STAGES
AnyRecipe = Recipe[AnyFeature]
TaskDict = dict[str, Any]


def doit_config(options: Options) -> dict[str, Any]:
    """DOIT_CONFIG for dodo.py and the embedded runner: sqlite state under the work dir."""
    options.layout.work.mkdir(parents=True, exist_ok=True)
    install_signal_handlers()
    # before doit or the reporter start threads: the build's mounts live and die with it
    enter_private_mount_namespace()
    return {
        "backend": "sqlite3",
        "dep_file": str(options.layout.state_db),
        "default_tasks": ["build"],
        "reporter": reporter_for(options),
        "verbosity": 0,
        "action_string_formatting": "new",
    }


# -- errors and signals -----------------------------------------------------------------------

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


# -- actions (module-level: doit names a failed task's action by its function) ----------------

@_guarded
def action_resolve(options: Options, name: str, documents: dict[str, Any]) -> None:
    pipeline.resolve(options, name, documents)


@_guarded
def action_bootstrap(options: Options, recipe: AnyRecipe, key: str, layer_key: str) -> None:
    pipeline.bootstrap(options, recipe, key, layer_key)


@_guarded
def action_rootfs(options: Options, recipe: AnyRecipe) -> None:
    pipeline.rootfs(options, recipe)


@_guarded
def action_pack(options: Options, name: str) -> None:
    pipeline.pack(options, name)


@_guarded
def action_configure(options: Options, name: str) -> None:
    pipeline.configure(options, name)


@_guarded
def action_manifest(options: Options, name: str, key: SigningKey | None) -> None:
    pipeline.manifest(options, name, key)


# -- task creation ----------------------------------------------------------------------------

def recipe_tasks(options: Options, recipe: AnyRecipe, plan: Plan,
                 key: SigningKey | None = None) -> Iterator[TaskDict]:
    """The six tasks of one recipe, wired by their files. The signing ``key`` is the manifest
    task's alone: its fingerprint is an up-to-date check (another key, or none, re-signs or
    drops SHA256SUMS.gpg; the same key does nothing), and the signature one of its targets."""
    layout = options.layout
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
    if key is not None:
        published.append(str(out / SIGNATURE))

    yield {"basename": "resolve", "name": name, "doc": f"resolve and validate recipe {name}",
           "actions": [(action_resolve, [options, name, docs])],
           "targets": list(plan_files.values()),
           "uptodate": [config_changed(digest(docs))], "verbosity": 0}
    yield {"basename": "bootstrap", "name": name,
           "doc": f"bootstrap {recipe.base['distro']} {recipe.base.get('release', '')} "
                  f"(base {plan.bootstrap_key[:12]}) and its package layer "
                  f"({plan.layer_key[:12]})",
           "actions": [(action_bootstrap, [options, recipe, plan.bootstrap_key, plan.layer_key])],
           "file_dep": [plan_files["bootstrap"], plan_files["layer"]],
           "uptodate": [(pipeline.cache_entry_exists,
                         [layout, plan.bootstrap_key, plan.layer_key])],
           "verbosity": 0}
    yield {"basename": "rootfs", "name": name, "doc": "features, files, post-steps, scrub",
           "actions": [(action_rootfs, [options, recipe])],
           "file_dep": [plan_files["rootfs"]], "task_dep": [f"bootstrap:{name}"],
           "targets": [rootfs_json],
           "uptodate": [(pipeline.rootfs_current,
                         [layout, name, plan.bootstrap_key, plan.layer_key])],
           "verbosity": 0}
    yield {"basename": "pack", "name": name, "doc": "pack the rootfs into a tarball",
           "actions": [(action_pack, [options, name])],
           "file_dep": [plan_files["pack"], rootfs_json],
           "targets": [tarball, pack_json], "verbosity": 0}
    yield {"basename": "configure", "name": name, "doc": "render .nspawn and unit drop-in",
           "actions": [(action_configure, [options, name])],
           "file_dep": [plan_files["config"]], "targets": [nspawn, dropin], "verbosity": 0}
    yield {"basename": "manifest", "name": name,
           "doc": f"manifest.json and SHA256SUMS; publish all artifacts into {out}",
           "actions": [(action_manifest, [options, name, key])],
           "file_dep": [plan_files["manifest"], rootfs_json, pack_json, tarball, nspawn, dropin],
           "targets": published,
           "uptodate": [config_changed(digest({"sign": key.state() if key else None}))],
           "verbosity": 0}


def load_or_exit(refs: Sequence[str]) -> list[AnyRecipe]:
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


def signing_keys(options: Options, recipes: Sequence[AnyRecipe]) -> dict[str, SigningKey | None]:
    """``{recipe name: its signing key}``, every key found and tried once (one ``--sign`` for
    many recipes is one lookup); every key that cannot sign is printed and the run exits 2,
    before doit runs anything."""
    keys: dict[str, SigningKey | None] = {}
    seen: dict[tuple[str | None, str | None], SigningKey | None] = {}
    problems = []
    for recipe in recipes:
        which = (options.signing.key or recipe.output.sign,
                 None if options.signing.key else str(recipe.output.sign_dir))
        try:
            if which not in seen:
                seen[which] = pipeline.signing_key(options, recipe)
            keys[recipe.name] = seen[which]
        except NspawnbuildError as e:
            problems.append(error_lines(e))
    if problems:
        print("\n".join(dict.fromkeys(problems)), file=sys.stderr)
        raise SystemExit(2)
    return keys


def build_tasks(options: Options, recipes: Sequence[AnyRecipe],
                keys: dict[str, SigningKey | None] | None = None) -> Iterator[TaskDict]:
    """The tasks of every recipe, and a ``build:NAME`` task that stands for all six; ``keys``
    are the signing keys ``nspawnbuild build`` already found (else they are found here)."""
    layout = options.layout
    if keys is None:
        keys = signing_keys(options, recipes)
    for recipe in recipes:
        try:
            # one build of a recipe at a time: held until this process ends
            hold(layout.work_dir(recipe.name) / "lock", what=f"recipe {recipe.name}")
            plan = pipeline.plan(recipe, pipeline.recipe_lock(options, recipe))
        except NspawnbuildError as e:
            print(error_lines(e), file=sys.stderr)
            raise SystemExit(e.exit_code) from None
        yield from recipe_tasks(options, recipe, plan, keys.get(recipe.name))
        yield {"name": recipe.name, "doc": f"build {recipe.name} into {layout.out_dir(recipe.name)}",
               "actions": None, "task_dep": [f"manifest:{recipe.name}"]}


def task_creator(options: Options, recipes: Callable[[], Sequence[AnyRecipe]],
                 keys: dict[str, SigningKey | None] | None = None,
                 ) -> Callable[[], Iterator[TaskDict]]:
    """The ``task_build`` function doit collects, for this run's options; ``recipes`` is called
    when doit loads the tasks (``doit list`` loads them too)."""
    def task_build() -> Iterator[TaskDict]:
        """Build recipes: ``doit build recipe=NAME[,NAME...]`` (default: every recipe found)."""
        yield from build_tasks(options, recipes(), keys)
    return task_build


# -- doit build recipe=NAME (dodo.py) ---------------------------------------------------------

def selected_recipes() -> list[str]:
    """Recipes named by ``recipe=a,b`` on the doit command line, or every recipe found."""
    value = get_var("recipe", None)
    if value:
        return [r for r in (part.strip() for part in value.split(",")) if r]
    return [str(p) for p in list_recipes()]


def dodo_options() -> Options:
    """The options of ``doit build``: ``keep_rootfs=1`` and ``sign=KEY`` from doit's command
    line, the directories and the signing key from the user variables (NSPAWNBUILD_OUT, _WORK,
    _CACHE, _SIGN_KEY) or their defaults."""
    return Options.from_environment(keep_rootfs=bool(get_var("keep_rootfs", "")),
                                    sign=get_var("sign", None) or None, sign_origin="sign=")


def dodo_task_build(options: Options) -> Callable[[], Iterator[TaskDict]]:
    """``task_build`` for dodo.py: the recipes doit's ``recipe=`` names, loaded with the tasks."""
    return task_creator(options, lambda: load_or_exit(selected_recipes()))
