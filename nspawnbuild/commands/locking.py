"""``nspawnbuild lock``: write (or ``--update``) a recipe's package lock, NAME.lock.json.

The packages are resolved by a build of the recipe made for the lock alone, in a scratch
directory with a cache of its own (so nothing cached from an earlier day answers for the
archive of today), up to the rootfs stage: the bootstrap, the features and the post-steps
install what they would install now. The scratch directory is removed afterwards. See
:mod:`nspawnbuild.lockfile` for what a lock holds and what a build does with one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import AddCommand, options_from

if TYPE_CHECKING:
    from ..options import Options
    from ..tasks import AnyRecipe

EPILOG_LOCK = """examples:
  nspawnbuild lock debian-base              # writes recipes/debian-base.lock.json
  nspawnbuild lock --update debian-base     # resolves again, prints what changed
  nspawnbuild build debian-base             # installs the locked versions, or fails naming them
  nspawnbuild build --lock other.lock.json debian-base

the lock is resolved by a build of its own (bootstrap, features, post-steps) in a scratch
directory with its own cache: it takes as long as a first build
"""


def add_lock(command: AddCommand) -> None:
    p = command("lock", help="write NAME.lock.json beside a recipe: its exact packages",
                epilog=EPILOG_LOCK)
    p.add_argument("recipe", metavar="RECIPE", help="recipe name or path")
    p.add_argument("--update", action="store_true",
                   help="replace an existing lock with what resolves now; print what changed")
    p.add_argument("--output", metavar="FILE",
                   help="write the lock here (default: NAME.lock.json beside the recipe)")
    p.add_argument("--work-dir", help="where the scratch build goes (default: ./.nspawnbuild)")
    p.add_argument("--quiet", action="store_true", help="print errors and changes only")
    p.set_defaults(func=cmd_lock)


def resolve(options: Options, recipe: AnyRecipe) -> tuple[list[dict[str, object]],
                                                            list[dict[str, object]]]:
    """The packages and archive state a fresh build of ``recipe`` installs now (a scratch
    layout below ``options``' work directory, removed afterwards)."""
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from .. import tasks
    from ..atomic import read_json
    from ..errors import BuildError
    from ..options import Options, Signing
    from ..paths import Layout
    from ..tree import remove_tree

    scratch = options.layout.work / "lock" / recipe.name
    remove_tree(scratch)
    layout = Layout(out=scratch / "out", work=scratch / "work", cache=scratch / "cache")
    fresh = Options(layout, quiet=options.quiet, signing=Signing(disabled=True), use_lock=False)
    loader = ModuleTaskLoader({"task_build": tasks.task_creator(fresh, lambda: [recipe],
                                                                {recipe.name: None}),
                               "DOIT_CONFIG": tasks.doit_config(fresh)})
    streams = sys.stdout, sys.stderr
    try:
        status = int(DoitMain(loader, extra_config={"GLOBAL": {}}).run([f"rootfs:{recipe.name}"]))
        sys.stdout, sys.stderr = streams
        if status != 0:
            raise BuildError(f"the build that resolves the lock of {recipe.name} failed; "
                             "nothing was written")
        record = read_json(layout.work_dir(recipe.name) / "rootfs.json")
    finally:
        sys.stdout, sys.stderr = streams
        remove_tree(scratch)
    return list(record["packages"]), list(record.get("archive", []))


def cmd_lock(args: argparse.Namespace) -> int:
    from .. import lockfile, tasks
    from ..atomic import write_bytes
    from ..errors import Problem, RecipeError
    from ..pipeline import check_host

    options = options_from(args, quiet=args.quiet)
    (recipe,) = tasks.load_or_exit([args.recipe])
    check_host(recipe, notes=False)  # an emulator missing: exit 2 before anything is built
    path = Path(args.output).absolute() if args.output else lockfile.path_for(recipe.path,
                                                                              recipe.name)
    old = None
    if path.exists():
        if not args.update:
            raise RecipeError(Problem(path, None, "a lock file is already there",
                                      f"nspawnbuild lock --update {args.recipe} resolves again "
                                      "and prints what changed"))
        old = lockfile.read(path)
    packages, archive = resolve(options, recipe)
    distro = recipe.distro
    doc = lockfile.document(recipe.name, {**distro.base, "distro": distro.name,
                                          "release": distro.release, "arch": distro.arch},
                            packages, archive)
    write_bytes(path, lockfile.render(doc))
    with_digest = sum(1 for p in doc["packages"] if p.get("digest"))
    print(f"wrote {path}: {len(doc['packages'])} packages ({with_digest} with a digest)")
    if old is not None:
        lines = lockfile.changes(old.packages, doc["packages"])
        print("\n".join(lines) if lines else "no package changed")
    return 0
