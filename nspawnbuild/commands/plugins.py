"""``nspawnbuild plugins``: the loaded plugins, and the distros and features each provides."""

from __future__ import annotations

import argparse
import json

from .common import AddCommand


def add_plugins(command: AddCommand) -> None:
    p = command("plugins", help="list loaded plugins, their distros and features",
                epilog="examples:\n  nspawnbuild plugins\n  nspawnbuild plugins --json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)


def cmd_plugins(args: argparse.Namespace) -> int:
    from ..plugins import describe_plugins

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
        for feature, methods in row["methods"].items():
            print(f"{'':12} {feature}: {', '.join(methods) or 'nothing yet'}")
        for distro, traits in row["traits"].items():
            print(f"{'':12} {distro}: traits for {', '.join(traits) or 'no feature'}")
    return 0
