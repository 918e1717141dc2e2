"""Where each key of a resolved recipe was written: file and line, across an ``extends`` chain.

A recipe is read once. Its files' text and data are kept here, so that any problem found later
(by the schema, by a distro or feature plugin) names the file of the chain that set the key and
the line it is on, without reading a file again. Plugins make their problems with
:meth:`SourceMap.problem`; files a feature table names are read with :meth:`SourceMap.read_file`,
confined to the directory of the recipe file that names them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Problem, RecipeError
from ..fetch import Refused, read_confined

KeyPath = list[str | int]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


@dataclass(frozen=True)
class SourceFile:
    """One recipe file as read: its path, its text (for line numbers) and its TOML data."""

    path: Path
    text: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class SourceMap:
    """The files of a recipe's ``extends`` chain, root ancestor first, the recipe itself last.

    ``origins`` maps each append list (``packages``, ``post``, ``files``, ``sources``) to the
    ``(file index, index in that file)`` of every entry of the merged list, so that a problem
    with ``files[3]`` of the resolved recipe points at the right ``[[files]]`` table.
    """

    files: tuple[SourceFile, ...]
    origins: Mapping[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    @property
    def leaf(self) -> SourceFile:
        return self.files[-1]

    @property
    def chain(self) -> tuple[Path, ...]:
        return tuple(f.path for f in self.files)

    # -- problems -------------------------------------------------------------------------

    def problem(self, key: str, message: str, hint: str | None = None) -> Problem:
        """A problem with ``key`` (dotted, list indexes as numbers: ``features.users.accounts.0``),
        in the child-most file of the chain where the key is written, with its line."""
        parts = parse_key(key)
        for src in reversed(self.files):
            line = locate(src.text, parts)
            if line:
                return Problem(src.path, key, message, hint, line)
        return Problem(self.leaf.path, key, message, hint)

    def problem_at(self, key_path: Sequence[str | int], message: str,
                   hint: str | None = None) -> Problem:
        """A problem with a key of the resolved recipe, given as a path of keys and indexes;
        the key is shown as the file that set it spells it (``files[0].src``)."""
        src, local = self.owner(list(key_path))
        return Problem(src.path, dotted(local) or None, message, hint, locate(src.text, local))

    def owner(self, key_path: KeyPath) -> tuple[SourceFile, KeyPath]:
        """Which file set ``key_path`` of the resolved recipe (child-most wins), and the key's
        path in that file (an append list's index is the one that file counts)."""
        if key_path and isinstance(key_path[0], str) and key_path[0] in self.origins \
                and len(key_path) > 1 and isinstance(key_path[1], int) \
                and 0 <= key_path[1] < len(self.origins[key_path[0]]):
            doc_i, local = self.origins[key_path[0]][key_path[1]]
            return self.files[doc_i], [key_path[0], local, *key_path[2:]]
        for src in reversed(self.files):
            node: Any = src.data
            found = True
            for part in key_path:
                if isinstance(node, Mapping) and part in node:
                    node = node[part]
                else:
                    found = False
                    break
            if found and key_path:
                return src, key_path
        return self.leaf, key_path

    def declaring_file(self, key: str) -> Path:
        """The file of the chain that set ``key`` (the child-most one that has it)."""
        for src in reversed(self.files):
            node: Any = src.data
            for part in parse_key(key):
                in_table = isinstance(node, Mapping) and part in node
                in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
                if in_table or in_list:
                    node = node[part]
                else:
                    break
            else:
                return src.path
        return self.leaf.path

    # -- files named in the recipe ----------------------------------------------------------

    def read_file(self, key: str, name: str, limit: int = 1 << 20) -> tuple[str, Path]:
        """The text and real path of a file named at ``key``, confined like ``[[files]] src``:
        inside the directory of the recipe file that names it (symlinks followed; no /proc,
        /sys, /dev, no FIFOs or devices), at most ``limit`` bytes.

        Raises :class:`RecipeError` with one problem at ``key`` when it cannot be read."""
        root = self.declaring_file(key).parent
        try:
            data, real = read_confined(root, name, limit, f"a file here may have {limit} bytes")
        except Refused as e:
            raise RecipeError(self.problem(key, str(e), e.hint)) from None
        except FileNotFoundError:
            raise RecipeError(self.problem(key, f"file {root / name} does not exist",
                                           "paths are relative to the recipe file")) from None
        except OSError as e:
            raise RecipeError(self.problem(key, f"cannot read {name}: {e.strerror}",
                                           "paths are relative to the recipe file that names "
                                           "them")) from None
        return data.decode("utf-8", "replace"), real


def parse_key(key: str) -> KeyPath:
    """``features.users.accounts.0.name`` (or ``...accounts[0].name``) as a key path."""
    parts: KeyPath = []
    for part in key.replace("[", ".").replace("]", "").split("."):
        if part:
            parts.append(int(part) if part.isdigit() else part)
    return parts


def dotted(path: Sequence[Any]) -> str:
    """A key path as messages show it: ``files[0].src``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _split_key(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in key.split(".")]


def locate(text: str, path: Sequence[str | int]) -> int | None:
    """Best-effort line number (1-based) where ``path`` is set in a TOML text."""
    counts: dict[tuple[str, ...], int] = {}
    current: list[str | int] = []
    best: tuple[int, int] | None = None  # (match length, line)

    def consider(full: list[str | int], lineno: int) -> None:
        nonlocal best
        n = 0
        for a, b in zip(full, path, strict=False):
            if a != b:
                break
            n += 1
        if n == len(full) and n > 0 and (best is None or n > best[0]):
            best = (n, lineno)

    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            parts = _split_key(m.group(2))
            if m.group(1) == "[[":
                idx = counts.get(tuple(parts), 0)
                counts[tuple(parts)] = idx + 1
                current = [*parts, idx]
            else:
                current = list(parts)
            consider(current, lineno)
            continue
        k = _KEYLINE.match(line)
        if k:
            consider([*current, *_split_key(k.group(1))], lineno)
    return best[1] if best else None
