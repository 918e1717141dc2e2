"""Reading recipe files: bounded, each file once, an ``extends`` chain as a loop.

A recipe is untrusted input. A file is read only when it is a regular file of at most
MAX_RECIPE_BYTES, must be UTF-8 TOML nested at most MAX_NESTING levels, and may name at most
``schema.LIST_LIMITS`` entries per list; a chain has at most MAX_EXTENDS files and no cycle.
Every way a file can be unreadable is a :class:`RecipeError` naming it (and the line, where
there is one). What is read is kept as a :class:`SourceFile`, text and data, so that nothing
reads the file again to find a line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ..errors import Problem, RecipeError
from ..schema import LIST_LIMITS
from .find import find_recipe, is_file, looks_like_path
from .messages import list_hint
from .sourcemap import KeyPath, SourceFile, dotted, locate

MAX_RECIPE_BYTES: Final = 1 << 20
MAX_NESTING: Final = 32  # tables and arrays in a recipe; real ones need 4 or 5
MAX_EXTENDS: Final = 32  # recipes in an extends chain, the recipe itself included


def read_toml(path: Path) -> SourceFile:
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
    deep = too_deep(data, MAX_NESTING)
    if deep is not None:
        raise RecipeError(Problem(path, dotted(deep), f"is nested more than {MAX_NESTING} "
                                  "tables or arrays deep", None, locate(text, deep)))
    return SourceFile(path, text, data)


def too_deep(data: Mapping[str, Any], limit: int) -> KeyPath | None:
    """The key path of a value nested more than ``limit`` levels deep, or None.

    Iterative: the data was just parsed from an untrusted file, and recursion is what it
    would exhaust."""
    stack: list[tuple[Any, KeyPath]] = [(data, [])]
    while stack:
        node, at = stack.pop()
        items: Any = node.items() if isinstance(node, dict) else \
            enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            if isinstance(value, dict | list):
                if len(at) >= limit:
                    return [*at, key][:4]
                stack.append((value, [*at, key]))
    return None


def load_chain(path: Path, cwd: Path | None = None) -> list[SourceFile]:
    """The recipe and its ``extends`` ancestors, each read once, root ancestor first.

    A loop, not recursion, and at most MAX_EXTENDS recipes: a chain of a thousand must be an
    error naming it, not a RecursionError. Each file's lists are checked against LIST_LIMITS
    as it is read, before anything looks at their items."""
    files: list[SourceFile] = []
    seen: list[Path] = []
    while True:
        resolved = path.resolve()
        if resolved in seen:
            cycle = " -> ".join(str(p) for p in [*seen, resolved])
            raise RecipeError(Problem(seen[-1], "extends", f"extends cycle: {cycle}",
                                      "remove one of the extends keys"))
        if len(files) == MAX_EXTENDS:
            raise RecipeError(_chain_too_long(files, path))
        src = read_toml(path)
        check_list_sizes(src)
        files.append(src)
        seen.append(resolved)
        parent_ref = src.data.get("extends")
        if parent_ref is None:
            return files[::-1]
        path = _parent_path(src, parent_ref, cwd)


def _chain_too_long(files: list[SourceFile], next_path: Path) -> Problem:
    """The problem of a chain longer than MAX_EXTENDS, named by its first and last links."""
    names = [str(f.path) for f in files] + [str(next_path)]
    shown = names if len(names) <= 6 else [*names[:3], f"... ({len(names) - 5} more)", *names[-2:]]
    leaf = files[0]
    return Problem(leaf.path, "extends", f"the extends chain is longer than {MAX_EXTENDS} "
                   f"recipes: {' -> '.join(shown)} -> ...",
                   f"a recipe may have at most {MAX_EXTENDS - 1} ancestors; flatten the chain "
                   "by merging recipes", locate(leaf.text, ["extends"]))


def _parent_path(src: SourceFile, parent_ref: Any, cwd: Path | None) -> Path:
    """The file ``extends = parent_ref`` of ``src`` names, or a RecipeError at that key.

    A path is relative to the file that names it; a name is looked up on the search path."""
    path = src.path

    def line() -> int | None:  # only for a problem: it scans the whole text
        return locate(src.text, ["extends"])

    if not isinstance(parent_ref, str) or not parent_ref:
        raise RecipeError(Problem(path, "extends", "must be a recipe name or a relative path",
                                  line=line()))
    try:
        if looks_like_path(parent_ref):
            parent = Path(parent_ref) if Path(parent_ref).is_absolute() else path.parent / parent_ref
            if not is_file(parent):
                raise RecipeError(Problem(path, "extends", f"parent recipe '{parent_ref}' not "
                                          f"found (looked for {parent})", line=line()))
            return parent
        return find_recipe(parent_ref, cwd)
    except RecipeError as e:
        if e.problems[0].file == path:
            raise
        raise RecipeError(Problem(path, "extends", f"parent recipe '{parent_ref}' not found",
                                  e.problems[0].hint, line())) from None


def check_list_sizes(src: SourceFile) -> None:
    """Refuse a list longer than LIST_LIMITS in one file, before anything looks at its items."""
    for key, limit in LIST_LIMITS.items():
        value = src.data.get(key)
        if isinstance(value, list) and len(value) > limit:
            raise RecipeError(Problem(src.path, key, f"has {len(value)} entries; a recipe may "
                                      f"have at most {limit}", list_hint(key),
                                      locate(src.text, [key])))
