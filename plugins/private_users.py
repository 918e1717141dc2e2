"""User namespacing: PrivateUsers= (``pick`` unless the recipe says otherwise) and
PrivateUsersOwnership=. The core writes ``PrivateUsers=pick`` when nothing else sets it."""

from __future__ import annotations

from typing import Any

from nspawnbuild import hookimpl
from nspawnbuild.distro import Distro
from nspawnbuild.recipe import Recipe
from nspawnbuild.settings import Setting


@hookimpl
def nspawnbuild_feature_schemas() -> dict[str, Any]:
    return {"private-users": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "mode": {"anyOf": [{"enum": ["pick", "yes", "no", "identity"]},
                               {"type": "string", "pattern": r"^\d+(:\d+)?$"},
                               {"type": "integer", "minimum": 0}],
                     "x-hint": "pick, yes, no, identity, a base UID, or BASE:RANGE"},
            "ownership": {"enum": ["off", "chown", "map", "auto"]},
        },
    }}


@hookimpl
def nspawnbuild_nspawn_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    table = recipe.feature("private-users")
    if table is None:
        return []
    out = [Setting("Exec", "PrivateUsers", str(table.get("mode", "pick")), "private-users")]
    if "ownership" in table:
        out.append(Setting("Files", "PrivateUsersOwnership", table["ownership"], "private-users"))
    return out
