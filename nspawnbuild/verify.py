"""``nspawnbuild verify DIR|URL``: is this published set the one its signer published?

The same two steps as systemd-importd's ``--verify=signature``, so that what passes here is
what a host's ``machinectl pull-tar`` accepts: ``SHA256SUMS.gpg`` must be a good signature of
``SHA256SUMS`` by a key of the keyring (by default the host's import keyring, looked up as
importd does: :data:`IMPORT_KEYRINGS`), and every file SHA256SUMS lists must match its digest
(install's own checks, :func:`nspawnbuild.install.check_listed`: manifest.json first, and the
tarball, .nspawn and drop-in it names must be listed).

A URL's set is downloaded into a private temporary directory with the project's downloader
(:func:`nspawnbuild.fetch.download`) and its bounds: SHA256SUMS and the signature at most 1 MiB
each (importd's own bound), and nothing else is downloaded before the signature is known good;
then manifest.json (16 MiB at most), the tarball (exactly the size the signed manifest gives),
and any other listed file up to ``--max-size``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .artifact import MAX_MANIFEST_BYTES, NOT_AN_ARTIFACT, read_bounded
from .errors import BuildError, Problem, RecipeError
from .fetch import DEFAULT_MAX_SIZE, DownloadFailed, LimitExceeded, Limits, download, local_path
from .install import MAX_SUMS_BYTES, FileCheck, check_listed, read_sums
from .signing import SIGNATURE, Verdict, read_keyring, verify_signature
from .tree import remove_tree

SUMS = "SHA256SUMS"
#: the keyrings systemd-importd verifies with, the first that exists (systemd <= 257 knows only
#: the two .gpg names: /etc's, if it exists, replaces the vendor's; 258 reads .pgp first)
IMPORT_KEYRINGS = (Path("/etc/systemd/import-pubring.pgp"), Path("/etc/systemd/import-pubring.gpg"),
                   Path("/usr/lib/systemd/import-pubring.pgp"),
                   Path("/usr/lib/systemd/import-pubring.gpg"))
#: the last components that make a URL name a file of the set rather than its directory
FILE_SUFFIXES = (".tar", ".tar.zst", ".tar.xz", ".tar.gz", ".nspawn", ".json", SUMS, SIGNATURE)
NOT_SIGNED = "sign it with build --sign KEY"
Say = Callable[[str], None]


def default_keyring(candidates: tuple[Path, ...] = IMPORT_KEYRINGS) -> Path:
    """The host's import keyring, as systemd-importd picks it; RecipeError when it has none."""
    for path in candidates:
        if path.exists():
            return path
    raise RecipeError(Problem(Path("--keyring"), None, "this host has no import keyring ("
                              + ", ".join(map(str, candidates)) + ")",
                              "give the signer's public keys with --keyring FILE "
                              "(gpg --export KEYID > FILE)"))


@dataclass(frozen=True)
class Outcome:
    """A verification's result: the signature's verdict and each file's check."""

    verdict: Verdict
    checks: tuple[FileCheck, ...] = ()
    #: why a file of a URL's set is missing: {name: the download's error}
    not_fetched: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.verdict.good and all(c.ok for c in self.checks)


def _signature(directory: Path, keyring: Path, where: str) -> Verdict:
    """The verdict on ``directory``'s SHA256SUMS.gpg; RecipeError (exit 2) when the set is not
    there or not signed at all, which is a wrong input rather than a failed check."""
    if not directory.is_dir():
        raise RecipeError(Problem(Path(where), None, "no such directory", NOT_AN_ARTIFACT))
    sums, sig = directory / SUMS, directory / SIGNATURE
    if not sums.is_file():
        raise RecipeError(Problem(Path(where), None, "no SHA256SUMS here", NOT_AN_ARTIFACT))
    if not sig.is_file():
        raise RecipeError(Problem(Path(where), None, "no SHA256SUMS.gpg: the set is not signed",
                                  NOT_SIGNED))
    return verify_signature(read_bounded(sums, MAX_SUMS_BYTES), read_bounded(sig, MAX_SUMS_BYTES),
                            read_keyring(keyring))


def verify_dir(directory: Path, keyring: Path, *, where: str | None = None,
               verdict: Verdict | None = None,
               not_fetched: dict[str, str] | None = None) -> Outcome:
    """Check the set in ``directory``: its signature (unless ``verdict`` is that already),
    then, only when it is good, every file."""
    verdict = verdict or _signature(directory, keyring, where or str(directory))
    if not verdict.good:
        return Outcome(verdict)
    _, checks = check_listed(directory, read_sums(directory / SUMS), keep_going=True)
    return Outcome(verdict, tuple(checks), tuple((not_fetched or {}).items()))


def base_url(url: str) -> str:
    """The directory URL of a set: ``url`` itself when it ends in ``/`` or names no file of a
    set, else its parent (``.../NAME/NAME.tar.xz``, the URL pull-tar takes, gives
    ``.../NAME/``)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    if not path.endswith("/"):
        last = path.rsplit("/", 1)[-1]
        path = path[:-len(last)] if last.endswith(FILE_SUFFIXES) else path + "/"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _get(base: str, name: str, dest: Path, limit: int) -> None:
    url = urllib.parse.urljoin(base, urllib.parse.quote(name))
    try:
        download(url, dest, Limits(max_size=limit))
    except LimitExceeded:
        raise BuildError(f"{url} is larger than {limit} bytes, more than a set of this build "
                         f"has; nothing was verified") from None


def verify_url(url: str, keyring: Path, *, max_size: int = DEFAULT_MAX_SIZE) -> Outcome:
    """Download the set at ``url`` into a private temporary directory and check it there; a
    ``file://`` URL is checked in place."""
    with fetched(url, keyring, max_size=max_size) as (_, outcome):
        return outcome


@contextmanager
def fetched(url: str, keyring: Path, *,
            max_size: int = DEFAULT_MAX_SIZE) -> Iterator[tuple[Path, Outcome]]:
    """The set at ``url``, checked, as ``(directory, outcome)``: a private temporary directory
    holding what was downloaded (removed on leaving), or a ``file://`` URL's own directory.
    The files are downloaded only once the signature is good; ``install URL`` installs from
    the directory when ``outcome.ok``."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "file":
        path = Path(local_path(url))
        directory = path if path.is_dir() else path.parent
        yield directory, verify_dir(directory, keyring, where=url)
        return
    if scheme not in ("http", "https"):
        raise RecipeError(Problem(Path(url), None, "not a directory or an http://, https:// or "
                                  "file:// URL", "give out/NAME or the URL it is served at"))
    base = base_url(url)
    tmp = Path(tempfile.mkdtemp(prefix="nspawnbuild-verify-"))
    try:
        for name in (SUMS, SIGNATURE):
            try:
                _get(base, name, tmp / name, MAX_SUMS_BYTES)
            except DownloadFailed as e:
                if e.status != 404:
                    raise
                what = ("no SHA256SUMS.gpg: the set is not signed" if name == SIGNATURE
                        else "no SHA256SUMS there")
                raise RecipeError(Problem(Path(base), None, what, NOT_SIGNED if name == SIGNATURE
                                          else "give the URL of a directory a build wrote "
                                          "(out/NAME served as it is)")) from None
        verdict = _signature(tmp, keyring, base)
        if not verdict.good:
            yield tmp, Outcome(verdict)
            return
        yield tmp, verify_dir(tmp, keyring, where=base, verdict=verdict,
                              not_fetched=_fetch_listed(base, tmp))
    finally:
        remove_tree(tmp)


def _fetch_listed(base: str, tmp: Path) -> dict[str, str]:
    """Download every file the (signed) SHA256SUMS lists into ``tmp``; {name: why} of those
    that could not be. The tarball is bounded by the size the manifest gives, once the
    manifest's own digest matched."""
    sums = read_sums(tmp / SUMS)
    failed: dict[str, str] = {}
    sizes: dict[str, int] = {}
    order = sorted(sums, key=lambda n: n != "manifest.json")
    for name in order:
        dest = tmp / PurePosixPath(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        limit = MAX_MANIFEST_BYTES if name == "manifest.json" else sizes.get(name, DEFAULT_MAX_SIZE)
        try:
            _get(base, name, dest, limit)
        except BuildError as e:  # DownloadFailed, or past its bound
            failed[name] = str(e)
            continue
        if name == "manifest.json" and hashlib.sha256(dest.read_bytes()).hexdigest() == sums[name]:
            try:
                tarball = json.loads(dest.read_bytes())["artifacts"]["tarball"]
                sizes[str(tarball["file"])] = int(tarball["size"])
            except (ValueError, KeyError, TypeError):
                pass  # check_listed reports a manifest it cannot read
    return failed


def report(outcome: Outcome, keyring: Path, say: Say) -> list[str]:
    """Print the verdict and each file's line; return what failed (empty: all good)."""
    v = outcome.verdict
    if v.good:
        say(f"signature  good: SHA256SUMS signed by {v.fingerprint} ({v.user_id}), "
            f"a key of {keyring}")
    else:
        say(f"SIGNATURE  {v.detail} (keyring {keyring}); the files were not checked, "
            "as SHA256SUMS cannot be trusted")
        return [f"the signature: {v.detail}"]
    missing = dict(outcome.not_fetched)
    failed = []
    for c in outcome.checks:
        if c.ok:
            say(f"OK         {c.name}")
        elif c.actual is None:
            why = missing.get(c.name) or c.error or "missing"
            say(f"MISSING    {c.name}: {why}")
            failed.append(f"{c.name} is missing")
        else:
            say(f"MISMATCH   {c.name}: expected {c.expected}, got {c.actual}")
            failed.append(f"{c.name} does not match SHA256SUMS")
    return failed
