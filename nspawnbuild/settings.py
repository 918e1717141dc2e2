"""INI settings for the .nspawn file and the unit drop-in: the keys that exist, and safe values.

systemd only *warns* about an unknown key or a bad value and then ignores it, so a typo in a
recipe would silently drop a Bind= or a MemoryMax=. Checking here turns that into an error
with the file and key named, before anything is built.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# systemd.nspawn(5), systemd 252: section -> keys.
NSPAWN_KEYS: dict[str, frozenset[str]] = {
    "Exec": frozenset("""
        Boot Ephemeral ProcessTwo Parameters Environment User WorkingDirectory PivotRoot
        Capability DropCapability AmbientCapability NoNewPrivileges KillSignal Personality
        MachineID PrivateUsers NotifyReady SystemCallFilter LimitCPU LimitFSIZE LimitDATA
        LimitSTACK LimitCORE LimitRSS LimitNOFILE LimitAS LimitNPROC LimitMEMLOCK LimitLOCKS
        LimitSIGPENDING LimitMSGQUEUE LimitNICE LimitRTPRIO LimitRTTIME OOMScoreAdjust
        CPUAffinity Hostname ResolvConf Timezone LinkJournal SuppressSync
    """.split()),
    "Files": frozenset("""
        ReadOnly Volatile Bind BindReadOnly BindUser TemporaryFileSystem Inaccessible Overlay
        OverlayReadOnly PrivateUsersOwnership
    """.split()),
    "Network": frozenset("""
        Private VirtualEthernet VirtualEthernetExtra Interface MACVLAN IPVLAN Bridge Zone Port
    """.split()),
}

# Sections a drop-in for systemd-nspawn@.service may carry. Keys are checked for shape only:
# systemd.exec/resource-control/service have hundreds; `systemd-analyze verify` checks them.
UNIT_SECTIONS = ("Unit", "Service")
_UNIT_KEY = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_SECTION = re.compile(r"^[A-Z][A-Za-z0-9]*$")

Scalar = str | int | bool


@dataclass(frozen=True)
class Setting:
    """One ``Key=value`` line of an INI file, in a section. Repeated keys are separate items."""

    section: str
    key: str
    value: str
    origin: str = ""  # who asked for it: a plugin name or "recipe", for error messages


def format_value(value: Scalar) -> str:
    """Render a TOML scalar the way systemd spells it (booleans as yes/no)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def value_problem(value: str) -> str | None:
    """Why ``value`` cannot be written into an INI file safely, or None.

    A newline would start a new line — a new key, or a ``[Section]`` — so a value from a
    recipe could inject settings. A trailing backslash would join the next line to it.
    """
    if any(ch in value for ch in "\n\r"):
        return "contains a line break, which would inject a new line into the file"
    if any(ord(ch) < 0x20 and ch != "\t" or ord(ch) == 0x7F for ch in value):
        return "contains a control character"
    if value.rstrip().endswith("\\"):
        return "ends with a backslash, which would join it with the next line"
    return None


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt key, or None."""
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


SettingProblem = tuple[str, str, str | None]


def table_to_settings(kind: str, table: dict[str, Any]) -> tuple[list[Setting], list[SettingProblem]]:
    """Turn a recipe's ``[nspawn]`` or ``[unit]`` table into settings.

    Returns ``(settings, problems)``; each problem is ``(dotted key, message, hint)``.
    ``kind`` is "nspawn" or "unit". Lists become repeated keys.
    """
    settings: list[Setting] = []
    problems: list[SettingProblem] = []
    for section, keys in table.items():
        where = f"{kind}.{section}"
        if kind == "nspawn" and section not in NSPAWN_KEYS:
            problems.append((where, f"unknown .nspawn section '{section}'",
                             suggest(section, NSPAWN_KEYS) or "sections are Exec, Files, Network"))
            continue
        if kind == "unit" and section not in UNIT_SECTIONS:
            problems.append((where, f"drop-in section '{section}' is not allowed",
                             suggest(section, UNIT_SECTIONS) or "use [unit.Service] or [unit.Unit]"))
            continue
        if not isinstance(keys, dict):
            problems.append((where, "must be a table of Key = value settings", None))
            continue
        for key, raw in keys.items():
            dotted = f"{where}.{key}"
            if kind == "nspawn" and key not in NSPAWN_KEYS[section]:
                problems.append((dotted, f"systemd-nspawn has no setting {key}= in [{section}]",
                                 suggest(key, NSPAWN_KEYS[section])))
                continue
            if kind == "unit" and not _UNIT_KEY.match(key):
                problems.append((dotted, f"'{key}' is not a systemd setting name",
                                 "names look like MemoryMax or DeviceAllow"))
                continue
            values = raw if isinstance(raw, list) else [raw]
            for item in values:
                if not isinstance(item, str | int | bool) or isinstance(item, float):
                    problems.append((dotted, f"value {item!r} must be a string, integer or boolean",
                                     None))
                    continue
                text = format_value(item)
                why = value_problem(text)
                if why:
                    problems.append((dotted, f"value {text!r} {why}", "put it on one line"))
                    continue
                settings.append(Setting(section, key, text, "recipe"))
    return settings, problems


def check_setting(setting: Setting) -> str | None:
    """Why a plugin's setting is unsafe to render, or None."""
    if not _SECTION.match(setting.section) or not _UNIT_KEY.match(setting.key):
        return f"bad section or key name [{setting.section}] {setting.key}"
    return value_problem(setting.value)


def group_settings(settings: list[Setting], order: tuple[str, ...]) -> list[tuple[str, list[Setting]]]:
    """Group settings by section, sections in ``order`` first, keeping the given key order.

    A single-valued key set by both a plugin and the recipe would be written twice; systemd
    takes the last one, and the recipe's settings come last, so the recipe wins.
    """
    sections: dict[str, list[Setting]] = {}
    for s in settings:
        sections.setdefault(s.section, []).append(s)
    ranked = sorted(sections, key=lambda name: (order.index(name) if name in order else len(order), name))
    return [(name, sections[name]) for name in ranked]
