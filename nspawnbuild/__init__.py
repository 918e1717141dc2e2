"""nspawnbuild: reproducible, incremental, pluggable systemd-nspawn images from TOML recipes.

Nothing but the version lives here, so that importing any module of the package imports no
other: plugins take their marker from :mod:`nspawnbuild.hookspecs`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nspawnbuild")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
