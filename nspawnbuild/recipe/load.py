"""Load a TOML recipe: find it, read it, apply ``extends``, validate it, fill in defaults.

Everything a user can get wrong in a recipe is caught here, before any work starts, and
reported with the file, the key, the line where it can be found, and how to fix it.

A recipe is untrusted input, so loading one is bounded and confined: it reads files only from
the directory of the recipe that names them (``[[files]]`` src, templates, ``file://``
sources; see ``nspawnbuild.fetch.confine``), an ``extends`` chain has at most MAX_EXTENDS
recipes, lists have at most ``schema.LIST_LIMITS`` entries, and templates render in a child
process with a time, output and memory limit. ``validate``, ``list``, ``show`` and ``build``
all load recipes through :func:`load_recipe`, so the bounds hold for each of them.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import json
import os
import re
import resource
import select
import signal
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import jsonschema

from .digests import canonical_json
from .errors import Problem, RecipeError
from .fetch import Refused, check_confined, is_local, local_path, read_confined
from .plugins import get_plugin_manager
from .schema import (
    COMPRESSION_LEVELS,
    LIST_LIMITS,
    MACHINE_NAME_HINT,
    MACHINE_NAME_PATTERN,
    SOURCE_MAX_SIZE_DEFAULT,
    SOURCE_TIMEOUT_DEFAULT,
    full_schema,
)
from .settings import suggest, table_to_settings
from .sizes import parse_size

DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z; see README "Reproducibility"
DEFAULT_TARGET_SYSTEMD = 252
DEFAULT_LEVELS = {"zstd": 9, "xz": 6, "gzip": 9, "none": 0}  # zstd: see README "Compression"
APPEND_LISTS = ("packages", "post", "files", "sources")
#: append lists whose entries are kept even when equal to an inherited one
_KEEP_DUPLICATES = ("post", "files", "sources")
MAX_RECIPE_BYTES = 1 << 20
MAX_FILE_BYTES = 1 << 30
MAX_FILES_TOTAL_BYTES = 1 << 30  # every [[files]] src of a recipe together: read at load time
MAX_NESTING = 32  # tables and arrays in a recipe; real ones need 4 or 5
MAX_EXTENDS = 32  # recipes in an extends chain, the recipe itself included
MAX_PROBLEMS = 50  # problems listed for one recipe; locating each one reads the recipe again
#: bounds on rendering the templates of one recipe (all of them together, but the source)
TEMPLATE_SECONDS = 10.0
TEMPLATE_OUTPUT_BYTES = 16 << 20
TEMPLATE_SOURCE_BYTES = 1 << 20  # one template's source
TEMPLATE_MEMORY_BYTES = 256 << 20  # what a rendering may allocate beyond what the process had
TEMPLATE_MAX_INT_BITS = 1 << 20  # a ** b beyond this is refused before it is computed

# TOML has distinct integer and float types: 3.0 is not an integer, whatever JSON Schema says.
_TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                          type_checker=_TYPE_CHECKER)

_NAME_RE = re.compile(MACHINE_NAME_PATTERN)


@dataclass(frozen=True)
class FileEntry:
    """A ``[[files]]`` entry with its source resolved against the recipe that declared it."""

    src: Path
    dest: str
    mode: int | None
    owner: str | None
    template: bool
    declared_in: Path
    index: int
    content: bytes = field(repr=False, default=b"")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class SourceEntry:
    """A ``[[sources]]`` entry: a file to download by URL, check by sha256 and install."""

    url: str
    sha256: str  # lower case
    dest: str
    extract: bool
    strip_components: int
    mode: int  # without extract; 0o644 unless the recipe says otherwise
    declared_in: Path
    index: int  # position among the [[sources]] of the file that declares it
    max_size: int = parse_size(SOURCE_MAX_SIZE_DEFAULT)  # bytes the download may have
    timeout: int = SOURCE_TIMEOUT_DEFAULT  # seconds the whole download may take

    @property
    def key(self) -> str:
        """``sources[N]`` as the declaring file counts, for messages."""
        return f"sources[{self.index}]"

    def as_dict(self) -> dict[str, Any]:
        """What shapes the installed result (for the rootfs digest)."""
        out: dict[str, Any] = {"url": self.url, "sha256": self.sha256, "dest": self.dest,
                               "extract": self.extract}
        if self.extract:
            out["strip_components"] = self.strip_components
        else:
            out["mode"] = self.mode
        return out


@dataclass
class Recipe:
    """A validated recipe with ``extends`` applied and defaults filled in."""

    name: str
    path: Path
    chain: list[Path]
    data: dict[str, Any]
    files: list[FileEntry]
    sources: list[SourceEntry] = field(default_factory=list)

    @property
    def base(self) -> dict[str, Any]:
        return self.data["base"]

    @property
    def packages(self) -> list[str]:
        return list(self.data.get("packages", []))

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return self.data.get("features", {})

    def feature(self, name: str) -> dict[str, Any] | None:
        """The ``[features.<name>]`` table, or None when the feature is off."""
        return self.features.get(name)

    @property
    def post(self) -> list[dict[str, Any]]:
        return list(self.data.get("post", []))

    @property
    def epoch(self) -> int:
        return int(self.data["epoch"])

    @property
    def target_systemd(self) -> int:
        return int(self.data["target_systemd"])

    @property
    def output(self) -> dict[str, Any]:
        return self.data["output"]

    def digest(self) -> str:
        """sha256 of the resolved recipe and the content of its files: its identity.

        Whitespace, comments, key order and the recipe's location do not change it.
        """
        doc = {"recipe": self.data, "files": [f.sha256 for f in self.files]}
        return hashlib.sha256(canonical_json(doc)).hexdigest()


# -- finding recipes --------------------------------------------------------------------------

def project_recipes_dir() -> Path:
    """The example recipes shipped in the nspawnbuild source tree."""
    return Path(__file__).resolve().parent.parent / "recipes"


def search_path(cwd: Path | None = None) -> list[Path]:
    """Where recipe names are looked up, in order."""
    cwd = cwd or Path.cwd()
    dirs = [cwd / "recipes", cwd, project_recipes_dir()]
    seen: list[Path] = []
    for d in dirs:
        if d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.endswith(".toml")


def find_recipe(ref: str, cwd: Path | None = None) -> Path:
    """Resolve a recipe reference (a name or a path) to a file, or raise RecipeError."""
    if looks_like_path(ref):
        path = Path(ref)
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        if not _is_file(path):
            if path.is_dir():
                raise RecipeError(Problem(path, None, "is a directory, not a recipe file"))
            what = "is a symbolic link to a missing file" if path.is_symlink() else \
                "recipe file not found"
            raise RecipeError(Problem(path, None, what,
                                      "check the path, or give a recipe name instead"))
        return path
    for d in search_path(cwd):
        candidate = d / f"{ref}.toml"
        if _is_file(candidate):
            return candidate
    known = sorted({p.stem for d in search_path(cwd) if d.is_dir() for p in d.glob("*.toml")})
    hint = suggest(ref, known) or (f"known recipes: {', '.join(known)}" if known else
                                   "create recipes/NAME.toml")
    raise RecipeError(Problem(None, None, f"no recipe named '{ref}' in "
                              + ", ".join(str(d) for d in search_path(cwd)), hint))


def _is_file(path: Path) -> bool:
    """Path.is_file that says False, not OSError, for a name too long or otherwise unusable."""
    try:
        return path.is_file()
    except OSError:
        return False


def list_recipes(cwd: Path | None = None) -> list[Path]:
    """Every recipe file on the search path, first one wins for a name."""
    found: dict[str, Path] = {}
    for d in search_path(cwd):
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.stem, p)
    return [found[k] for k in sorted(found)]


# -- reading and merging ----------------------------------------------------------------------

@dataclass
class _Doc:
    path: Path
    text: str
    data: dict[str, Any]


def read_toml(path: Path) -> _Doc:
    """Read one recipe file, turning every way it can be unreadable into a RecipeError."""
    try:
        st = path.stat()
        if not path.is_file():
            raise RecipeError(Problem(path, None, "is not a regular file"))
        if st.st_size > MAX_RECIPE_BYTES:
            raise RecipeError(Problem(path, None, f"is {st.st_size} bytes; a recipe may have "
                                      f"at most {MAX_RECIPE_BYTES}"))
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(Problem(path, None, "recipe file not found")) from None
    except PermissionError:
        raise RecipeError(Problem(path, None, "recipe file is not readable",
                                  "check its permissions")) from None
    except IsADirectoryError:
        raise RecipeError(Problem(path, None, "is a directory, not a recipe file")) from None
    except OSError as e:
        raise RecipeError(Problem(path, None, f"cannot read the recipe file: {e.strerror}")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(Problem(path, None, f"is not UTF-8 text (byte {e.start})",
                                  "save the recipe as UTF-8")) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        raise RecipeError(Problem(path, None, f"TOML syntax error: {e}",
                                  "see https://toml.io for the syntax",
                                  int(m.group(1)) if m else None)) from None
    except RecursionError:
        raise RecipeError(Problem(path, None, "TOML syntax error: arrays or inline tables are "
                                  f"nested too deeply (a recipe may nest {MAX_NESTING} levels)")
                          ) from None
    deep = _too_deep(data, MAX_NESTING)
    if deep is not None:
        raise RecipeError(Problem(path, _dotted(deep), f"is nested more than {MAX_NESTING} "
                                  "tables or arrays deep", None, locate(text, deep)))
    return _Doc(path, text, data)


def _too_deep(data: dict[str, Any], limit: int) -> list[Any] | None:
    """The key path of a value nested more than ``limit`` levels deep, or None (iterative)."""
    stack: list[tuple[Any, list[Any]]] = [(data, [])]
    while stack:
        node, at = stack.pop()
        items = node.items() if isinstance(node, dict) else \
            enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            if isinstance(value, dict | list):
                if len(at) >= limit:
                    return [*at, key][:4]
                stack.append((value, [*at, key]))
    return None


def merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Child values win; tables merge key by key; the lists in APPEND_LISTS append."""
    out = copy.deepcopy(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif key in APPEND_LISTS and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + [value[j] for j in _appended(key, out[key], value)]
        else:
            out[key] = copy.deepcopy(value)
    return out


def _appended(key: str, before: list[Any], items: list[Any]) -> list[int]:
    """The indexes of ``items`` that appending them to ``before`` keeps: all of them for the
    lists in _KEEP_DUPLICATES, else those not already there.

    A set, not ``item in before``: that is quadratic, and ten thousand packages in each
    recipe of a chain would take hours."""
    if key in _KEEP_DUPLICATES:
        return list(range(len(items)))
    seen = {_hashable(v) for v in before}
    kept = []
    for j, item in enumerate(items):
        h = _hashable(item)
        if h not in seen:
            seen.add(h)
            kept.append(j)
    return kept


def _hashable(value: Any) -> Any:
    """``value`` as a set member that is equal where the values are (tables and arrays too)."""
    try:
        hash(value)
        return value
    except TypeError:
        return ("\0json", json.dumps(value, sort_keys=True, default=str))


def _load_chain(path: Path, cwd: Path | None) -> list[_Doc]:
    """The recipe and its ``extends`` ancestors, root ancestor first.

    A loop, not recursion, and at most MAX_EXTENDS recipes: a chain of a thousand must be an
    error naming it, not a RecursionError."""
    docs: list[_Doc] = []
    seen: list[Path] = []
    while True:
        resolved = path.resolve()
        if resolved in seen:
            cycle = " -> ".join(str(p) for p in [*seen, resolved])
            raise RecipeError(Problem(seen[-1], "extends", f"extends cycle: {cycle}",
                                      "remove one of the extends keys"))
        if len(docs) == MAX_EXTENDS:
            raise RecipeError(_chain_too_long(docs, path))
        doc = read_toml(path)
        _check_list_sizes(doc)
        docs.append(doc)
        seen.append(resolved)
        parent_ref = doc.data.get("extends")
        if parent_ref is None:
            return docs[::-1]
        path = _parent_path(doc, parent_ref, cwd)


def _chain_too_long(docs: list[_Doc], next_path: Path) -> Problem:
    """The problem of a chain longer than MAX_EXTENDS, named by its first and last links."""
    names = [str(d.path) for d in docs] + [str(next_path)]
    shown = names if len(names) <= 6 else [*names[:3], f"... ({len(names) - 5} more)", *names[-2:]]
    leaf = docs[0]
    return Problem(leaf.path, "extends", f"the extends chain is longer than {MAX_EXTENDS} "
                   f"recipes: {' -> '.join(shown)} -> ...",
                   f"a recipe may have at most {MAX_EXTENDS - 1} ancestors; flatten the chain "
                   "by merging recipes", locate(leaf.text, ["extends"]))


def _parent_path(doc: _Doc, parent_ref: Any, cwd: Path | None) -> Path:
    """The file ``extends = parent_ref`` of ``doc`` names, or a RecipeError at that key."""
    path = doc.path
    if not isinstance(parent_ref, str) or not parent_ref:
        raise RecipeError(Problem(path, "extends", "must be a recipe name or a relative path",
                                  line=locate(doc.text, ["extends"])))
    try:
        if looks_like_path(parent_ref):
            parent = (path.parent / parent_ref) if not Path(parent_ref).is_absolute() else Path(parent_ref)
            if not _is_file(parent):
                raise RecipeError(Problem(path, "extends", f"parent recipe '{parent_ref}' not "
                                          f"found (looked for {parent})",
                                          line=locate(doc.text, ["extends"])))
            return parent
        return find_recipe(parent_ref, cwd)
    except RecipeError as e:
        if e.problems[0].file == path:
            raise
        raise RecipeError(Problem(path, "extends", f"parent recipe '{parent_ref}' not found",
                                  e.problems[0].hint, locate(doc.text, ["extends"]))) from None


def _check_list_sizes(doc: _Doc) -> None:
    """Refuse a list longer than LIST_LIMITS in one file, before anything looks at its items."""
    for key, limit in LIST_LIMITS.items():
        value = doc.data.get(key)
        if isinstance(value, list) and len(value) > limit:
            raise RecipeError(Problem(doc.path, key, f"has {len(value)} entries; a recipe may "
                                      f"have at most {limit}", _list_hint(key),
                                      locate(doc.text, [key])))


def _list_hint(key: str) -> str:
    if key == "packages":
        return "install large package sets with a [[post]] step, or from a metapackage"
    return f"merge {key} entries"


# -- locating keys for messages ---------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


def _split_key(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in key.split(".")]


def locate(text: str, path: list[str | int]) -> int | None:
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


# -- validation -------------------------------------------------------------------------------

def _dotted(path: list[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _owner_of(key_path: list[Any], docs: list[_Doc], origins: dict[str, list[tuple[int, int]]]
              ) -> tuple[_Doc, list[Any]]:
    """Which file in the chain set ``key_path`` (child-most wins), and the path in that file."""
    if key_path and key_path[0] in origins and len(key_path) > 1 and isinstance(key_path[1], int) \
            and 0 <= key_path[1] < len(origins[key_path[0]]):  # an index past a de-duplicated list
        doc_i, local = origins[key_path[0]][key_path[1]]
        return docs[doc_i], [key_path[0], local, *key_path[2:]]
    for doc in reversed(docs):
        node: Any = doc.data
        ok = True
        for part in key_path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                ok = False
                break
        if ok and key_path:
            return doc, key_path
    return docs[-1], key_path


def _schema_problem(err: jsonschema.ValidationError) -> tuple[list[Any], str, str | None]:
    path = list(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    hint = schema.get("x-hint")
    inst = err.instance
    if err.validator == "additionalProperties" and isinstance(inst, dict):
        known = schema.get("properties", {})
        extra = [k for k in inst if k not in known]
        key = extra[0] if extra else "?"
        section = _dotted(path) or "the recipe"
        if path == ["features"]:
            msg = f"unknown feature '{key}'"
            hint = suggest(key, known) or (
                f"known features: {', '.join(sorted(known))}" if known else
                "no feature plugins are installed") + "; see `nspawnbuild plugins`"
        else:
            msg = f"unknown key '{key}' in {section}"
            hint = suggest(key, known) or f"allowed keys: {', '.join(sorted(known))}"
        return [*path, key], msg, hint
    if err.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        key = missing[0] if missing else "?"
        return [*path, key], "is required but missing", hint
    if err.validator == "type":
        want = schema.get("type")
        want_s = " or ".join(want) if isinstance(want, list) else want
        return path, f"must be {_article(want_s)}, not {_toml_type(inst)} ({_short(inst)})", hint
    if err.validator == "pattern":
        return path, f"invalid value {_short(inst)}", hint
    if err.validator == "enum":
        choices = ", ".join(repr(c) for c in schema.get("enum", []))
        return path, f"invalid value {_short(inst)}; must be one of {choices}", \
            suggest(str(inst), [str(c) for c in schema.get("enum", [])]) or hint
    if err.validator == "anyOf" and schema.get("x-hint"):
        return path, f"invalid value {_short(inst)}", hint
    if err.validator == "maxItems" and isinstance(inst, list):
        return path, (f"has {len(inst)} entries (with those of the recipes it extends); a recipe "
                      f"may have at most {schema.get('maxItems')}"), hint or _list_hint(_dotted(path))
    if err.validator == "uniqueItems" and isinstance(inst, list):
        twice = _first_duplicate(inst)
        return path, "has non-unique elements" + (f": {_short(twice[0])} is there twice"
                                                  if twice else ""), hint or "remove the second one"
    return path, _short_text(err.message), hint


def _first_duplicate(items: list[Any]) -> tuple[Any] | None:
    """The first item that is there twice (in a tuple, as it may be any value), or None."""
    seen: set[Any] = set()
    for item in items:
        h = _hashable(item)
        if h in seen:
            return (item,)
        seen.add(h)
    return None


def _short_text(text: str, limit: int = 300) -> str:
    """A message of jsonschema's, which can quote a whole (huge) value, cut to ``limit``."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _article(word: str | None) -> str:
    names = {"string": "a string", "integer": "an integer", "boolean": "a boolean (true/false)",
             "array": "an array", "object": "a table", "number": "a number"}
    if not word:
        return "a different type"
    return " or ".join(names.get(w.strip(), w) for w in word.split(" or "))


def _toml_type(value: Any) -> str:
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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_recipe(ref: str | Path, cwd: Path | None = None) -> Recipe:
    """Find, read, merge and validate a recipe. Raises RecipeError with every problem found."""
    path = Path(ref) if isinstance(ref, Path) else find_recipe(ref, cwd)
    docs = _load_chain(path, cwd)
    leaf = docs[-1]

    merged: dict[str, Any] = {}
    origins: dict[str, list[tuple[int, int]]] = {k: [] for k in APPEND_LISTS}
    for i, doc in enumerate(docs):
        inherited = {k: v for k, v in doc.data.items() if k not in ("name", "extends")}
        if doc is leaf:
            inherited = dict(doc.data)
            inherited.pop("extends", None)
        for key in APPEND_LISTS:
            value = doc.data.get(key)
            if isinstance(value, list):
                before = merged.get(key)
                if not isinstance(before, list):  # merge() replaces it: no dedup against it
                    origins[key] = []
                    before = []
                origins[key] += [(i, j) for j in _appended(key, before, value)]
        merged = merge(merged, inherited)

    problems: list[Problem] = []
    unlisted = 0

    def add(key_path: list[Any], message: str, hint: str | None = None) -> None:
        nonlocal unlisted
        if len(problems) >= MAX_PROBLEMS:
            unlisted += 1
            return
        doc, local = _owner_of(key_path, docs, origins)
        problems.append(Problem(doc.path, _dotted(local) or None, message, hint,
                                locate(doc.text, local)))

    def raise_if_any() -> None:
        if problems:
            more = [Problem(None, None, f"{unlisted} more problems in {leaf.path} are not "
                            f"listed (at most {MAX_PROBLEMS} are)", "fix these and validate "
                            "again")] if unlisted else []
            raise RecipeError([*problems, *more])

    pm = get_plugin_manager()
    features: dict[str, dict[str, Any]] = {}
    for table in pm.hook.nspawnbuild_feature_schemas():
        features.update(table or {})
    distro_names = sorted({n for names in pm.hook.nspawnbuild_distro_names() for n in names})

    distro_cls = None
    base = merged.get("base")
    if isinstance(base, dict) and isinstance(base.get("distro"), str):
        if base["distro"] not in distro_names:
            add(["base", "distro"], f"unknown distro '{base['distro']}'",
                suggest(base["distro"], distro_names)
                or f"known distros: {', '.join(distro_names) or 'none (no distro plugin loaded)'}")
        else:
            distro = pm.hook.nspawnbuild_make_distro(base={**base})
            distro_cls = type(distro)

    schema = full_schema(getattr(distro_cls, "base_schema", None), features)
    validator = _Validator(schema)
    for err in sorted(validator.iter_errors(merged), key=lambda e: list(map(str, e.absolute_path))):
        key_path, message, hint = _schema_problem(err)
        add(key_path, message, hint)
    raise_if_any()

    # -- semantic checks the schema cannot express ----------------------------------------
    name = merged.get("name") or leaf.path.stem
    if "name" not in merged and not _NAME_RE.match(name):
        add(["name"], f"the name defaults to the file stem '{name}', which is not a valid "
            "machine name", f"set name = \"...\" in the recipe; {MACHINE_NAME_HINT}")

    out = merged.setdefault("output", {})
    out.setdefault("compression", "zstd")
    lo, hi = COMPRESSION_LEVELS[out["compression"]]
    out.setdefault("level", DEFAULT_LEVELS[out["compression"]])
    if not lo <= out["level"] <= hi:
        add(["output", "level"], f"level {out['level']} is out of range for "
            f"{out['compression']}", f"use {lo} to {hi}")

    for kind in ("nspawn", "unit"):
        _, setting_problems = table_to_settings(kind, merged.get(kind, {}))
        for dotted, message, hint in setting_problems:
            add(dotted.split("."), message, hint)

    files = _load_files(merged, docs, origins, add)
    sources = _load_sources(merged, docs, origins, add)
    raise_if_any()

    merged["name"] = name
    merged.pop("extends", None)
    env_epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if "epoch" not in merged:
        merged["epoch"] = int(env_epoch) if env_epoch.isdigit() and int(env_epoch) >= 86400 \
            else DEFAULT_EPOCH
    merged.setdefault("target_systemd", DEFAULT_TARGET_SYSTEMD)
    merged.setdefault("description", "")
    assert distro_cls is not None
    for key, value in distro_cls.defaults().items():
        merged["base"].setdefault(key, value)

    recipe = Recipe(name=name, path=leaf.path, chain=[d.path for d in docs], data=merged,
                    files=[], sources=sources)
    recipe.files = _render_templates(recipe, files, docs, origins)
    pm.hook.nspawnbuild_validate(recipe=recipe)
    return recipe


def _load_files(merged: dict[str, Any], docs: list[_Doc], origins: dict[str, list[tuple[int, int]]],
                add: Any) -> list[FileEntry]:
    """``[[files]]`` entries with their content, each src confined to its recipe's directory."""
    entries: list[FileEntry] = []
    total = 0
    for i, item in enumerate(merged.get("files", [])):
        doc_i, local = origins["files"][i]
        declared = docs[doc_i].path
        content = _read_src(declared.parent, item["src"], ["files", i, "src"], add,
                            min(MAX_FILE_BYTES, MAX_FILES_TOTAL_BYTES - total))
        if content is None:
            continue
        data, src = content
        total += len(data)
        mode = item.get("mode")
        entries.append(FileEntry(
            src=src, dest=item["dest"],
            mode=int(mode, 8) if isinstance(mode, str) else mode,
            owner=item.get("owner"), template=bool(item.get("template", False)),
            declared_in=declared, index=local, content=data))
    return entries


def _read_src(root: Path, name: str, key: list[Any], add: Any, limit: int
              ) -> tuple[bytes, Path] | None:
    """The content and real path of a ``[[files]]`` src, or None after reporting why not.

    ``limit`` is what is left of MAX_FILES_TOTAL_BYTES, or MAX_FILE_BYTES when that is less."""
    shown = Path(name) if Path(name).is_absolute() else root / name
    try:
        return read_confined(root, name, limit, f"a file may have at most {MAX_FILE_BYTES} "
                             f"bytes, and the [[files]] of a recipe {MAX_FILES_TOTAL_BYTES} "
                             "together; install large files with [[sources]]")
    except Refused as e:
        add(key, f"source {e}", e.hint)
    except FileNotFoundError:
        add(key, f"source file {shown} does not exist",
            "src is relative to the recipe file that names it")
    except OSError as e:
        add(key, f"cannot read {shown}: {e.strerror}")
    return None


def _load_sources(merged: dict[str, Any], docs: list[_Doc],
                  origins: dict[str, list[tuple[int, int]]], add: Any) -> list[SourceEntry]:
    """``[[sources]]`` entries, with the checks the schema cannot express."""
    entries: list[SourceEntry] = []
    for i, item in enumerate(merged.get("sources", [])):
        doc_i, local = origins["sources"][i]
        extract = bool(item.get("extract", False))
        ok = True
        if not extract and "strip_components" in item:
            add(["sources", i, "strip_components"], "is only allowed with extract = true",
                "strip_components drops leading directories of an archive's members; "
                "remove it or set extract = true")
            ok = False
        if extract and "mode" in item:
            add(["sources", i, "mode"], "is only allowed without extract",
                "unpacked files keep the modes in the archive; change them in a [[post]] step")
            ok = False
        if not extract and item["dest"].endswith("/"):
            add(["sources", i, "dest"], f"{item['dest']!r} ends with '/', but without extract "
                "dest is the path of the file itself",
                "give the full path, e.g. /usr/local/bin/tool, or set extract = true")
            ok = False
        if is_local(item["url"]) and not _local_source_ok(docs[doc_i].path.parent, item["url"],
                                                          ["sources", i, "url"], add):
            ok = False
        max_size = _source_max_size(item, ["sources", i, "max_size"], add)
        if not ok or max_size is None:
            continue
        mode = item.get("mode", 0o644)
        entries.append(SourceEntry(
            url=item["url"], sha256=item["sha256"].lower(), dest=item["dest"], extract=extract,
            strip_components=int(item.get("strip_components", 0)),
            mode=int(mode, 8) if isinstance(mode, str) else mode,
            declared_in=docs[doc_i].path, index=local, max_size=max_size,
            timeout=int(item.get("timeout", SOURCE_TIMEOUT_DEFAULT))))
    return entries


def _local_source_ok(root: Path, url: str, key: list[Any], add: Any) -> bool:
    """Whether a ``file://`` source names a regular file inside ``root`` (reported if not).

    Checked here so that ``validate`` refuses it; the build checks again when it reads it."""
    try:
        check_confined(root, local_path(url))
        return True
    except Refused as e:
        add(key, f"{url}: {e}", e.hint)
    except FileNotFoundError:
        add(key, f"{url}: no such file", "a file:// URL names an absolute path: "
            "file:///PATH, inside the directory of the recipe")
    except OSError as e:
        add(key, f"{url}: cannot read it: {e.strerror}")
    return False


def _source_max_size(item: dict[str, Any], key: list[Any], add: Any) -> int | None:
    """The entry's ``max_size`` in bytes (the default without one), or None after reporting."""
    value = item.get("max_size", SOURCE_MAX_SIZE_DEFAULT)
    size = value if isinstance(value, int) else parse_size(value)
    if size < 1:
        add(key, f"{value!r} is less than one byte", "give the most bytes the file may have, "
            "e.g. max_size = \"2G\"")
        return None
    return size


# -- templates --------------------------------------------------------------------------------

class _BoundedSandbox(jinja2.sandbox.SandboxedEnvironment):
    """Jinja's sandbox, with ``*``, ``**`` and ``+`` checked before they run.

    One expression such as ``'A' * 4000000000`` or ``10 ** 10 ** 9`` is a single call into C
    that no time check can interrupt; it is refused from its operands instead. (Intercepted
    operators are also never folded at compile time.)"""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)


_SIZED = (str, bytes, list, tuple)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Raise SecurityError when ``left OPERATOR right`` would be too large to compute."""
    limit = TEMPLATE_OUTPUT_BYTES
    length = None
    if operator == "*":
        seq, n = (left, right) if isinstance(left, _SIZED) else (right, left)
        if isinstance(seq, _SIZED) and isinstance(n, int):
            length = len(seq) * max(n, 0)
    elif operator == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
        length = len(left) + len(right)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 \
            and abs(left) > 1 and right * abs(left).bit_length() > TEMPLATE_MAX_INT_BITS:
        raise jinja2.exceptions.SecurityError(
            f"'{left} ** {right}' would have more than {TEMPLATE_MAX_INT_BITS} bits")
    if length is not None and length > limit:
        raise jinja2.exceptions.SecurityError(
            f"'{operator}' would make a {type(left if isinstance(left, _SIZED) else right).__name__} "
            f"of {length} items; a template may make at most {limit}")


class _RenderFailed(Exception):
    """A template could not be rendered; ``str()`` is the message, ``hint`` how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


_CONTEXT_HINT = "the context has `recipe` (the resolved recipe) and `name`"


def _render_templates(recipe: Recipe, files: list[FileEntry], docs: list[_Doc],
                      origins: dict[str, list[tuple[int, int]]]) -> list[FileEntry]:
    """Render ``template = true`` files with the recipe as context (sandboxed Jinja2).

    All templates of a recipe share TEMPLATE_SECONDS and TEMPLATE_OUTPUT_BYTES, so that a
    recipe with many templates is bounded as one with a single template is."""
    out: list[FileEntry] = []
    problems: list[Problem] = []
    context = {"recipe": recipe.data, "name": recipe.name}
    deadline = time.monotonic() + TEMPLATE_SECONDS
    budget = TEMPLATE_OUTPUT_BYTES
    for i, entry in enumerate(files):
        if not entry.template:
            out.append(entry)
            continue
        doc = docs[origins["files"][i][0]]
        key = f"files[{entry.index}].src"
        line = locate(doc.text, ["files", entry.index, "src"])
        try:
            data = _render_one(entry, context, deadline, budget)
        except _RenderFailed as e:
            problems.append(Problem(doc.path, key, str(e), e.hint, line))
            continue
        budget -= len(data)
        out.append(FileEntry(entry.src, entry.dest, entry.mode, entry.owner, True,
                             entry.declared_in, entry.index, data))
    if problems:
        raise RecipeError(problems)
    return out


def _render_one(entry: FileEntry, context: dict[str, Any], deadline: float, budget: int) -> bytes:
    """One template rendered to UTF-8 bytes, or _RenderFailed saying why not."""
    if len(entry.content) > TEMPLATE_SOURCE_BYTES:
        raise _RenderFailed(f"template {entry.src} is {len(entry.content)} bytes; a template may "
                            f"have at most {TEMPLATE_SOURCE_BYTES}",
                            "copy large files without template = true")
    try:
        source = entry.content.decode("utf-8")
    except UnicodeDecodeError:
        raise _RenderFailed(f"template {entry.src} is not UTF-8 text") from None
    seconds = deadline - time.monotonic()
    if seconds <= 0:
        raise _RenderFailed(f"template {entry.src} was not rendered: the templates of this "
                            f"recipe took more than {TEMPLATE_SECONDS:g} s together",
                            "templates are for small configuration files")
    status, payload = _in_child(lambda: _render_capped(source, context, budget,
                                                        time.monotonic() + seconds),
                                seconds, budget)
    if status == "ok":
        return payload
    message, hint = _failure(status, payload.decode("utf-8", "replace"), budget)
    raise _RenderFailed(f"template {entry.src} {message}", hint)


def _failure(status: str, detail: str, budget: int) -> tuple[str, str | None]:
    """The message (after "template SRC") and hint for a rendering that failed with ``status``."""
    if status == "template":
        return f"failed to render: {detail}", _CONTEXT_HINT
    if status == "error":
        return f"failed to render: {detail}", None
    if status == "size":
        limit = (f"{budget} bytes, the most" if budget == TEMPLATE_OUTPUT_BYTES else
                 f"the {budget} bytes left of the {TEMPLATE_OUTPUT_BYTES}")
        return (f"renders to more than {limit} a recipe's templates may render together",
                "templates are for configuration files; copy large files without template = true")
    if status == "memory":
        return (f"needs more than {TEMPLATE_MEMORY_BYTES >> 20} MiB of memory to render",
                "templates are for small configuration files")
    return (f"did not finish rendering within {TEMPLATE_SECONDS:g} s (the time a recipe's "
            "templates may take together)", "look for loops that run too long")


def _render_capped(source: str, context: dict[str, Any], budget: int, deadline: float
                   ) -> tuple[str, bytes]:
    """Render in chunks (jinja's generate), stopping past ``budget`` bytes or the deadline.

    Runs in the child: returns (status, payload) as _in_child passes them on."""
    try:
        template = _BoundedSandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                   autoescape=False).from_string(source)
        out = bytearray()  # not a list of chunks: a million small ones cost 40 bytes each
        for chunk in template.generate(context):
            out += chunk.encode("utf-8")
            if len(out) > budget:
                return "size", b""
            if time.monotonic() > deadline:
                return "time", b""
        return "ok", bytes(out)
    except MemoryError:
        return "memory", b""
    except jinja2.TemplateError as e:
        return "template", str(e).encode("utf-8", "replace")
    except Exception as e:  # the template is user code: {{ 1/0 }}, {{ name + 1 }}, ...
        return "error", f"{type(e).__name__}: {e}".encode("utf-8", "replace")


def _in_child(work: Callable[[], tuple[str, bytes]], seconds: float, max_payload: int
              ) -> tuple[str, bytes]:
    """Run ``work()`` -> (status, payload) in a forked child with bounded memory and time.

    A template is user code: in-process checks cannot interrupt one call into C that
    allocates gigabytes or runs for hours. The child has an address-space limit
    (TEMPLATE_MEMORY_BYTES above the parent's size) and a CPU limit, and is killed when it is
    not done ``seconds`` after it started; it writes nothing but its answer to a pipe."""
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(read_end)
        os.close(write_end)
        return "error", f"cannot start the rendering process: {e.strerror}".encode()
    if pid == 0:  # the child: whatever happens, it ends here and runs none of the parent's code
        try:
            os.close(read_end)
            _write_fully(write_end, _child_answer(work, seconds))
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        answer, killed = _read_answer(read_end, pid, time.monotonic() + seconds + 1,
                                      max_payload + 64)
    finally:
        os.close(read_end)
    status, _, payload = answer.partition(b"\n")
    if status:
        return status.decode(), payload
    # no answer: killed for time (by us, or SIGXCPU), or it could not even write (memory)
    return ("time" if killed in (signal.SIGKILL, signal.SIGXCPU) else "memory"), b""


def _child_answer(work: Callable[[], tuple[str, bytes]], seconds: float) -> bytes:
    """In the child: limit it, run ``work``, and frame its answer as ``STATUS\\nPAYLOAD``."""
    try:
        _limit_self(seconds)
        status, payload = work()
    except BaseException as e:  # anything at all is reported to the parent, as an answer
        status, payload = "error", f"{type(e).__name__}: {e}".encode("utf-8", "replace")
    return status.encode() + b"\n" + payload


def _limit_self(seconds: float) -> None:
    """In the child: cap the address space and the CPU time (it is killed past either)."""
    try:
        with open("/proc/self/statm") as fh:
            size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = size + TEMPLATE_MEMORY_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY
                                                else min(soft, hard), hard))
    except (OSError, ValueError):
        pass  # no /proc: the time limit still holds
    cpu = int(seconds) + 2
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu if hard == resource.RLIM_INFINITY
                                             else min(cpu, hard), hard))


def _write_fully(fd: int, data: bytes) -> None:
    """os.write until all of ``data`` is written (a pipe takes 64 KiB at a time)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_answer(fd: int, pid: int, deadline: float, limit: int) -> tuple[bytes, int | None]:
    """The child's answer (empty when it has none by ``deadline``: it is killed then) and the
    signal that ended it, if one did.

    The child is always reaped, also when the parent is interrupted."""
    chunks: list[bytes] = []
    size = 0
    done = False
    answer = b""
    poller = select.poll()  # not select(): a descriptor above 1023 is fine
    poller.register(fd, select.POLLIN)
    try:
        while size <= limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                break
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                done = True
                answer = b"".join(chunks)
                break
            chunks.append(chunk)
            size += len(chunk)
        else:
            answer = b"size\n"
    finally:
        if not done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, wait_status = os.waitpid(pid, 0)
    return answer, (os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None)
