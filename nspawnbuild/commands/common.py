"""What the command modules share: the type of the subparser factory, and the options made
from the directory arguments (``--out``, ``--work-dir``, ``--cache-dir``)."""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from ..options import Options


class AddCommand(Protocol):
    """``sub.add_parser`` with the CLI's formatter: makes the subparser of one command."""

    def __call__(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def options_from(args: argparse.Namespace, *, keep_rootfs: bool = False, quiet: bool = False,
                 jobs: int = 1, sign: str | None = None, no_sign: bool = False,
                 sign_passphrase_file: str | None = None) -> Options:
    """The run's options: the directories a command was given (each optional; the user
    variables and defaults fill in the others) and the flags the caller passes."""
    return Options.from_environment(out=getattr(args, "out", None),
                                    work=getattr(args, "work_dir", None),
                                    cache=getattr(args, "cache_dir", None),
                                    keep_rootfs=keep_rootfs, quiet=quiet, jobs=jobs, sign=sign,
                                    no_sign=no_sign, sign_passphrase_file=sign_passphrase_file,
                                    lock=getattr(args, "lock", None))
