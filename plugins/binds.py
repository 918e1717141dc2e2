"""Binds: host directories or files mounted into the container (``Bind=``/``BindReadOnly=``).

Only honoured from a trusted .nspawn (/etc/systemd/nspawn/). Options are checked against the
systemd version of the target hosts (``target_systemd``, default 252).
"""

from __future__ import annotations

from typing import Any

from nspawnbuild import hookimpl
from nspawnbuild.distro import Distro
from nspawnbuild.features import fail
from nspawnbuild.recipe import Recipe
from nspawnbuild.settings import Setting

#: the systemd version that introduced each ID-mapping option of Bind=
IDMAP_SINCE = {"noidmap": 250, "idmap": 250, "rootidmap": 252, "owneridmap": 256}
#: An absolute path that systemd reads back exactly as written in ``Bind=SRC:DST:OPTS``: no
#: '.' or '..' component (the first one included), no ':' (the field separator), no backslash
#: (nspawn unescapes it: ``/srv/a\b`` would bind ``/srv/ab``), no control characters.
BIND_PATH = r"^/(?!(.*/)?\.\.?(/|$))[^\x00-\x1f\x7f:\\]*$"


@hookimpl
def nspawnbuild_feature_schemas() -> dict[str, Any]:
    path = {"type": "string", "pattern": BIND_PATH,
            "x-hint": "an absolute path without ':', '.' or '..' components, backslashes or "
                      "control characters"}
    return {"binds": {
        "type": "object", "additionalProperties": False,
        "properties": {"mounts": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["host"],
            "properties": {
                "host": path,
                "guest": path | {"description": "where it appears inside; default: same as host"},
                "readonly": {"type": "boolean"},
                "recursive": {"type": "boolean", "description": "rbind (default) or norbind"},
                "idmap": {"enum": sorted(IDMAP_SINCE)},
            },
        }}},
    }}


def _mounts(recipe: Recipe) -> list[dict[str, Any]]:
    return list((recipe.feature("binds") or {}).get("mounts", []))


@hookimpl
def nspawnbuild_validate(recipe: Recipe) -> None:
    for i, m in enumerate(_mounts(recipe)):
        opt = m.get("idmap")
        if opt and IDMAP_SINCE[opt] > recipe.target_systemd:
            fail(recipe, f"features.binds.mounts.{i}.idmap",
                 f"'{opt}' needs systemd {IDMAP_SINCE[opt]} on the host, but target_systemd is "
                 f"{recipe.target_systemd}", "use another idmap option, or raise target_systemd "
                 "if every host runs a newer systemd")


@hookimpl
def nspawnbuild_nspawn_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    out = []
    for m in _mounts(recipe):
        opts = ["rbind" if m.get("recursive", True) else "norbind"]
        if m.get("idmap"):
            opts.append(m["idmap"])
        value = f"{m['host']}:{m.get('guest', m['host'])}:{','.join(opts)}"
        out.append(Setting("Files", "BindReadOnly" if m.get("readonly") else "Bind", value, "binds"))
    return out
