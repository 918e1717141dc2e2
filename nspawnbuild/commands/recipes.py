"""The commands about recipes themselves, none of which builds anything: ``validate``,
``list``, ``show``, ``schema`` and ``cache-key``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import EXIT_BAD_INPUT, NspawnbuildError, error_lines
from .common import AddCommand


def add_validate(command: AddCommand) -> None:
    p = command("validate", help="check recipes without building",
                epilog="example:\n  nspawnbuild validate recipes/*.toml")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..recipe.load import load_recipe

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


def add_cache_key(command: AddCommand) -> None:
    p = command("cache-key", help="print a recipe's bootstrap cache key (for CI caches)",
                epilog="example:\n  key=$(nspawnbuild cache-key debian-base)")
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.set_defaults(func=cmd_cache_key)


def cmd_cache_key(args: argparse.Namespace) -> int:
    from .. import lockfile
    from ..plan import make_plan
    from ..recipe.load import load_recipe

    for ref in args.recipes:
        recipe = load_recipe(ref)
        lock_path = lockfile.path_for(recipe.path, recipe.name)
        if lock_path.is_file():  # a build follows the lock beside the recipe: so does its key
            recipe.distro.pins = lockfile.read(lock_path).pins()
        plan = make_plan(recipe)
        print(plan.bootstrap_key if len(args.recipes) == 1 else f"{plan.bootstrap_key}  {plan.name}")
    return 0


def add_show(command: AddCommand) -> None:
    p = command("show", help="print a recipe fully resolved (extends applied) as TOML",
                epilog="examples:\n  nspawnbuild show ollama-gpu\n"
                       "  nspawnbuild show ./web.toml > web-resolved.toml")
    p.add_argument("recipe", metavar="RECIPE")
    p.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    import tomli_w

    from ..plan import plain
    from ..recipe.load import load_recipe

    recipe = load_recipe(args.recipe)
    print(f"# {recipe.name}: resolved from {', '.join(str(p) for p in recipe.chain)}")
    print(tomli_w.dumps(plain(recipe.data)), end="")
    return 0


def add_schema(command: AddCommand) -> None:
    p = command("schema", help="print the JSON Schema of recipes (for editors)",
                epilog="example:\n  nspawnbuild schema --output schema/recipe.schema.json"
                       "\n  (recipes then start with: #:schema ../schema/recipe.schema.json)")
    p.add_argument("--output", metavar="FILE", help="write it to FILE")
    p.set_defaults(func=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    from ..recipe.load import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def add_list(command: AddCommand) -> None:
    p = command("list", help="list the recipes found",
                epilog="examples:\n  nspawnbuild list\n  nspawnbuild list --json | jq -c "
                       "'[.[].name]'   # a CI matrix")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from ..recipe.find import list_recipes
    from ..recipe.load import load_recipe

    rows: list[dict[str, str]] = []
    for path in list_recipes():
        try:
            r = load_recipe(path)
            rows.append({"name": r.name, "path": str(path), "distro": r.base["distro"],
                         "release": r.base.get("release", ""), "description": r.description})
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
