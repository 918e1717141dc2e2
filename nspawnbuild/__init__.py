"""nspawnbuild: reproducible, incremental, pluggable systemd-nspawn images from TOML recipes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nspawnbuild")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

from .plugins import hookimpl  # noqa: E402  (plugins import `nspawnbuild.hookimpl`)

__all__ = ["__version__", "hookimpl"]
