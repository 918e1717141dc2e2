"""Applying ``extends``: how a chain of recipe files becomes one resolved recipe.

Child values win; tables merge key by key; the lists in APPEND_LISTS append (``packages`` without
the entries an ancestor already has). While merging, the position every entry of an append list
came from is recorded, so that a problem with ``files[3]`` of the resolved recipe is reported in
the ``[[files]]`` table that wrote it (see :class:`~nspawnbuild.recipe.sourcemap.SourceMap`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .sourcemap import SourceFile

#: lists a child appends to its parent's instead of replacing them
APPEND_LISTS: Final = ("packages", "post", "files", "sources")
#: append lists whose entries are kept even when equal to an inherited one
KEEP_DUPLICATES: Final = ("post", "files", "sources")
#: top-level keys a recipe never passes on to the recipes that extend it
NOT_INHERITED: Final = ("name", "extends")

Origins = dict[str, tuple[tuple[int, int], ...]]


def merge(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Child values win; tables merge key by key; the lists in APPEND_LISTS append.

    Neither argument is changed: the result shares no value with them."""
    out = copy.deepcopy(dict(parent))
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif key in APPEND_LISTS and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + [copy.deepcopy(value[j]) for j in appended(key, out[key], value)]
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_chain(files: Sequence[SourceFile]) -> tuple[dict[str, Any], Origins]:
    """The resolved recipe of a chain (root ancestor first) and the origins of its append lists.

    ``origins[key][n]`` is ``(index in files, index in that file's list)`` of entry ``n`` of the
    merged list ``key``. ``name`` is taken from the recipe itself only (it defaults to the
    file's stem, never to an ancestor's name); ``extends`` is dropped."""
    merged: dict[str, Any] = {}
    origins: dict[str, list[tuple[int, int]]] = {k: [] for k in APPEND_LISTS}
    for i, src in enumerate(files):
        leaf = i == len(files) - 1
        own = {k: v for k, v in src.data.items()
               if k != "extends" and (leaf or k not in NOT_INHERITED)}
        for key in APPEND_LISTS:
            value = src.data.get(key)
            if isinstance(value, list):
                before = merged.get(key)
                if not isinstance(before, list):  # merge() replaces it: no dedup against it
                    origins[key] = []
                    before = []
                origins[key] += [(i, j) for j in appended(key, before, value)]
        merged = merge(merged, own)
    return merged, {k: tuple(v) for k, v in origins.items()}


def appended(key: str, before: Sequence[Any], items: Sequence[Any]) -> list[int]:
    """The indexes of ``items`` that appending them to ``before`` keeps: all of them for the
    lists in KEEP_DUPLICATES, else those not already there.

    A set, not ``item in before``: that is quadratic, and ten thousand packages in each
    recipe of a chain would take hours."""
    if key in KEEP_DUPLICATES:
        return list(range(len(items)))
    seen = {hashable(v) for v in before}
    kept = []
    for j, item in enumerate(items):
        h = hashable(item)
        if h not in seen:
            seen.add(h)
            kept.append(j)
    return kept


def hashable(value: Any) -> Any:
    """``value`` as a set member that is equal where the values are (tables and arrays too)."""
    try:
        hash(value)
        return value
    except TypeError:
        return ("\0json", json.dumps(value, sort_keys=True, default=str))
