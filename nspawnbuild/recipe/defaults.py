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
#: ``[output] level`` for each compression unless the recipe sets one (README "Compression")
DEFAULT_LEVELS: Final = {"zstd": 9, "xz": 6, "gzip": 9, "none": 0}
#: ``[output] compression`` unless the recipe sets one
DEFAULT_COMPRESSION: Final = "zstd"
#: the smallest SOURCE_DATE_EPOCH taken from the environment (the schema's minimum epoch)
MIN_ENV_EPOCH: Final = 86400
