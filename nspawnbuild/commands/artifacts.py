"""The commands that read what a build wrote (out/NAME or a tarball), here or downloaded:
``audit``, ``inspect`` and ``diff``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import EXIT_BAD_INPUT
from .common import AddCommand


def add_audit(command: AddCommand) -> None:
    p = command("audit", help="check image tarballs for secrets and host state",
                epilog="examples:\n  nspawnbuild audit out/debian-base\n"
                       "  nspawnbuild audit image.tar.zst --allow 'private-key:/opt/demo/*'")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                   help="a tarball, or an artifact directory such as out/NAME")
    p.add_argument("--allow", action="append", default=[], metavar="CHECK:GLOB",
                   help="accept findings of CHECK (or any check) for paths matching GLOB")
    p.add_argument("--quiet", action="store_true", help="print findings only")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    from .. import audit
    from ..artifact import audit_target

    status = 0
    for ref in args.artifacts:
        path, machine = audit_target(ref)
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


def add_inspect(command: AddCommand) -> None:
    p = command("inspect", help="what is in a built image: packages, sizes, settings",
                epilog="example:\n  nspawnbuild inspect out/ollama-gpu --top 20")
    p.add_argument("artifact_dir", metavar="ARTIFACT_DIR")
    p.add_argument("--top", type=int, default=15, help="how many packages to list")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..artifact import Artifact, inspect_report

    art = Artifact.open(Path(args.artifact_dir))
    print(json.dumps(art.manifest, indent=2) if args.json else inspect_report(art, args.top))
    return 0


def add_diff(command: AddCommand) -> None:
    p = command("diff", help="compare two builds: packages, files, size, settings",
                epilog="example (CI, on a pull request):\n"
                       "  nspawnbuild diff published/debian-base out/debian-base")
    p.add_argument("a", metavar="A", help="artifact directory of the old build")
    p.add_argument("b", metavar="B", help="artifact directory of the new build")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the builds differ")
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    from ..artifact import Artifact, diff_report

    text, differs = diff_report(Artifact.open(Path(args.a)), Artifact.open(Path(args.b)))
    print(text)
    return 1 if differs and args.exit_code else 0
