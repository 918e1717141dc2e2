"""What one run of the build was asked to do: where things go, and how it should behave.

The command line (``nspawnbuild build --out ... --keep-rootfs``) and ``doit build recipe=NAME
keep_rootfs=1`` both end in one frozen :class:`Options` that is handed to the tasks, the
pipeline and the reporter as an argument, so that no stage reads a setting from anywhere else.

The documented variables ``NSPAWNBUILD_OUT``, ``NSPAWNBUILD_WORK`` and ``NSPAWNBUILD_CACHE``
(and ``XDG_CACHE_HOME`` for the cache's default) are read here and nowhere else: an option
given on the command line wins over the variable, the variable over the default. So are the
signing variables (``NSPAWNBUILD_SIGN_KEY``, ``NSPAWNBUILD_SIGN_PASSPHRASE_FILE``, and
``GNUPGHOME`` for the keyring a key id is looked up in): a CI secret reaches the build as one
:class:`Signing` value, never by a stage reading the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .paths import Layout

#: the user variables that move the three directories
OUT_VARIABLE = "NSPAWNBUILD_OUT"
WORK_VARIABLE = "NSPAWNBUILD_WORK"
CACHE_VARIABLE = "NSPAWNBUILD_CACHE"
#: the signing key when neither --sign nor --no-sign is given (a CI secret: a key file's path)
SIGN_KEY_VARIABLE = "NSPAWNBUILD_SIGN_KEY"
#: a file holding the signing key's passphrase, when --sign-passphrase-file is not given
SIGN_PASSPHRASE_VARIABLE = "NSPAWNBUILD_SIGN_PASSPHRASE_FILE"


def default_cache(environ: Mapping[str, str] | None = None) -> Path:
    """The cache when nothing moves it: ``$XDG_CACHE_HOME/nspawnbuild`` or ``~/.cache/...``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nspawnbuild"


def layout_from_environment(environ: Mapping[str, str] | None = None, *,
                            out: str | Path | None = None, work: str | Path | None = None,
                            cache: str | Path | None = None) -> Layout:
    """The directories: each from its option when given, else its variable, else the default
    (out/ and .nspawnbuild/ in the current directory, the user's cache). Always absolute, so
    that a later change of directory does not move them."""
    env = os.environ if environ is None else environ
    return Layout(
        out=Path(out or env.get(OUT_VARIABLE, "out")).absolute(),
        work=Path(work or env.get(WORK_VARIABLE, ".nspawnbuild")).absolute(),
        cache=Path(cache or env.get(CACHE_VARIABLE) or default_cache(env)).absolute(),
    )


@dataclass(frozen=True)
class Signing:
    """What the run was told about signing, before any key is looked up (``signing.resolve``
    does that, per recipe): the run's key wins over a recipe's ``[output] sign``."""

    #: the key from ``--sign`` or :data:`SIGN_KEY_VARIABLE`; None: each recipe's own
    key: str | None = None
    #: where :attr:`key` came from, for messages: ``--sign`` or the variable's name
    origin: str = "--sign"
    #: ``--no-sign``: publish no signature, whatever a recipe says
    disabled: bool = False
    #: a file holding the key's passphrase (absolute)
    passphrase_file: Path | None = None
    #: the caller's keyring a key id is looked up in (``GNUPGHOME``, else ``~/.gnupg``); None:
    #: gpg's own default
    gnupghome: Path | None = None
    #: the directory a relative key file of :attr:`key` is found from (the caller's)
    base: Path = Path("/")


def signing_from_environment(environ: Mapping[str, str] | None = None, *,
                             sign: str | None = None, no_sign: bool = False,
                             passphrase_file: str | Path | None = None,
                             sign_origin: str = "--sign") -> Signing:
    """The run's signing request: ``--sign`` (``sign=`` for doit, as ``sign_origin`` says)
    over :data:`SIGN_KEY_VARIABLE` (an empty variable is no variable), ``--no-sign`` over both
    and over the recipes."""
    env = os.environ if environ is None else environ
    key, origin = (sign, sign_origin) if sign else (env.get(SIGN_KEY_VARIABLE) or None,
                                                 SIGN_KEY_VARIABLE)
    phrase = passphrase_file or env.get(SIGN_PASSPHRASE_VARIABLE) or None
    home = env.get("GNUPGHOME") or str(Path.home() / ".gnupg")
    return Signing(key=None if no_sign else key, origin=origin, disabled=no_sign,
                   passphrase_file=Path(phrase).absolute() if phrase else None,
                   gnupghome=Path(home).absolute(), base=Path.cwd())


@dataclass(frozen=True)
class Options:
    """Everything a build needs to know besides its recipes; made once per run, never changed."""

    layout: Layout
    #: keep the tree of a failed rootfs step (``--keep-rootfs``, ``keep_rootfs=1``)
    keep_rootfs: bool = False
    #: print errors only (``--quiet``, ``--json``): the reporter shows no stage lines
    quiet: bool = False
    #: how many tasks may run at once (``-j N``: several recipes in parallel)
    jobs: int = 1
    #: how the published sets are signed (``--sign``, ``--no-sign``, the variables)
    signing: Signing = Signing()
    #: the lock file a build follows (``--lock FILE``); None: NAME.lock.json beside the
    #: recipe when there is one (:mod:`nspawnbuild.lockfile`)
    lock: Path | None = None
    #: False for the build ``nspawnbuild lock`` makes: it resolves afresh, ignoring any lock
    use_lock: bool = True

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, *,
                         out: str | Path | None = None, work: str | Path | None = None,
                         cache: str | Path | None = None, keep_rootfs: bool = False,
                         quiet: bool = False, jobs: int = 1, sign: str | None = None,
                         no_sign: bool = False,
                         sign_passphrase_file: str | Path | None = None,
                         sign_origin: str = "--sign", lock: str | Path | None = None,
                         use_lock: bool = True) -> Options:
        """Options from the given values, with the directories and the signing key that are
        not given taken from the user variables (``environ``, default ``os.environ``) or
        their defaults."""
        layout = layout_from_environment(environ, out=out, work=work, cache=cache)
        signing = signing_from_environment(environ, sign=sign, no_sign=no_sign,
                                           passphrase_file=sign_passphrase_file,
                                           sign_origin=sign_origin)
        return cls(layout, keep_rootfs=keep_rootfs, quiet=quiet, jobs=jobs, signing=signing,
                   lock=Path(lock).absolute() if lock else None, use_lock=use_lock)
