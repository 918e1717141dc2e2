"""``nspawnbuild build``: the same doit tasks as ``doit build recipe=NAME`` in the project root,
run by an embedded doit, so that it works from any directory; then the summary of what was
published (or ``--check-reproducible``: two builds compared)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..options import Options, default_cache
from .common import AddCommand, options_from

if TYPE_CHECKING:  # the handlers import the build machinery when they run (see commands/)
    from ..signing import SigningKey
    from ..tasks import AnyRecipe

EPILOG_BUILD = """examples:
  nspawnbuild build debian-base
  nspawnbuild build ./my-image.toml --out /srv/images
  nspawnbuild build -j 2 debian-base postgres      # two recipes in parallel
  nspawnbuild build --keep-rootfs web              # keep the tree when a post-step fails
  nspawnbuild build --sign images@example.org web  # SHA256SUMS.gpg, by a key of your keyring
  NSPAWNBUILD_SIGN_KEY=ci-key.asc nspawnbuild build web   # by an exported secret key (CI)
  nspawnbuild build --json debian-base | jq -r '.[0].files[] | .sha256 + "  " + .file'

the full log of each build is out/NAME/build.log
"""


def add_build(command: AddCommand) -> None:
    p = command("build", help="build recipes into out/NAME/", epilog=EPILOG_BUILD)
    p.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe name or path")
    p.add_argument("--out", help="artifact directory (default: ./out)")
    p.add_argument("--work-dir", help="work trees and build state (default: ./.nspawnbuild)")
    p.add_argument("--cache-dir", help=f"bootstrap cache (default: {default_cache()})")
    p.add_argument("--check-reproducible", action="store_true",
                   help="build twice, the second time varied as reprotest varies (build path, "
                        "umask, TZ, locale, CPUs, host name, HOME, variables, clock, file "
                        "order), each with its own cache, and compare; list every differing path")
    p.add_argument("--keep", action="store_true",
                   help="with --check-reproducible: keep both trees for inspection")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="build up to N tasks at once (several recipes in parallel)")
    p.add_argument("--keep-rootfs", action="store_true",
                   help="when the rootfs step fails, keep its tree (.nspawnbuild/recipes/NAME/"
                        "rootfs.failed, a copy) to look inside")
    p.add_argument("--sign", metavar="KEY",
                   help="sign SHA256SUMS (writes SHA256SUMS.gpg): a key id, fingerprint or user "
                        "id in the gpg keyring ($GNUPGHOME, else ~/.gnupg), or the path of an "
                        "exported secret key file (default: $NSPAWNBUILD_SIGN_KEY, else the "
                        "recipe's [output] sign)")
    p.add_argument("--no-sign", action="store_true",
                   help="publish no signature, whatever the recipe or the variable says")
    p.add_argument("--sign-passphrase-file", metavar="FILE",
                   help="a file holding the signing key's passphrase (default: "
                        "$NSPAWNBUILD_SIGN_PASSPHRASE_FILE)")
    p.add_argument("--lock", metavar="FILE",
                   help="install exactly the packages of this lock file, or fail naming those "
                        "the archive no longer has (default: NAME.lock.json beside the recipe, "
                        "when there is one; write one with nspawnbuild lock)")
    p.add_argument("--quiet", action="store_true", help="print errors only")
    p.add_argument("--json", action="store_true",
                   help="print what was published as JSON (for scripts), nothing else")
    p.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .. import reproduce, tasks
    from ..recipe.find import looks_like_path
    from ..summary import build_summary, format_summary

    options = options_from(args, keep_rootfs=args.keep_rootfs, quiet=args.quiet or args.json,
                           jobs=args.jobs, sign=args.sign, no_sign=args.no_sign,
                           sign_passphrase_file=args.sign_passphrase_file)
    # validate before doit opens its state database, so bad input writes nothing
    if args.lock and len(args.recipes) > 1:
        print("error: --lock: one lock file is for one recipe; build the others apart",
              file=sys.stderr)
        return 2
    recipes = tasks.load_or_exit(args.recipes)
    check_hosts(recipes)
    if args.check_reproducible:
        status = 0
        for ref, recipe in zip(args.recipes, recipes, strict=True):
            status |= reproduce.check(str(recipe.path) if looks_like_path(ref) else ref,
                                      recipe.name, recipe.epoch, options.layout.work / "repro",
                                      keep=args.keep)
        return status
    keys = tasks.signing_keys(options, recipes)  # a key that cannot sign: exit 2, no work
    uses = [options.layout.cache_use(r.name) for r in recipes]
    for use in uses:  # written again by this run's bootstrap task, if it has work to do
        use.unlink(missing_ok=True)
    if run_tasks(options, recipes, keys) != 0:
        return 1
    summaries = [build_summary(options.layout.out_dir(r.name), use)
                 for r, use in zip(recipes, uses, strict=True)]
    if args.json:
        print(json.dumps(summaries, indent=2))
    elif not args.quiet:
        console = Console(highlight=False)
        for summary in summaries:
            console.print(format_summary(summary), soft_wrap=True)
    return 0


def check_hosts(recipes: Sequence[AnyRecipe]) -> None:
    """This host can run every image's programs (natively or through a registered emulator),
    or every recipe it cannot is printed with what to install, and the command exits 2 before
    anything is written; the plan checks again for ``doit build``, which does not come here."""
    from ..errors import NspawnbuildError, error_lines
    from ..pipeline import check_host

    errors = []
    for recipe in recipes:
        try:
            check_host(recipe, notes=False)
        except NspawnbuildError as e:
            errors.append(f"{error_lines(e)} (recipe {recipe.name})")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        raise SystemExit(2)


def run_tasks(options: Options, recipes: Sequence[AnyRecipe],
              keys: dict[str, SigningKey | None] | None = None) -> int:
    """Run the build tasks of ``recipes`` with an embedded doit (signed with ``keys``, found
    beforehand); its exit code."""
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from .. import tasks

    loaded = list(recipes)
    loader = ModuleTaskLoader({"task_build": tasks.task_creator(options, lambda: loaded, keys),
                               "DOIT_CONFIG": tasks.doit_config(options)})
    argv = ["build"]
    if options.jobs > 1:
        argv[:0] = ["-n", str(options.jobs), "-P", "thread"]
    # doit's thread runner swaps sys.stdout/stderr to capture each action; two threads can leave
    # a capture object behind, so the real streams are put back before printing the summary
    streams = sys.stdout, sys.stderr
    try:
        return int(DoitMain(loader, extra_config={"GLOBAL": {}}).run(argv))
    finally:
        sys.stdout, sys.stderr = streams
