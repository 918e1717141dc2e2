"""The commands, one module per family; each adds its subcommands to the parser.

A command module imports at its top only what its parser needs; each handler imports the
modules it runs when it runs, so that ``nspawnbuild --help`` or ``validate`` does not load doit,
rich and the build machinery. (The import graph in tests/test_architecture.py counts these
imports like any other.)
"""
