"""The commands that look after what builds leave on disk: ``cache`` (list, prune) and
``clean`` (work trees and artifacts)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import EXIT_BAD_INPUT
from ..options import default_cache
from ..sizes import human_size, parse_size
from .common import AddCommand, options_from


def add_cache(command: AddCommand) -> None:
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


def cmd_cache(args: argparse.Namespace) -> int:
    from .. import cache

    root = options_from(args).layout.cache
    if args.cache_command == "prune":
        return _prune(args, root)
    rows = cache.entries(root)
    if args.json:
        print(json.dumps([e.as_dict() for e in rows], indent=2))
        return 0
    for entry in rows:
        age = (time.time() - entry.last_used) / 86400
        print(f"{entry.kind:9} {entry.key[:16]}  {human_size(entry.size):>8}  used {age:5.1f} days "
              f"ago  {entry.description}")
    print(f"{len(rows)} entries, {human_size(sum(x.size for x in rows))} in {root}")
    return 0


def _prune(args: argparse.Namespace, root: Path) -> int:
    from .. import cache

    if args.older_than is None and args.max_size is None:
        print("error: cache prune needs --older-than DAYS and/or --max-size SIZE", file=sys.stderr)
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
        print(f"{verb} {entry.kind} {entry.key[:16]} ({human_size(entry.size)}, "
              f"{entry.description})")
    print(f"{verb} {len(gone)} entries, {human_size(sum(x.size for x in gone))}")
    return 0


def add_clean(command: AddCommand) -> None:
    p = command("clean", help="remove work trees and artifacts (of RECIPEs, or all)",
                epilog="examples:\n  nspawnbuild clean web      # .nspawnbuild/recipes/web "
                       "and out/web\n  nspawnbuild clean          # all of .nspawnbuild/ and "
                       "out/\nthe bootstrap cache is kept: see nspawnbuild cache prune")
    p.add_argument("recipes", nargs="*", metavar="RECIPE")
    p.add_argument("--out", help="artifact directory (default: ./out)")
    p.add_argument("--work-dir", help="work directory (default: ./.nspawnbuild)")
    p.set_defaults(func=cmd_clean)


def cmd_clean(args: argparse.Namespace) -> int:
    from ..recipe.load import load_recipe
    from ..tree import remove_tree

    layout = options_from(args).layout
    names = [load_recipe(r).name for r in args.recipes] if args.recipes else None
    targets = ([layout.work_dir(n) for n in names] + [layout.out_dir(n) for n in names]
               if names else [layout.work, layout.out])
    for path in targets:
        if path.exists():
            remove_tree(path)
            print(f"removed {path}")
    return 0
