"""The ``nspawnbuild`` command: build, validate, list and plugins.

``build`` runs the same doit tasks as ``doit build recipe=NAME`` in the project root, with an
embedded doit, so it works from any directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import EXIT_BAD_INPUT, NspawnbuildError, error_lines
from .paths import default_cache

EPILOG_BUILD = """examples:
  nspawnbuild build debian-base
  nspawnbuild build ./my-image.toml --out /srv/images
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
    tasks.load_or_exit(args.recipes)
    loader = ModuleTaskLoader({"task_build": tasks.task_build,
                               "DOIT_CONFIG": tasks.doit_config()})
    code = DoitMain(loader, extra_config={"GLOBAL": {}}).run(
        ["build", f"recipe={','.join(args.recipes)}"])
    return 0 if code == 0 else 1


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

    p = sub.add_parser("build", help="build recipes into out/NAME/",
                       epilog=EPILOG_BUILD, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe name or path")
    p.add_argument("--out", help="artifact directory (default: ./out)")
    p.add_argument("--work-dir", help="work trees and build state (default: ./.nspawnbuild)")
    p.add_argument("--cache-dir", help=f"bootstrap cache (default: {default_cache()})")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("validate", help="check recipes without building",
                       epilog="example:\n  nspawnbuild validate recipes/*.toml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("audit", help="check image tarballs for secrets and host state",
                       epilog="examples:\n  nspawnbuild audit out/debian-base\n"
                              "  nspawnbuild audit image.tar.zst --allow 'private-key:/opt/demo/*'",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                   help="a tarball, or an artifact directory such as out/NAME")
    p.add_argument("--allow", action="append", default=[], metavar="CHECK:GLOB",
                   help="accept findings of CHECK (or any check) for paths matching GLOB")
    p.add_argument("--quiet", action="store_true", help="print findings only")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("list", help="list the recipes found")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("plugins", help="list loaded plugins, their distros and features")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except NspawnbuildError as e:
        print(error_lines(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
