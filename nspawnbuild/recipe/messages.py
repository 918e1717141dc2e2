"""Wording: a JSON Schema error turned into a message a recipe author can act on.

jsonschema says ``'high' is not of type 'integer'``; a recipe author reads TOML, so the message
says ``must be an integer, not a string ('high')``, names unknown keys with a "did you mean"
hint, and quotes values shortened (a hostile value may be a megabyte long). A schema node may
carry ``x-hint``, the sentence that tells how to fix a value that does not match it.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from ..settings import suggest
from .merge import hashable
from .sourcemap import KeyPath, dotted

#: a problem before it is located: the key path in the resolved recipe, the message, the hint
Found = tuple[KeyPath, str, str | None]


def schema_problems(err: jsonschema.ValidationError) -> list[Found]:
    """The problems one schema error stands for."""
    return [schema_problem(err)]


def _schema(err: jsonschema.ValidationError) -> Mapping[str, Any]:
    return err.schema if isinstance(err.schema, dict) else {}


def _unknown_key(path: KeyPath, key: str, known: Mapping[str, Any]) -> Found:
    section = dotted(path) or "the recipe"
    hint = suggest(key, known) or f"allowed keys: {', '.join(sorted(known))}"
    return [*path, key], f"unknown key '{key}' in {section}", hint


def schema_problem(err: jsonschema.ValidationError) -> Found:
    """The key path, message and hint of one schema error."""
    path: KeyPath = list(err.absolute_path)
    schema = _schema(err)
    hint = schema.get("x-hint")
    inst = err.instance
    if err.validator == "additionalProperties" and isinstance(inst, dict):
        known = schema.get("properties", {})
        extra = [k for k in inst if k not in known]
        key = extra[0] if extra else "?"
        if path == ["features"]:
            hint = suggest(key, known) or (
                f"known features: {', '.join(sorted(known))}" if known else
                "no feature plugins are installed") + "; see `nspawnbuild plugins`"
            return [*path, key], f"unknown feature '{key}'", hint
        return _unknown_key(path, key, known)
    if err.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        return [*path, missing[0] if missing else "?"], "is required but missing", hint
    if err.validator == "type":
        want = schema.get("type")
        want_s = " or ".join(want) if isinstance(want, list) else want
        return path, f"must be {article(want_s)}, not {toml_type(inst)} ({short(inst)})", hint
    if err.validator == "pattern":
        return path, f"invalid value {short(inst)}", hint
    if err.validator == "enum":
        choices = ", ".join(repr(c) for c in schema.get("enum", []))
        return path, f"invalid value {short(inst)}; must be one of {choices}", \
            suggest(str(inst), [str(c) for c in schema.get("enum", [])]) or hint
    if err.validator == "anyOf" and schema.get("x-hint"):
        return path, f"invalid value {short(inst)}", hint
    if err.validator == "maxItems" and isinstance(inst, list):
        return path, (f"has {len(inst)} entries (with those of the recipes it extends); a recipe "
                      f"may have at most {schema.get('maxItems')}"), hint or list_hint(dotted(path))
    if err.validator == "contains" and "const" in schema.get("contains", {}):
        why = schema["contains"].get("x-why")  # the reason the list must hold it
        return path, f"must list {short(schema['contains']['const'])}" + (
            f": {why}" if why else ""), hint
    if err.validator == "uniqueItems" and isinstance(inst, list):
        twice = first_duplicate(inst)
        return path, "has non-unique elements" + (f": {short(twice[0])} is there twice"
                                                  if twice else ""), hint or "remove the second one"
    return path, short_text(err.message), hint


def list_hint(key: str) -> str:
    """How to stay below a list's size limit."""
    if key == "packages":
        return "install large package sets with a [[post]] step, or from a metapackage"
    return f"merge {key} entries"


def first_duplicate(items: Sequence[Any]) -> tuple[Any] | None:
    """The first item that is there twice (in a tuple, as it may be any value), or None."""
    seen: set[Any] = set()
    for item in items:
        h = hashable(item)
        if h in seen:
            return (item,)
        seen.add(h)
    return None


def short_text(text: str, limit: int = 300) -> str:
    """A message of jsonschema's, which can quote a whole (huge) value, cut to ``limit``."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def article(word: str | None) -> str:
    """A JSON Schema type (or "A or B") as TOML words with their article: "an integer"."""
    names = {"string": "a string", "integer": "an integer", "boolean": "a boolean (true/false)",
             "array": "an array", "object": "a table", "number": "a number"}
    if not word:
        return "a different type"
    return " or ".join(names.get(w.strip(), w) for w in word.split(" or "))


def toml_type(value: Any) -> str:
    """What a parsed TOML value is, in TOML's words: "a table", "a date-time"."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.datetime):
        return "a date-time"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, datetime.time):
        return "a time"
    return type(value).__name__


def short(value: Any) -> str:
    """``repr(value)`` cut to 60 characters: a value quoted in a message stays one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
