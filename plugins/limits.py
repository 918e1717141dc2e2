"""Resource limits: CPUAffinity= in the .nspawn; CPU, memory, tasks and IO in the drop-in."""

from __future__ import annotations

from typing import Any

from nspawnbuild import hookimpl
from nspawnbuild.distro import Distro
from nspawnbuild.features import fail
from nspawnbuild.recipe import Recipe
from nspawnbuild.settings import Setting

CPUS = r"^\d+(-\d+)?([ ,]\d+(-\d+)?)*$"
SIZE = r"^(\d+(\.\d+)?[KMGT]?|\d+(\.\d+)?%|infinity)$"
RATE = r"^\d+(\.\d+)?[KMGT]?$"
#: key in [features.limits] -> (unit setting, schema)
UNIT_KEYS: dict[str, tuple[str, dict[str, Any]]] = {
    "cpu_quota": ("CPUQuota", {"type": "string", "pattern": r"^\d+(\.\d+)?%$",
                               "x-hint": "a percentage of one CPU, e.g. \"200%\" for two cores"}),
    "allowed_cpus": ("AllowedCPUs", {"type": "string", "pattern": CPUS,
                                     "x-hint": "CPU indices and ranges, e.g. \"0-3,8\""}),
    "memory_max": ("MemoryMax", {"type": "string", "pattern": SIZE,
                                 "x-hint": "bytes with K/M/G/T, a percentage, or infinity"}),
    "memory_swap_max": ("MemorySwapMax", {"type": "string", "pattern": SIZE,
                                          "x-hint": "bytes with K/M/G/T, or infinity"}),
    "tasks_max": ("TasksMax", {"anyOf": [{"type": "integer", "minimum": 1},
                                         {"type": "string", "pattern": r"^(\d+%|infinity)$"}],
                               "x-hint": "a number, a percentage or infinity"}),
}
IO_KEYS = {"io_read_bandwidth_max": "IOReadBandwidthMax",
           "io_write_bandwidth_max": "IOWriteBandwidthMax"}


@hookimpl
def nspawnbuild_feature_schemas() -> dict[str, Any]:
    props: dict[str, Any] = {key: schema for key, (_, schema) in UNIT_KEYS.items()}
    props["cpu_affinity"] = {"type": "string", "pattern": CPUS,
                             "x-hint": "CPU indices and ranges, e.g. \"0-1,8-9\""}
    for key in IO_KEYS:
        props[key] = {"type": "array", "items": {"type": "string"},
                      "description": "entries of the form \"PATH RATE\", e.g. \"/dev/sda 100M\""}
    return {"limits": {"type": "object", "additionalProperties": False, "properties": props}}


@hookimpl
def nspawnbuild_validate(recipe: Recipe) -> None:
    import re

    table = recipe.feature("limits") or {}
    for key in IO_KEYS:
        for i, entry in enumerate(table.get(key, [])):
            parts = entry.split()
            if len(parts) == 1 and re.match(RATE, parts[0]):
                fail(recipe, f"features.limits.{key}", f"entry {i} ({entry!r}) is a bare rate; "
                     "this setting takes PATH RATE (systemd ignores a bare rate)",
                     f'write e.g. "/dev/sda {entry}" or "/var/lib/machines {entry}"')
            if len(parts) != 2 or not parts[0].startswith("/") or not re.match(RATE, parts[1]):
                fail(recipe, f"features.limits.{key}", f"entry {i} ({entry!r}) is not PATH RATE",
                     'e.g. "/dev/sda 100M": a block device or a path on it, then bytes per second')


@hookimpl
def nspawnbuild_nspawn_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    table = recipe.feature("limits") or {}
    if "cpu_affinity" in table:
        return [Setting("Exec", "CPUAffinity", table["cpu_affinity"], "limits")]
    return []


@hookimpl
def nspawnbuild_unit_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    table = recipe.feature("limits") or {}
    out = [Setting("Service", unit_key, str(table[key]), "limits")
           for key, (unit_key, _) in UNIT_KEYS.items() if key in table]
    for key, unit_key in IO_KEYS.items():
        out += [Setting("Service", unit_key, entry, "limits") for entry in table.get(key, [])]
    return out
