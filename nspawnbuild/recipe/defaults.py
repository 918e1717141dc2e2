"""Values a loaded recipe gets for the keys it leaves out.

They live apart from the loader so that the stages that need them (the plan, the tarball
writer, the tests) can import them without importing the loader and with it the plugins.
Changing one changes the data of every recipe that relies on it, and so its digest.
"""

from __future__ import annotations

from typing import Final

#: ``epoch`` unless the recipe or SOURCE_DATE_EPOCH sets one: 2024-01-01T00:00:00Z
#: (see README "Reproducibility")
DEFAULT_EPOCH: Final = 1704067200
#: ``target_systemd`` when the distro does not know its release's systemd (sid, a new release,
#: Alpine): Debian bookworm's, the oldest host the images are for
DEFAULT_TARGET_SYSTEMD: Final = 252
#: ``[output] level`` for each compression unless the recipe sets one (README "Compression");
#: gzip's 6 (its own default): 9 took 3x as long here for 0.4 % less
DEFAULT_LEVELS: Final = {"zstd": 9, "xz": 6, "gzip": 6, "none": 0}
#: the first systemd whose import/pull reads zstd (gzip and xz it has always read)
ZSTD_IMPORT_SINCE: Final = 258


def default_compression(target_systemd: int) -> str:
    """``[output] compression`` unless the recipe sets one: what the target hosts' own
    ``machinectl pull-tar`` can import. zstd from systemd 258; below it gzip, which every
    systemd imports and which packs a 147 MiB tree in 5 s here (xz -6: 85 s, zstd -9: 3.5 s)."""
    return "zstd" if target_systemd >= ZSTD_IMPORT_SINCE else "gzip"
#: the smallest SOURCE_DATE_EPOCH taken from the environment (the schema's minimum epoch)
MIN_ENV_EPOCH: Final = 86400
