"""Binds: host directories or files mounted into the container (``Bind=``/``BindReadOnly=``).

Only honoured from a trusted .nspawn (/etc/systemd/nspawn/). Options are checked against the
systemd version of the target hosts (``target_systemd``, default 252).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nspawnbuild.errors import Problem
from nspawnbuild.feature import AnyFeature, Feature, NoTraits, Tuples
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.settings import Setting

#: the systemd version that introduced each ID-mapping option of Bind=
IDMAP_SINCE = {"noidmap": 250, "idmap": 250, "rootidmap": 252, "owneridmap": 256}
#: An absolute path that systemd reads back exactly as written in ``Bind=SRC:DST:OPTS``: no
#: '.' or '..' component (the first one included), no ':' (the field separator), no backslash
#: (nspawn unescapes it: ``/srv/a\b`` would bind ``/srv/ab``), no control characters.
BIND_PATH = r"^/(?!(.*/)?\.\.?(/|$))[^\x00-\x1f\x7f:\\]*$"
PATH_SCHEMA: dict[str, Any] = {
    "type": "string", "pattern": BIND_PATH,
    "x-hint": "an absolute path without ':', '.' or '..' components, backslashes or control "
              "characters"}


@dataclass(frozen=True)
class Mount(Tuples):
    """One ``[[features.binds.mounts]]`` entry."""

    host: str
    #: None: the same path as on the host
    guest: str | None = None
    readonly: bool = False
    recursive: bool = True
    idmap: str | None = None

    def setting(self) -> Setting:
        opts = ["rbind" if self.recursive else "norbind"]
        if self.idmap:
            opts.append(self.idmap)
        value = f"{self.host}:{self.guest or self.host}:{','.join(opts)}"
        return Setting("Files", "BindReadOnly" if self.readonly else "Bind", value, "binds")


@dataclass(frozen=True)
class BindsConfig(Tuples):
    mounts: tuple[Mount, ...] = ()


class Binds(Feature[BindsConfig, NoTraits]):
    """Host paths bound into the container, with their ID-mapping options."""

    name = "binds"
    config_class = BindsConfig
    order = 50
    properties = {"mounts": {"type": "array", "items": {
        "type": "object", "additionalProperties": False, "required": ["host"],
        "properties": {
            "host": PATH_SCHEMA,
            "guest": PATH_SCHEMA | {"description": "where it appears inside; default: same as host"},
            "readonly": {"type": "boolean"},
            "recursive": {"type": "boolean", "description": "rbind (default) or norbind"},
            "idmap": {"enum": sorted(IDMAP_SINCE)},
        },
    }}}

    @classmethod
    def parse(cls, table: Mapping[str, Any]) -> BindsConfig:
        return BindsConfig(tuple(Mount(**m) for m in table.get("mounts", [])))

    def validate(self, recipe: Recipe[AnyFeature]) -> list[Problem]:
        problems: list[Problem] = []
        for i, m in enumerate(self.config.mounts):
            if m.idmap and IDMAP_SINCE[m.idmap] > recipe.target_systemd:
                problems.append(recipe.sources.problem(
                    f"features.binds.mounts.{i}.idmap",
                    f"'{m.idmap}' needs systemd {IDMAP_SINCE[m.idmap]} on the host, but "
                    f"target_systemd is {recipe.target_systemd}", "use another idmap option, "
                    "or raise target_systemd if every host runs a newer systemd"))
        return problems

    def nspawn_settings(self, recipe: Recipe[AnyFeature]) -> list[Setting]:
        return [m.setting() for m in self.config.mounts]


@hookimpl
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    return [Binds]
