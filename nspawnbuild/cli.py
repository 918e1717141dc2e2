"""The ``nspawnbuild`` command: the parser of every subcommand, and how their errors end.

Each command family lives in :mod:`nspawnbuild.commands` and adds its own subcommands; this
module puts them together in the order ``--help`` lists them and turns what a command raises
into ``error:`` lines and the exit code: 0 done, 1 a build (or check) failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from . import __version__
from .commands import artifacts, build, cache, host, hostsettings, locking, plugins, recipes
from .commands.common import AddCommand
from .errors import NspawnbuildError, error_lines

#: each command's ``add_*`` function, in the order ``nspawnbuild --help`` lists them
COMMANDS = (
    build.add_build,
    locking.add_lock,
    recipes.add_validate,
    artifacts.add_audit,
    cache.add_cache,
    recipes.add_cache_key,
    host.add_install,
    hostsettings.add_gpu_binds,
    artifacts.add_inspect,
    artifacts.add_diff,
    artifacts.add_verify,
    artifacts.add_publish,
    host.add_shell,
    host.add_boot,
    recipes.add_show,
    recipes.add_schema,
    cache.add_clean,
    recipes.add_list,
    plugins.add_plugins,
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nspawnbuild",
        description="Build systemd-nspawn container images from TOML recipes.",
        epilog="Run 'nspawnbuild COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"nspawnbuild {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # every command's help ends with examples, laid out as written
    command: AddCommand = functools.partial(sub.add_parser,
                                            formatter_class=argparse.RawDescriptionHelpFormatter)
    for add in COMMANDS:
        add(command)
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
    except BrokenPipeError:  # `nspawnbuild plugins | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
