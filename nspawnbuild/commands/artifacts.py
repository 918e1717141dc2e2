"""The commands that read what a build wrote (out/NAME or a tarball), here or downloaded:
``audit``, ``inspect``, ``diff`` and ``verify``."""

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


EPILOG_VERIFY = """examples:
  nspawnbuild verify out/debian-base --keyring signer.gpg
  nspawnbuild verify https://images.example.invalid/debian-base/      # the host's import keyring
  nspawnbuild verify https://images.example.invalid/debian-base/debian-base.tar.xz

the keyring is binary (gpg --export KEYID > signer.gpg); by default it is the one
systemd-importd uses: /etc/systemd/import-pubring.gpg if it exists, else
/usr/lib/systemd/import-pubring.gpg (.pgp names first, as systemd 258 reads them).
exit 0: good signature and every file matches; 1: a bad signature or a file that does not
match (or is missing); 2: bad input (no such directory, the set is not signed, no keyring)
"""


def add_verify(command: AddCommand) -> None:
    p = command("verify", help="check a set's SHA256SUMS.gpg and every file, as importd does",
                epilog=EPILOG_VERIFY)
    p.add_argument("target", metavar="DIR|URL",
                   help="an artifact directory (out/NAME), or the http(s):// or file:// URL it is "
                        "served at (the directory, or a file in it such as the tarball)")
    p.add_argument("--keyring", metavar="FILE",
                   help="public keys the signature may be made by (default: the host's import "
                        "keyring)")
    p.add_argument("--max-size", default="4G", metavar="SIZE",
                   help="with a URL: the most bytes a listed file other than the manifest and "
                        "the tarball may have (default 4G; the tarball's size is the manifest's)")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from ..errors import Problem, RecipeError
    from ..sizes import parse_size
    from ..verify import default_keyring, report, verify_dir, verify_url

    try:
        max_size = parse_size(args.max_size)
    except ValueError:
        raise RecipeError(Problem(Path("--max-size"), None, f"'{args.max_size}' is not a size",
                                  "bytes, or a number with K, M, G or T, e.g. 8G")) from None
    keyring = Path(args.keyring) if args.keyring else default_keyring()
    target: str = args.target
    if "://" in target:
        outcome = verify_url(target, keyring, max_size=max_size)
    else:
        outcome = verify_dir(Path(target), keyring)
    failed = report(outcome, keyring, print)
    if failed:
        print(f"error: {target}: verification failed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    print(f"verified: {target}: a good signature and all {len(outcome.checks)} files match")
    return 0


def add_publish(command: AddCommand) -> None:
    p = command("publish", help="copy a built set into a tree a static web server serves "
                                "(DEST/NAME/BUILD/ and DEST/NAME/latest)",
                epilog="examples:\n  nspawnbuild publish out/web /srv/images\n"
                       "  nspawnbuild publish out/web /srv/images --keep 3\n"
                       "  then on a host: machinectl pull-tar "
                       "https://HOST/images/web/latest/web.tar.gz web")
    p.add_argument("artifact_dir", metavar="ARTIFACT_DIR", help="a directory a build wrote, out/NAME")
    p.add_argument("dest", metavar="DEST", help="the directory the web server (or sync) serves")
    p.add_argument("--keep", type=int, metavar="N",
                   help="keep only the N newest builds of this machine (default: all)")
    p.set_defaults(func=cmd_publish)


def cmd_publish(args: argparse.Namespace) -> int:
    from ..release import publish_tree

    if args.keep is not None and args.keep < 1:
        print("error: --keep: at least 1 (the build just published)", file=sys.stderr)
        return EXIT_BAD_INPUT
    for line in publish_tree(Path(args.artifact_dir), Path(args.dest), keep=args.keep):
        print(line)
    return 0
