"""Resource limits: CPUAffinity= in the .nspawn; CPU, memory, tasks and IO in the drop-in.

systemd only *warns* about a value it cannot parse and then ignores the setting, so a limit the
schema lets through but systemd refuses (``MemoryMax=0``, ``CPUQuota=1.555%``, ``TasksMax=150%``,
``AllowedCPUs=3-1``) would silently leave the container unlimited. ``Limits.validate``
checks each value the way systemd 252 parses it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nspawnbuild.errors import Problem
from nspawnbuild.feature import AnyFeature, Feature, NoTraits, Tuples
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.settings import Setting

CPUS = r"^\d+(-\d+)?([ ,]\d+(-\d+)?)*$"
SIZE = r"^(\d+(\.\d+)?[KMGT]?|\d+(\.\d+)?%|infinity)$"
RATE = r"^(\d+(\.\d+)?[KMGT]?|infinity)$"
#: systemd's CPU sets hold CPUs 0..8191
MAX_CPU = 8191
UINT64_MAX = 2**64 - 1
#: key in [features.limits] -> (unit setting, schema)
UNIT_KEYS: dict[str, tuple[str, dict[str, Any]]] = {
    "cpu_quota": ("CPUQuota", {"type": "string", "pattern": r"^\d+(\.\d{1,2})?%$",
                               "x-hint": "a percentage of one CPU, e.g. \"200%\" for two cores"}),
    "allowed_cpus": ("AllowedCPUs", {"type": "string", "pattern": CPUS,
                                     "x-hint": "CPU indices and ranges, e.g. \"0-3,8\""}),
    "memory_max": ("MemoryMax", {"type": "string", "pattern": SIZE,
                                 "x-hint": "bytes with K/M/G/T, a percentage, or infinity"}),
    "memory_swap_max": ("MemorySwapMax", {"type": "string", "pattern": SIZE,
                                          "x-hint": "bytes with K/M/G/T, or infinity"}),
    "tasks_max": ("TasksMax", {"anyOf": [{"type": "integer", "minimum": 1},
                                         {"type": "string", "pattern": r"^(\d+(\.\d+)?%|infinity)$"}],
                               "x-hint": "a number, a percentage or infinity"}),
}
IO_KEYS = {"io_read_bandwidth_max": "IOReadBandwidthMax",
           "io_write_bandwidth_max": "IOWriteBandwidthMax"}
IO_HINT = ('entries of the form "PATH RATE", e.g. "/dev/sda 100M": a block device or a path on '
           "it, then bytes per second")
_MULT = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}  # powers of the base


def _percent_problem(text: str, limit: int | None) -> str | None:
    """systemd's parse_permyriad: at most two decimals, and at most ``limit``%."""
    number = text[:-1]
    if "." in number and len(number.split(".")[1]) > 2:
        return "systemd allows at most two decimals"
    if limit is not None and Decimal(number) > limit:
        return f"more than {limit}%"
    return None


def _bytes(text: str, base: int) -> int:
    number, suffix = (text[:-1], text[-1]) if text[-1] in _MULT else (text, "")
    return int(Decimal(number) * base ** _MULT[suffix])


def _cpus_problem(text: str) -> str | None:
    for part in re.split(r"[ ,]", text):
        lo, _, hi = part.partition("-")
        if hi and int(lo) > int(hi):
            return f"range '{part}' is backwards"
        if int(hi or lo) > MAX_CPU:
            return f"CPU {int(hi or lo)} is beyond systemd's limit of {MAX_CPU}"
    return None


def _unit_problem(key: str, value: Any) -> str | None:
    """Why systemd 252 would ignore ``value`` for ``key``, or None."""
    text = str(value)
    if key in ("allowed_cpus", "cpu_affinity"):
        return _cpus_problem(text)
    if text == "infinity":
        return None
    if key == "cpu_quota":
        return _percent_problem(text, None) or (
            "it must be more than 0%" if Decimal(text[:-1]) * 100 < 1 else None)
    if text.endswith("%"):
        why = _percent_problem(text, 100)
        if why is None and key == "memory_max" and Decimal(text[:-1]) * 100 < 1:
            why = "it must be more than 0%"
        return why
    if key == "tasks_max":
        return None if 1 <= int(text) < UINT64_MAX else "out of range"
    size = _bytes(text, 1024)
    if size >= UINT64_MAX:
        return "too large; use infinity"
    if size <= 0 and key == "memory_max":
        return "it must be more than 0 bytes"
    return None


def _io_problem(entry: str) -> tuple[str, str] | None:
    """(message, hint) when ``entry`` is not a PATH RATE systemd 252 accepts."""
    parts = entry.split()
    if len(parts) == 1 and re.match(RATE, parts[0]):
        return ("is a bare rate; this setting takes PATH RATE (systemd ignores a bare rate)",
                f'write e.g. "/dev/sda {parts[0]}" or "/var/lib/machines {parts[0]}"')
    if len(parts) != 2 or not parts[0].startswith("/") or not re.match(RATE, parts[1]):
        return "is not PATH RATE", IO_HINT
    path, rate = parts
    if re.search(r"[\\\"'\x00-\x1f\x7f]", path) or any(c in (".", "..") for c in path.split("/")):
        return ("has a path with '.', '..', quotes, backslashes or control characters, which "
                "systemd refuses or reads differently", "write the plain absolute path")
    if rate != "infinity" and not 0 < _bytes(rate, 1000) < UINT64_MAX:
        return "has a rate out of range (systemd refuses 0)", IO_HINT
    return None


@dataclass(frozen=True)
class LimitsConfig(Tuples):
    """``[features.limits]``: each key None when not written (no setting at all)."""

    cpu_quota: str | None = None
    allowed_cpus: str | None = None
    memory_max: str | None = None
    memory_swap_max: str | None = None
    tasks_max: int | str | None = None
    cpu_affinity: str | None = None
    #: "PATH RATE" entries (one string in the recipe is one entry)
    io_read_bandwidth_max: tuple[str, ...] = ()
    io_write_bandwidth_max: tuple[str, ...] = ()


class Limits(Feature[LimitsConfig, NoTraits]):
    """CPU, memory, task and IO limits, each checked the way systemd 252 parses it."""

    name = "limits"
    config_class = LimitsConfig
    order = 70
    properties = {
        **{key: schema for key, (_, schema) in UNIT_KEYS.items()},
        "cpu_affinity": {"type": "string", "pattern": CPUS,
                         "x-hint": "CPU indices and ranges, e.g. \"0-1,8-9\""},
        # one "PATH RATE" string or a list of them; a bare "100M" is refused in validate
        **{key: {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                 "x-hint": IO_HINT} for key in IO_KEYS},
    }

    @classmethod
    def parse(cls, table: Mapping[str, Any]) -> LimitsConfig:
        values = dict(table)
        for key in IO_KEYS:
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        return LimitsConfig(**values)

    def validate(self, recipe: Recipe[AnyFeature]) -> list[Problem]:
        problems: list[Problem] = []
        for key in [*UNIT_KEYS, "cpu_affinity"]:
            value = getattr(self.config, key)
            if value is None:
                continue
            why = _unit_problem(key, value)
            if why:
                hint = UNIT_KEYS[key][1].get("x-hint") if key in UNIT_KEYS else None
                problems.append(recipe.sources.problem(
                    f"features.limits.{key}",
                    f"invalid value {value!r}: {why}; systemd would ignore the setting", hint))
        for key in IO_KEYS:
            for i, entry in enumerate(getattr(self.config, key)):
                problem = _io_problem(entry)
                if problem:
                    problems.append(recipe.sources.problem(
                        f"features.limits.{key}", f"entry {i} ({entry!r}) {problem[0]}",
                        problem[1]))
        return problems

    def nspawn_settings(self, recipe: Recipe[AnyFeature]) -> list[Setting]:
        if self.config.cpu_affinity is not None:
            return [Setting("Exec", "CPUAffinity", self.config.cpu_affinity, "limits")]
        return []

    def unit_settings(self, recipe: Recipe[AnyFeature]) -> list[Setting]:
        c = self.config
        out = [Setting("Service", unit_key, str(getattr(c, key)), "limits")
               for key, (unit_key, _) in UNIT_KEYS.items() if getattr(c, key) is not None]
        for key, unit_key in IO_KEYS.items():
            # validated as exactly two words; written with one space, whatever separated them
            out += [Setting("Service", unit_key, " ".join(entry.split()), "limits")
                    for entry in getattr(c, key)]
        return out


@hookimpl
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    return [Limits]
