"""The ``nspawnbuild`` commands, one module per family; each adds its own subcommands.

Every module has an ``add_<command>(command)`` function per command it owns, which makes the
subparser with ``command(name, help=..., epilog=...)`` and sets ``func`` to the handler
(``handler(args) -> exit code``). :func:`nspawnbuild.cli.make_parser` calls them in the order
``nspawnbuild --help`` lists the commands. Handlers raise
:class:`~nspawnbuild.errors.NspawnbuildError` for the user's mistakes and failed work; the CLI
turns it into ``error:`` lines and the exit code.
"""
