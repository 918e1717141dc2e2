"""OpenPGP signatures of a published set: ``SHA256SUMS.gpg``, made and checked with gpg.

A host that pulls an image (``machinectl pull-tar``, whose default is ``--verify=signature``)
trusts ``SHA256SUMS`` only with a detached signature ``SHA256SUMS.gpg`` beside it that a key of
its import keyring made; every other file is then trusted through its digest in ``SHA256SUMS``.
So one signature of that one file is all a set needs, and it is made last, from the very bytes
that are published.

What the user names as the key (``--sign KEY``, ``NSPAWNBUILD_SIGN_KEY``, ``[output] sign``)
is one of two things, decided by :func:`classify` before gpg is asked anything:

- a file that exists (relative to the current directory, or to the recipe for ``[output]
  sign``): an exported secret key (armored or binary, ``gpg --export-secret-keys``), the form a
  CI secret takes. It is imported into a private, temporary GNUPGHOME (mode 0700, outside out/
  and every image, removed with its gpg-agent afterwards), so the caller's keyring is never
  touched;
- anything else: a key id, fingerprint or user id in the caller's keyring (``GNUPGHOME``, else
  ``~/.gnupg``). A value that looks like a path (it has a ``/`` or ends in ``.asc``, ``.gpg``,
  ``.key``, ``.pgp``, ``.sec``) but names no file is an error, not a user id.

:func:`resolve` checks the key before the build does any work (found, exactly one, able to
sign, not expired, and a trial signature made: a key that needs a passphrase fails here, with
how to give one), so that a bad key is exit 2 with nothing written. Its fingerprint is what the
build's up-to-date check compares: another key re-signs, the same key does nothing.

:func:`verify_signature` checks a signature the way systemd-importd does (``gpg --no-options
--no-default-keyring --batch --trust-model=always --keyring=K --verify``, in a throwaway
GNUPGHOME): any key of the keyring is trusted, none other.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError, Problem, RecipeError
from .fetch import Refused, confine

#: the name of the signature beside SHA256SUMS, as systemd-importd looks for it
SIGNATURE = "SHA256SUMS.gpg"
#: endings that make a value a key file's path (when no file is there: an error, not a user id)
KEY_FILE_SUFFIXES = (".asc", ".gpg", ".key", ".pgp", ".sec")
#: the most bytes a key file, a keyring or a signature may have: far more than a real one
MAX_KEY_BYTES = 16 << 20
#: seconds one gpg call may take (it never waits for a person: --batch, loopback pinentry)
GPG_TIMEOUT = 120
LIST_KEYS = "gpg --list-secret-keys"
#: what gpg says on its way that explains no failure (a new keyring's files being made)
_NOISE = re.compile(r"(keybox|trustdb|directory) .*created|trustdb created|WARNING: unsafe")
EXPORT_HINT = ("gpg --armor --export-secret-keys KEYID > signing-key.asc exports one for "
               "--sign FILE or NSPAWNBUILD_SIGN_KEY")
PASSPHRASE_HINT = ("the key needs a passphrase: give a file holding it with "
                   "--sign-passphrase-file FILE (or NSPAWNBUILD_SIGN_PASSPHRASE_FILE=FILE), or "
                   "sign with a key without one")


@dataclass(frozen=True)
class Origin:
    """Where a signing key was named (an option, a variable, a recipe's key), for messages."""

    file: Path
    key: str | None = None
    line: int | None = None

    def problem(self, message: str, hint: str | None = None) -> Problem:
        return Problem(self.file, self.key, message, hint, self.line)


@dataclass(frozen=True)
class SigningKey:
    """A key that was found and made a trial signature: what the manifest stage signs with."""

    #: what the user wrote (a key id, a fingerprint, a user id or a file's path)
    spec: str
    #: the primary key's fingerprint: the identity the up-to-date check compares
    fingerprint: str
    #: its first user id, for messages and the summary
    user_id: str
    #: an exported secret key file (imported into a private GNUPGHOME to sign), or None
    file: Path | None
    #: the keyring a key id is looked up in (None: gpg's own default)
    homedir: Path | None
    passphrase_file: Path | None = None

    def state(self) -> dict[str, str | None]:
        """What a change of re-signs: the key itself, not how it was named."""
        return {"fingerprint": self.fingerprint}


def classify(spec: str, base: Path) -> Path | None:
    """The exported key file ``spec`` names (absolute), or None for a key in a keyring.

    The rule (README, "Signing"): a path to an existing regular file is a key file; a value
    that looks like a path but names nothing is an error (a typo must not turn into a user id
    gpg then does not find, or worse, finds); anything else is a key id, fingerprint or user
    id."""
    path = Path(spec)  # no ~: the shell expands it on a command line, a recipe spells it out
    path = path if path.is_absolute() else base / path
    if path.is_file():
        return path.absolute()
    if path.exists():
        raise ValueError(f"{path} is not a regular file (a keyring directory is not a key: "
                         "use GNUPGHOME=DIR with a key id, or an exported key file)")
    if "/" in spec or spec.lower().endswith(KEY_FILE_SUFFIXES):
        raise ValueError(f"no key file {path}")
    return None


# -- gpg --------------------------------------------------------------------------------------

def _gpg(argv: Sequence[str], homedir: Path | None, *, stdin: bytes | None = None,
         what: str) -> subprocess.CompletedProcess[bytes]:
    """Run gpg in batch mode with ``homedir`` (None: its default); a missing gpg is one line."""
    gpg = shutil.which("gpg")
    if gpg is None:
        raise BuildError(f"'gpg' is not installed on this host but is needed to {what}; install "
                         "it with: apt-get install gpg")
    home = ["--homedir", str(homedir)] if homedir is not None else []
    try:
        return subprocess.run([gpg, *home, "--batch", "--no-tty", *argv], input=stdin,
                              capture_output=True, timeout=GPG_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"gpg did not finish within {GPG_TIMEOUT} s while trying to {what}; "
                         "check that no gpg-agent is hanging (gpgconf --kill gpg-agent)") from None


def _said(done: subprocess.CompletedProcess[bytes]) -> str:
    """gpg's own complaint, in one line (its last few lines of stderr)."""
    lines = [ln.strip().removeprefix("gpg: ") for ln in
             done.stderr.decode("utf-8", "replace").splitlines()
             if ln.strip() and not _NOISE.search(ln)]
    return "; ".join(lines[-3:]) or f"gpg exited with {done.returncode}"


@contextlib.contextmanager
def private_gnupghome() -> Iterator[Path]:
    """A new GNUPGHOME only this process may enter (0700), in the temporary directory (never
    out/ or an image); its gpg-agent is stopped and the directory removed afterwards, so an
    imported secret key outlives nothing."""
    home = Path(tempfile.mkdtemp(prefix="nspawnbuild-gnupg-"))
    try:
        os.chmod(home, 0o700)
        yield home
    finally:
        gpgconf = shutil.which("gpgconf")
        if gpgconf is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([gpgconf, "--homedir", str(home), "--kill", "all"],
                               capture_output=True, timeout=30, check=False)
        shutil.rmtree(home, ignore_errors=True)


@dataclass(frozen=True)
class _Key:
    fingerprint: str
    user_id: str
    validity: str
    capabilities: str


def _secret_keys(homedir: Path | None, spec: str | None) -> list[_Key] | str:
    """The secret keys of ``homedir`` that ``spec`` names (all of them for None), or gpg's
    complaint when it finds none."""
    done = _gpg(["--with-colons", "--fixed-list-mode", "--list-secret-keys",
                 *(["--", spec] if spec is not None else [])], homedir,
                what="look up the signing key")
    keys: list[_Key] = []
    current: dict[str, str] = {}
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if fields[0] == "sec":
            if current:
                keys.append(_Key(**current))
            current = {"fingerprint": "", "user_id": "", "validity": fields[1],
                       "capabilities": fields[11] if len(fields) > 11 else ""}
        elif current and fields[0] == "fpr" and not current["fingerprint"]:
            current["fingerprint"] = fields[9]
        elif current and fields[0] == "uid" and not current["user_id"]:
            current["user_id"] = fields[9]
    if current:
        keys.append(_Key(**current))
    return keys if keys or done.returncode == 0 else _said(done)


def _sign(homedir: Path | None, fingerprint: str, data: bytes | Path, output: Path | None,
          passphrase_file: Path | None) -> subprocess.CompletedProcess[bytes]:
    """``gpg --detach-sign`` (binary, as importd reads it) of ``data`` (bytes or a file)."""
    argv = ["--yes", "--pinentry-mode", "loopback", "--local-user", fingerprint]
    if passphrase_file is not None:
        argv += ["--passphrase-file", str(passphrase_file)]
    argv += ["--detach-sign", "--output", str(output) if output else "-"]
    if isinstance(data, Path):
        return _gpg([*argv, "--", str(data)], homedir, what="sign SHA256SUMS")
    return _gpg(argv, homedir, stdin=data, what="sign SHA256SUMS")


def _import(homedir: Path, key_file: Path, origin: Origin) -> None:
    done = _gpg(["--import", "--", str(key_file)], homedir, what="import the signing key")
    found = _secret_keys(homedir, None)
    if done.returncode != 0 and not (isinstance(found, list) and found):
        raise RecipeError(origin.problem(f"gpg cannot import {key_file} as a key: {_said(done)}",
                                         "give an exported secret key (" + EXPORT_HINT + ")"))


def _check_passphrase_file(path: Path | None, origin: Origin) -> None:
    if path is not None and not path.is_file():
        raise RecipeError(origin.problem(f"the passphrase file {path} does not exist or is not "
                                         "a regular file", "give a file holding the passphrase"))


def resolve(spec: str, origin: Origin, *, base: Path, homedir: Path | None,
            passphrase_file: Path | None = None, confined: bool = False) -> SigningKey:
    """The key ``spec`` names, checked as the build will use it; :class:`RecipeError` (exit 2)
    saying which key, where it was looked up and how to fix it when it cannot sign.

    ``base`` is the directory a relative key file is found from; ``homedir`` the caller's
    keyring (``GNUPGHOME`` or ``~/.gnupg``, None for gpg's default). ``confined``: a key file
    must be inside ``base`` (a recipe's, which reads no file outside its directory)."""
    try:
        key_file = classify(spec, base)
        if key_file is not None and confined:
            key_file = confine(base, str(key_file))
    except Refused as e:
        raise RecipeError(origin.problem(f"signing key file: {e}",
                                         f"{e.hint}; or give it with --sign FILE or "
                                         "NSPAWNBUILD_SIGN_KEY, which may name any file")) from None
    except ValueError as e:
        raise RecipeError(origin.problem(f"signing key '{spec}': {e}",
                                         "a key is a key id, fingerprint or user id in the "
                                         f"keyring ({LIST_KEYS} lists them), or the path of an "
                                         f"exported secret key file; {EXPORT_HINT}")) from None
    _check_passphrase_file(passphrase_file, origin)
    if key_file is not None:
        with private_gnupghome() as home:
            _import(home, key_file, origin)
            key = _one_key(home, None, spec, origin, f"the key file {key_file}")
            _trial(home, key, spec, origin, passphrase_file)
        return SigningKey(spec, key.fingerprint, key.user_id, key_file, None, passphrase_file)
    where = f"the keyring {homedir}" if homedir else "gpg's default keyring"
    if homedir is not None and not homedir.is_dir():
        raise RecipeError(origin.problem(
            f"signing key '{spec}': {where} does not exist",
            "set GNUPGHOME to the directory of the keyring that holds the key, or give an "
            f"exported secret key file; {EXPORT_HINT}"))
    key = _one_key(homedir, spec, spec, origin, where)
    _trial(homedir, key, spec, origin, passphrase_file)
    return SigningKey(spec, key.fingerprint, key.user_id, None, homedir, passphrase_file)


def _one_key(homedir: Path | None, lookup: str | None, spec: str, origin: Origin,
             where: str) -> _Key:
    """The one usable secret key ``lookup`` names in ``homedir`` (None: the only one there)."""
    found = _secret_keys(homedir, lookup)
    listing = f"gpg --homedir {homedir} --list-secret-keys" if homedir else LIST_KEYS
    if isinstance(found, str) or not found:
        why = f" (gpg: {found})" if isinstance(found, str) else ""
        raise RecipeError(origin.problem(
            f"signing key '{spec}': no secret key in {where}{why}",
            f"{listing} lists the keys there; import yours with gpg --import FILE, or give an "
            f"exported secret key file; {EXPORT_HINT}" if lookup else
            "export a secret key, not a public one: " + EXPORT_HINT))
    if len(found) > 1:
        names = ", ".join(f"{k.fingerprint} ({k.user_id})" for k in found)
        raise RecipeError(origin.problem(
            f"signing key '{spec}': {len(found)} secret keys in {where} match: {names}",
            "name one by its fingerprint" if lookup else "export only the signing key"))
    key = found[0]
    if key.validity in ("e", "r", "d", "i"):
        state = {"e": "expired", "r": "revoked", "d": "disabled", "i": "invalid"}[key.validity]
        raise RecipeError(origin.problem(
            f"signing key '{spec}' ({key.fingerprint}) in {where} is {state}",
            "extend it (gpg --quick-set-expire FPR 1y) or sign with another key"))
    if "S" not in key.capabilities:
        raise RecipeError(origin.problem(
            f"signing key '{spec}' ({key.fingerprint}) in {where} has no usable signing (sub)key",
            "add one (gpg --quick-add-key FPR ed25519 sign) or sign with another key"))
    return key


def _trial(homedir: Path | None, key: _Key, spec: str, origin: Origin,
           passphrase_file: Path | None) -> None:
    """Sign a few bytes as the build will sign SHA256SUMS: a key that needs a passphrase, a
    secret key that is only a stub (on a card), or a broken agent fails here, before any
    work."""
    done = _sign(homedir, key.fingerprint, b"nspawnbuild trial signature\n", None,
                 passphrase_file)
    if done.returncode == 0 and done.stdout:
        return
    said = _said(done)
    needs_passphrase = re.search(r"passphrase|pinentry|can't get input",
                                 done.stderr.decode("utf-8", "replace"), re.I)
    raise RecipeError(origin.problem(
        f"signing key '{spec}' ({key.fingerprint}) cannot sign: gpg: {said}",
        ("a wrong passphrase: check the passphrase file" if passphrase_file else PASSPHRASE_HINT)
        if needs_passphrase else "check it with: gpg --sign --local-user " + key.fingerprint))


def sign(key: SigningKey, sums: Path, dest: Path) -> None:
    """Write ``dest``, the detached binary signature of the file ``sums``, made by ``key``
    (imported again into a private GNUPGHOME when it is a file). ``dest`` must be a new,
    empty file (``atomic.replacing``): gpg overwrites it (``--yes``)."""
    if key.file is not None:
        with private_gnupghome() as home:
            _import(home, key.file, Origin(key.file))
            done = _sign(home, key.fingerprint, sums, dest, key.passphrase_file)
    else:
        done = _sign(key.homedir, key.fingerprint, sums, dest, key.passphrase_file)
    if done.returncode != 0 or dest.stat().st_size == 0:
        raise BuildError(f"gpg could not sign {sums} with {key.fingerprint} ({key.spec}): "
                         f"{_said(done)}; the previous artifacts are unchanged")


# -- verification -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """What gpg said of a signature: good or not, by which key, and why not."""

    good: bool
    fingerprint: str | None
    user_id: str | None
    detail: str


def read_keyring(keyring: Path) -> bytes:
    """A keyring's bytes for :func:`verify_signature`: binary, as importd reads it (gpg
    --keyring takes no armored file), at most :data:`MAX_KEY_BYTES`; RecipeError otherwise."""
    hint = ("a keyring is a file of public keys in binary form: "
            "gpg --export KEYID > pubring.gpg")
    try:
        with open(keyring, "rb") as fh:
            data = fh.read(MAX_KEY_BYTES + 1)
    except FileNotFoundError:
        raise RecipeError(Problem(keyring, None, "no such keyring", hint)) from None
    except OSError as e:
        raise RecipeError(Problem(keyring, None, f"cannot read it ({e.strerror})", hint)) from None
    if len(data) > MAX_KEY_BYTES:
        raise RecipeError(Problem(keyring, None, f"larger than {MAX_KEY_BYTES} bytes", hint))
    if data.lstrip().startswith(b"-----BEGIN PGP"):
        raise RecipeError(Problem(keyring, None, "is armored (ASCII); systemd-importd and gpg "
                                  "--keyring read only binary keyrings",
                                  f"convert it: gpg --dearmor < {keyring} > pubring.gpg"))
    if not data:
        raise RecipeError(Problem(keyring, None, "is empty", hint))
    return data


def verify_signature(data: bytes, signature: bytes, keyring: bytes) -> Verdict:
    """Check ``signature`` (detached) of ``data`` against the keys of ``keyring`` (its bytes),
    with importd's own gpg options in a throwaway GNUPGHOME that holds a copy of the keyring
    (gpg may leave lock files beside a keyring; the caller's stays untouched)."""
    with private_gnupghome() as home:
        (home / "keyring.gpg").write_bytes(keyring)
        (home / "data.sig").write_bytes(signature)
        done = _gpg(["--no-options", "--no-default-keyring", "--no-auto-key-locate",
                     "--no-auto-check-trustdb", "--trust-model=always",
                     f"--keyring={home / 'keyring.gpg'}", "--status-fd=1",
                     "--verify", str(home / "data.sig"), "-"], home, stdin=data,
                    what="verify SHA256SUMS.gpg")
    status = done.stdout.decode("utf-8", "replace").splitlines()
    fields = {line.split()[1]: line.split()[2:] for line in status
              if line.startswith("[GNUPG:] ") and len(line.split()) > 1}
    fpr = fields["VALIDSIG"][-1] if fields.get("VALIDSIG") else None
    who = " ".join(fields.get("GOODSIG", [])[1:]) or None
    if done.returncode == 0 and "GOODSIG" in fields:
        return Verdict(True, fpr, who, "good signature")
    if "BADSIG" in fields:
        detail = "BAD signature: SHA256SUMS was changed after it was signed"
    elif "NO_PUBKEY" in fields:
        key_id = fields["NO_PUBKEY"][0] if fields["NO_PUBKEY"] else "?"
        detail = f"made by key {key_id}, which is not in the keyring"
    elif "EXPKEYSIG" in fields or "REVKEYSIG" in fields:
        detail = "made by a key that has expired or was revoked"
    elif "NODATA" in fields:
        detail = "SHA256SUMS.gpg is not an OpenPGP signature"
    else:
        detail = f"not verified: {_said(done)}"
    return Verdict(False, fpr, who, detail)
