"""``nspawnbuild install URL``: pull a published set and install it in one checked step.

What ``machinectl pull-tar URL`` does with its default ``--verify=signature``, and what it
leaves out: the set (SHA256SUMS, SHA256SUMS.gpg, then the files) is downloaded into a private
temporary directory by :func:`nspawnbuild.verify.fetched`, the signature checked with the
host's import keyring (or ``--keyring``), every file against SHA256SUMS, and only then is the
set installed as a local one (:func:`nspawnbuild.install.install`): the image imported, the
``.nspawn`` put where its privileged settings are honoured (pull-tar leaves it beside the image,
where Bind=, [Network] and PrivateUsers= are ignored) and the unit drop-in installed, which
pull-tar does not fetch at all. A set that is not signed is refused: install a directory for
that.
"""

from __future__ import annotations

from pathlib import Path

from .errors import BuildError
from .hostneeds import HostSettingsFor
from .install import install
from .instance import Overrides
from .verify import Say, default_keyring, fetched, report

#: what makes install's argument a URL rather than a directory
URL_SCHEMES = ("http://", "https://", "file://")


def is_url(target: str) -> bool:
    return target.lower().startswith(URL_SCHEMES)


def install_url(url: str, *, keyring: Path | None, name: str | None, root: Path, force: bool,
                enable: bool, start: bool, say: Say, restart: bool = False,
                overrides: Overrides | None = None, host_network: bool = False,
                host_settings: HostSettingsFor | None = None) -> list[str]:
    """Pull the signed set at ``url``, verify it, install it; what was done, one line each."""
    ring = keyring or default_keyring()
    with fetched(url, ring) as (directory, outcome):
        failed = report(outcome, ring, say)
        if failed:
            raise BuildError(f"refused to install {url}: " + "; ".join(failed)
                             + "; nothing was installed")
        done = [f"verified the signature of {url} with {ring}"]
        return done + install(directory, name=name, root=root, force=force, enable=enable,
                              start=start, restart=restart, overrides=overrides,
                              host_network=host_network, host_settings=host_settings)
