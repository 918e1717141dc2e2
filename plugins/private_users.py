"""User namespacing: PrivateUsers= (``pick`` unless the recipe says otherwise) and
PrivateUsersOwnership=. The core writes ``PrivateUsers=pick`` when nothing else sets it.

systemd-nspawn reads ``PrivateUsers=`` as a boolean first: ``0`` means *no user namespace at
all* and ``1`` means ``yes``, not a base UID. A value it cannot parse (``65535``, ``0100``,
``BASE:0``, a range past the last UID) is ignored with a warning, which again leaves the
container without a user namespace. So a base UID is always written as ``BASE:RANGE`` and
checked here the way nspawn checks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nspawnbuild.errors import Problem
from nspawnbuild.feature import AnyFeature, Feature, NoTraits, Tuples
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.settings import Setting

KEYWORDS = ("pick", "yes", "no", "identity")
DEFAULT_RANGE = 0x10000
UID_MAX = 2**32 - 1  # (uid_t) -1; nspawn needs BASE + RANGE <= this
_NUMERIC = re.compile(r"^(0|[1-9]\d*)(?::([1-9]\d*))?$")
HINT = ("pick, yes, no, identity, a base UID such as 65536, or BASE:RANGE such as 524288:65536 "
        "(decimal, no leading zeros)")


@dataclass(frozen=True)
class PrivateUsersConfig(Tuples):
    #: a keyword, a base UID, or "BASE:RANGE"
    mode: str | int = "pick"
    #: None: no PrivateUsersOwnership= line (nspawn's default)
    ownership: str | None = None

    @property
    def value(self) -> str:
        """The PrivateUsers= value: a keyword, or always BASE:RANGE for a numeric mode."""
        mode = str(self.mode)
        if mode in KEYWORDS:
            return mode
        base, _, size = mode.partition(":")
        return f"{int(base)}:{int(size) if size else DEFAULT_RANGE}"


def _recipe_sets(recipe: Recipe[AnyFeature], section: str, key: str) -> bool:
    """Whether the recipe's own [nspawn.SECTION] table has ``key``."""
    return any(s.section == section and s.key == key for s in recipe.nspawn)


class PrivateUsers(Feature[PrivateUsersConfig, NoTraits]):
    """PrivateUsers= and PrivateUsersOwnership=, checked the way nspawn parses them."""

    name = "private-users"
    config_class = PrivateUsersConfig
    order = 90
    properties = {
        "mode": {"anyOf": [{"enum": list(KEYWORDS)},
                           {"type": "string", "pattern": _NUMERIC.pattern},
                           {"type": "integer", "minimum": 0}],
                 "x-hint": HINT},
        "ownership": {"enum": ["off", "chown", "map", "auto"]},
    }

    def validate(self, recipe: Recipe[AnyFeature]) -> list[Problem]:
        if str(self.config.mode) in KEYWORDS:
            return []
        base, _, size = self.config.value.partition(":")
        problems: list[Problem] = []
        if int(base) in (0xFFFF, UID_MAX):
            problems.append(recipe.sources.problem(
                "features.private-users.mode",
                f"base UID {base} is not a valid UID (65535 and 4294967295 are reserved)", HINT))
        elif int(base) + int(size) > UID_MAX:  # one problem with one value is enough
            problems.append(recipe.sources.problem(
                "features.private-users.mode",
                f"base UID {base} with a range of {size} runs past the last UID {UID_MAX}", HINT))
        return problems

    def nspawn_settings(self, recipe: Recipe[AnyFeature]) -> list[Setting]:
        # the recipe's own [nspawn.Exec]/[nspawn.Files] keys win; writing ours too would only
        # leave two lines of the same key in the file
        out = []
        if not _recipe_sets(recipe, "Exec", "PrivateUsers"):
            out.append(Setting("Exec", "PrivateUsers", self.config.value, "private-users"))
        if self.config.ownership is not None \
                and not _recipe_sets(recipe, "Files", "PrivateUsersOwnership"):
            out.append(Setting("Files", "PrivateUsersOwnership", self.config.ownership,
                               "private-users"))
        return out


@hookimpl
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    return [PrivateUsers]
