"""The ``nspawnbuild`` command: build, validate, list and plugins.

``build`` runs the same doit tasks as ``doit build recipe=NAME`` in the project root, with an
embedded doit, so it works from any directory.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import EXIT_BAD_INPUT, NspawnbuildError, error_lines
from .paths import BUILD_LOG, default_cache

if TYPE_CHECKING:
    from rich.text import Text  # noqa: F401  (annotations)

EPILOG_BUILD = """examples:
  nspawnbuild build debian-base
  nspawnbuild build ./my-image.toml --out /srv/images
  nspawnbuild build -j 2 debian-base postgres      # two recipes in parallel
  nspawnbuild build --keep-rootfs web              # keep the tree when a post-step fails
  nspawnbuild build --json debian-base | jq -r '.[0].files[] | .sha256 + "  " + .file'

the full log of each build is out/NAME/build.log
"""


def _set_layout_env(args: argparse.Namespace) -> None:
    for attr, var in (("out", "NSPAWNBUILD_OUT"), ("work_dir", "NSPAWNBUILD_WORK"),
                      ("cache_dir", "NSPAWNBUILD_CACHE")):
        value = getattr(args, attr, None)
        if value:
            os.environ[var] = str(Path(value).absolute())


def cmd_build(args: argparse.Namespace) -> int:
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from . import tasks

    _set_layout_env(args)
    # validate before doit opens its state database, so bad input writes nothing
    recipes = tasks.load_or_exit(args.recipes)
    if args.check_reproducible:
        from . import reproduce
        from .paths import Layout

        status = 0
        for ref, recipe in zip(args.recipes, recipes, strict=True):
            status |= reproduce.check(str(recipe.path) if "/" in ref or ref.endswith(".toml")
                                      else ref, recipe.name, recipe.epoch,
                                      Layout.from_env().work / "repro", keep=args.keep)
        return status
    if args.quiet or args.json:
        os.environ["NSPAWNBUILD_QUIET"] = "1"
    if args.keep_rootfs:
        os.environ["NSPAWNBUILD_KEEP_ROOTFS"] = "1"
    loader = ModuleTaskLoader({"task_build": tasks.task_build,
                               "DOIT_CONFIG": tasks.doit_config()})
    argv = ["build", f"recipe={','.join(args.recipes)}"]
    if args.jobs > 1:
        argv[:0] = ["-n", str(args.jobs), "-P", "thread"]
    # doit's thread runner swaps sys.stdout/stderr to capture each action; two threads can leave
    # a capture object behind, so the real streams are put back before printing the summary
    streams = sys.stdout, sys.stderr
    try:
        code = DoitMain(loader, extra_config={"GLOBAL": {}}).run(argv)
    finally:
        sys.stdout, sys.stderr = streams
    if code != 0:
        return 1
    from .paths import Layout

    summaries = [build_summary(Layout.from_env().out_dir(r.name)) for r in recipes]
    if args.json:
        print(json.dumps(summaries, indent=2))
    elif not args.quiet:
        from rich.console import Console

        console = Console(highlight=False)
        for summary in summaries:
            console.print(format_summary(summary), soft_wrap=True)
    return 0


def build_summary(out: Path) -> dict[str, object]:
    """What a build published: the files with size and sha256 (from its manifest)."""
    manifest = json.loads((out / "manifest.json").read_text())
    files = [{"file": str(p.relative_to(out)), "size": p.stat().st_size}
             for p in sorted(out.rglob("*")) if p.is_file() and p.name != BUILD_LOG]
    from .install import read_sums

    digests = read_sums(out / "SHA256SUMS")
    for f in files:
        f["sha256"] = digests.get(str(f["file"]))
    return {"name": manifest["name"], "dir": str(out), "files": files,
            "tarball": manifest["artifacts"]["tarball"]["file"], "log": str(out / BUILD_LOG)}


def format_summary(summary: dict[str, object]) -> Text:
    """The table of what was published and the commands that install it (styled for a terminal)."""
    from rich.text import Text

    name, out, tarball = summary["name"], summary["dir"], summary["tarball"]
    files: list[dict[str, Any]] = summary["files"]  # type: ignore[assignment]
    width = max(len(f["file"]) for f in files)
    text = Text("\n")
    text.append(f"{name}", style="bold green").append(f": {out}\n")
    for f in files:
        text.append(f"  {f['file']:{width}} ").append(f"{_human(f['size']):>10}", style="cyan")
        text.append(f"  {f['sha256'] or ''}\n", style="dim")
    text.append(f"  build log: {summary['log']}\n", style="dim")
    zstd = str(tarball).endswith(".zst")
    text.append("install on a host (as root):\n", style="bold")
    text.append(f"  nspawnbuild install {out} --enable --start\n")
    text.append("or by hand:\n", style="bold")
    text.append("\n".join([
        (f"  zstd -dc {out}/{tarball} | machinectl import-tar - {name}   # systemd < 258"
         if zstd else f"  machinectl import-tar {out}/{tarball} {name}"),
        f"  install -D -m 0644 {out}/{name}.nspawn /etc/systemd/nspawn/{name}.nspawn",
        f"  install -D -m 0644 {out}/systemd-nspawn@{name}.service.d/50-nspawnbuild.conf "
        f"/etc/systemd/system/systemd-nspawn@{name}.service.d/50-nspawnbuild.conf",
        f"  systemctl daemon-reload && machinectl start {name}   # machinectl enable {name}: at boot",
    ]))
    return text


def cmd_validate(args: argparse.Namespace) -> int:
    from .recipe import load_recipe

    bad = 0
    for ref in args.recipes:
        try:
            recipe = load_recipe(ref)
        except NspawnbuildError as e:
            print(error_lines(e), file=sys.stderr)
            bad += 1
        else:
            print(f"ok: {recipe.path} ({recipe.name})")
    return EXIT_BAD_INPUT if bad else 0


def cmd_list(args: argparse.Namespace) -> int:
    from .recipe import list_recipes, load_recipe

    rows = []
    for path in list_recipes():
        try:
            r = load_recipe(path)
            rows.append({"name": r.name, "path": str(path), "distro": r.base["distro"],
                         "release": r.base.get("release", ""),
                         "description": r.data.get("description", "")})
        except NspawnbuildError as e:
            rows.append({"name": path.stem, "path": str(path), "error": str(e)})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            what = row.get("error", "").splitlines()[0] if "error" in row else \
                f"{row['distro']} {row['release']}  {row['description']}"
            print(f"{row['name']:24} {what}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from . import audit

    status = 0
    for ref in args.artifacts:
        path, machine = Path(ref), None
        if path.is_dir():
            try:
                manifest = json.loads((path / "manifest.json").read_text())
            except (OSError, ValueError) as e:
                print(f"error: {path}: no readable manifest.json ({e})", file=sys.stderr)
                return EXIT_BAD_INPUT
            machine = manifest["name"]
            path = path / manifest["artifacts"]["tarball"]["file"]
        if not path.is_file():
            print(f"error: {ref}: no such tarball or artifact directory", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            found = audit.audit_tarball(path, machine=machine)
        except audit.UNREADABLE as e:
            print(f"error: {path}: cannot read it as a tarball ({e})", file=sys.stderr)
            return EXIT_BAD_INPUT
        failing, allowed = audit.split(found, args.allow)
        for f in failing:
            print(f"{path}: {f}")
        for f in allowed:
            print(f"{path}: allowed: {f}")
        if failing:
            status = 1
        elif not args.quiet:
            print(f"{path}: ok ({', '.join(audit.CHECKS)})")
    return status


def cmd_cache(args: argparse.Namespace) -> int:
    from . import cache
    from .paths import Layout
    from .sizes import parse_size

    _set_layout_env(args)
    root = Layout.from_env().cache
    if args.cache_command == "prune":
        if args.older_than is None and args.max_size is None:
            print("error: cache prune needs --older-than DAYS and/or --max-size SIZE",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            limit = parse_size(args.max_size) if args.max_size else None
        except ValueError as e:
            print(f"error: --max-size: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        gone = cache.prune(root, older_than_days=args.older_than, max_size=limit,
                           dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        for entry in gone:
            print(f"{verb} {entry.kind} {entry.key[:16]} ({_human(entry.size)}, "
                  f"{entry.description})")
        print(f"{verb} {len(gone)} entries, {_human(sum(x.size for x in gone))}")
        return 0
    rows = cache.entries(root)
    if args.json:
        print(json.dumps([e.as_dict() for e in rows], indent=2))
        return 0
    import time

    for entry in rows:
        age = (time.time() - entry.last_used) / 86400
        print(f"{entry.kind:9} {entry.key[:16]}  {_human(entry.size):>8}  used {age:5.1f} days "
              f"ago  {entry.description}")
    print(f"{len(rows)} entries, {_human(sum(x.size for x in rows))} in {root}")
    return 0


def _human(n: float) -> str:
    from .sizes import human_size

    return human_size(n)


def cmd_cache_key(args: argparse.Namespace) -> int:
    from .plan import make_plan
    from .recipe import load_recipe

    for ref in args.recipes:
        plan = make_plan(load_recipe(ref))
        print(plan.bootstrap_key if len(args.recipes) == 1 else f"{plan.bootstrap_key}  {plan.name}")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from .install import install

    for line in install(Path(args.artifact_dir), name=args.name, root=Path(args.root),
                        force=args.force, enable=args.enable, start=args.start):
        print(line)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import tomli_w

    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    print(f"# {recipe.name}: resolved from {', '.join(str(p) for p in recipe.chain)}")
    print(tomli_w.dumps(recipe.data), end="")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from .paths import Layout
    from .recipe import load_recipe
    from .tree import remove_tree

    _set_layout_env(args)
    layout = Layout.from_env()
    names = [load_recipe(r).name for r in args.recipes] if args.recipes else None
    targets = ([layout.work_dir(n) for n in names] + [layout.out_dir(n) for n in names]
               if names else [layout.work, layout.out])
    for path in targets:
        if path.exists():
            remove_tree(path)
            print(f"removed {path}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import Artifact, inspect_report

    art = Artifact.open(Path(args.artifact_dir))
    print(json.dumps(art.manifest, indent=2) if args.json else inspect_report(art, args.top))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from .inspect import Artifact, diff_report

    text, differs = diff_report(Artifact.open(Path(args.a)), Artifact.open(Path(args.b)))
    print(text)
    return 1 if differs and args.exit_code else 0


def cmd_run(args: argparse.Namespace) -> int:
    from .inspect import Artifact
    from .paths import Layout
    from .run import run_image

    _set_layout_env(args)
    layout = Layout.from_env()
    target = Path(args.image)
    if not (target / "manifest.json").is_file():
        from .recipe import load_recipe

        target = layout.out_dir(load_recipe(args.image).name)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run_image(Artifact.open(target), layout.work / "run", boot=args.command_name == "boot",
                     command=command)


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import describe_plugins

    rows = describe_plugins()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        extra = []
        if row["distros"]:
            extra.append("distros: " + ", ".join(row["distros"]))
        if row["features"]:
            extra.append("features: " + ", ".join(row["features"]))
        print(f"{row['name']:12} {row['module']}  ({row['distribution'] or 'not from a distribution'})")
        if extra:
            print(f"{'':12} {'; '.join(extra)}")
        print(f"{'':12} hooks: {', '.join(h.removeprefix('nspawnbuild_') for h in row['hooks'])}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nspawnbuild",
        description="Build systemd-nspawn container images from TOML recipes.",
        epilog="Run 'nspawnbuild COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"nspawnbuild {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # every command's help ends with examples, laid out as written
    command = functools.partial(sub.add_parser,
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("build", help="build recipes into out/NAME/",
                       epilog=EPILOG_BUILD)
    p.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe name or path")
    p.add_argument("--out", help="artifact directory (default: ./out)")
    p.add_argument("--work-dir", help="work trees and build state (default: ./.nspawnbuild)")
    p.add_argument("--cache-dir", help=f"bootstrap cache (default: {default_cache()})")
    p.add_argument("--check-reproducible", action="store_true",
                   help="build twice in separate directories (other umask, TZ, locale, one CPU, "
                        "own cache) and compare; list every differing path")
    p.add_argument("--keep", action="store_true",
                   help="with --check-reproducible: keep both trees for inspection")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="build up to N tasks at once (several recipes in parallel)")
    p.add_argument("--keep-rootfs", action="store_true",
                   help="when the rootfs step fails, keep its tree (.nspawnbuild/recipes/NAME/"
                        "rootfs.failed, a copy) to look inside")
    p.add_argument("--quiet", action="store_true", help="print errors only")
    p.add_argument("--json", action="store_true",
                   help="print what was published as JSON (for scripts), nothing else")
    p.set_defaults(func=cmd_build)

    p = command("validate", help="check recipes without building",
                       epilog="example:\n  nspawnbuild validate recipes/*.toml")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.set_defaults(func=cmd_validate)

    p = command("audit", help="check image tarballs for secrets and host state",
                       epilog="examples:\n  nspawnbuild audit out/debian-base\n"
                              "  nspawnbuild audit image.tar.zst --allow 'private-key:/opt/demo/*'")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                   help="a tarball, or an artifact directory such as out/NAME")
    p.add_argument("--allow", action="append", default=[], metavar="CHECK:GLOB",
                   help="accept findings of CHECK (or any check) for paths matching GLOB")
    p.add_argument("--quiet", action="store_true", help="print findings only")
    p.set_defaults(func=cmd_audit)

    p = command("cache", help="list or prune the bootstrap and download cache",
                       epilog="examples:\n  nspawnbuild cache list\n"
                              "  nspawnbuild cache prune --older-than 30 --max-size 20G")
    p.add_argument("--cache-dir", help=f"the cache (default: {default_cache()})")
    csub = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    c = csub.add_parser("list", help="entries with size and last use")
    c.add_argument("--json", action="store_true")
    c = csub.add_parser("prune", help="remove entries by age and/or to fit a size")
    c.add_argument("--older-than", type=float, metavar="DAYS",
                   help="remove entries not used for DAYS days")
    c.add_argument("--max-size", metavar="SIZE", help="then remove the least recently used "
                   "until the cache fits SIZE (e.g. 20G)")
    c.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.set_defaults(func=cmd_cache)

    p = command("cache-key", help="print a recipe's bootstrap cache key (for CI caches)",
                       epilog="example:\n  key=$(nspawnbuild cache-key debian-base)")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.set_defaults(func=cmd_cache_key)

    p = command("install", help="install built artifacts on this host (or under --root)",
                       epilog="examples:\n  nspawnbuild install out/ollama-gpu --enable --start\n"
                              "  nspawnbuild install out/debian-base --root /mnt/target --name web1")
    p.add_argument("artifact_dir", metavar="ARTIFACT_DIR", help="a directory a build wrote, out/NAME")
    p.add_argument("--name", help="machine name on the host (default: the recipe's)")
    p.add_argument("--root", default="/", help="install into this directory tree instead of /")
    p.add_argument("--force", action="store_true", help="replace an existing machine")
    p.add_argument("--enable", action="store_true", help="start the machine at boot")
    p.add_argument("--start", action="store_true", help="start it now (needs systemd running)")
    p.set_defaults(func=cmd_install)

    p = command("inspect", help="what is in a built image: packages, sizes, settings",
                       epilog="example:\n  nspawnbuild inspect out/ollama-gpu --top 20")
    p.add_argument("artifact_dir", metavar="ARTIFACT_DIR")
    p.add_argument("--top", type=int, default=15, help="how many packages to list")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(func=cmd_inspect)

    p = command("diff", help="compare two builds: packages, files, size, settings",
                       epilog="example (CI, on a pull request):\n"
                              "  nspawnbuild diff published/debian-base out/debian-base")
    p.add_argument("a", metavar="A", help="artifact directory of the old build")
    p.add_argument("b", metavar="B", help="artifact directory of the new build")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the builds differ")
    p.set_defaults(func=cmd_diff)

    for verb, text in (("shell", "run a shell (or a command) in a built image, with its settings"),
                       ("boot", "boot a built image in systemd-nspawn, with its settings")):
        p = command(verb, help=text,
                           epilog=f"examples:\n  nspawnbuild {verb} debian-base\n"
                                  + ("  nspawnbuild shell out/debian-base -- cat /etc/os-release"
                                     if verb == "shell" else "  (press ^] three times to leave)"))
        p.add_argument("image", metavar="IMAGE", help="a recipe name or an artifact directory")
        if verb == "shell":
            p.add_argument("command", nargs="*", metavar="-- CMD",
                           help="command to run instead of a shell, after --")
        else:
            p.set_defaults(command=[])
        p.add_argument("--out", help="artifact directory (default: ./out)")
        p.add_argument("--work-dir", help="scratch space (default: ./.nspawnbuild)")
        p.set_defaults(func=cmd_run, command_name=verb)

    p = command("show", help="print a recipe fully resolved (extends applied) as TOML",
                       epilog="examples:\n  nspawnbuild show ollama-gpu\n"
                              "  nspawnbuild show ./web.toml > web-resolved.toml")
    p.add_argument("recipe", metavar="RECIPE")
    p.set_defaults(func=cmd_show)

    p = command("schema", help="print the JSON Schema of recipes (for editors)",
                       epilog="example:\n  nspawnbuild schema --output schema/recipe.schema.json"
                              "\n  (recipes then start with: #:schema ../schema/recipe.schema.json)")
    p.add_argument("--output", metavar="FILE", help="write it to FILE")
    p.set_defaults(func=cmd_schema)

    p = command("clean", help="remove work trees and artifacts (of RECIPEs, or all)",
                       epilog="examples:\n  nspawnbuild clean web      # .nspawnbuild/recipes/web "
                              "and out/web\n  nspawnbuild clean          # all of .nspawnbuild/ and "
                              "out/\nthe bootstrap cache is kept: see nspawnbuild cache prune")
    p.add_argument("recipes", nargs="*", metavar="RECIPE")
    p.add_argument("--out", help="artifact directory (default: ./out)")
    p.add_argument("--work-dir", help="work directory (default: ./.nspawnbuild)")
    p.set_defaults(func=cmd_clean)

    p = command("list", help="list the recipes found",
                       epilog="examples:\n  nspawnbuild list\n  nspawnbuild list --json | jq -c "
                              "'[.[].name]'   # a CI matrix")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = command("plugins", help="list loaded plugins, their distros and features",
                       epilog="examples:\n  nspawnbuild plugins\n  nspawnbuild plugins --json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    saved = dict(os.environ)  # commands pass options to the tasks through the environment
    try:
        return int(args.func(args))
    except NspawnbuildError as e:
        print(error_lines(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nspawnbuild plugins | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:  # so that a second call in the same process starts from the same environment
        os.environ.clear()
        os.environ.update(saved)


if __name__ == "__main__":
    sys.exit(main())
