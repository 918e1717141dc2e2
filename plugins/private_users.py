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
from typing import Any

from nspawnbuild import hookimpl
from nspawnbuild.distro import Distro
from nspawnbuild.features import fail
from nspawnbuild.recipe import Recipe
from nspawnbuild.settings import Setting

KEYWORDS = ("pick", "yes", "no", "identity")
DEFAULT_RANGE = 0x10000
UID_MAX = 2**32 - 1  # (uid_t) -1; nspawn needs BASE + RANGE <= this
_NUMERIC = re.compile(r"^(0|[1-9]\d*)(?::([1-9]\d*))?$")
HINT = ("pick, yes, no, identity, a base UID such as 65536, or BASE:RANGE such as 524288:65536 "
        "(decimal, no leading zeros)")


@hookimpl
def nspawnbuild_feature_schemas() -> dict[str, Any]:
    return {"private-users": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "mode": {"anyOf": [{"enum": list(KEYWORDS)},
                               {"type": "string", "pattern": _NUMERIC.pattern},
                               {"type": "integer", "minimum": 0}],
                     "x-hint": HINT},
            "ownership": {"enum": ["off", "chown", "map", "auto"]},
        },
    }}


def _mode(table: dict[str, Any]) -> str:
    """The PrivateUsers= value: a keyword, or always BASE:RANGE for a numeric mode."""
    mode = str(table.get("mode", "pick"))
    if mode in KEYWORDS:
        return mode
    base, _, size = mode.partition(":")
    return f"{int(base)}:{int(size) if size else DEFAULT_RANGE}"


@hookimpl
def nspawnbuild_validate(recipe: Recipe) -> None:
    table = recipe.feature("private-users")
    if table is None or str(table.get("mode", "pick")) in KEYWORDS:
        return
    base, _, size = _mode(table).partition(":")
    if int(base) in (0xFFFF, UID_MAX):
        fail(recipe, "features.private-users.mode",
             f"base UID {base} is not a valid UID (65535 and 4294967295 are reserved)", HINT)
    if int(base) + int(size) > UID_MAX:
        fail(recipe, "features.private-users.mode",
             f"base UID {base} with a range of {size} runs past the last UID {UID_MAX}", HINT)


def _recipe_sets(recipe: Recipe, section: str, key: str) -> bool:
    return key in (recipe.data.get("nspawn", {}).get(section) or {})


@hookimpl
def nspawnbuild_nspawn_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    table = recipe.feature("private-users")
    if table is None:
        return []
    # the recipe's own [nspawn.Exec]/[nspawn.Files] keys win; writing ours too would only
    # leave two lines of the same key in the file
    out = []
    if not _recipe_sets(recipe, "Exec", "PrivateUsers"):
        out.append(Setting("Exec", "PrivateUsers", _mode(table), "private-users"))
    if "ownership" in table and not _recipe_sets(recipe, "Files", "PrivateUsersOwnership"):
        out.append(Setting("Files", "PrivateUsersOwnership", table["ownership"], "private-users"))
    return out
