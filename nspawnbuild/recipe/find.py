"""Finding a recipe: a path, or a name looked up on the search path.

A name is looked up in ``./recipes``, then ``.``, then the example recipes shipped with
nspawnbuild, so that a project's own recipe shadows an example of the same name. The CLI and
``extends`` resolve names the same way, through :func:`find_recipe`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import Problem, RecipeError
from ..settings import suggest


def project_recipes_dir() -> Path:
    """The example recipes shipped in the nspawnbuild source tree (``recipes/``)."""
    return Path(__file__).resolve().parent.parent.parent / "recipes"


def search_path(cwd: Path | None = None) -> list[Path]:
    """Where recipe names are looked up, in order, each directory once."""
    cwd = cwd or Path.cwd()
    dirs = [cwd / "recipes", cwd, project_recipes_dir()]
    seen: list[Path] = []
    for d in dirs:
        if d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def looks_like_path(ref: str) -> bool:
    """Whether a recipe reference is a path (has a '/' or ends with .toml) rather than a name."""
    return "/" in ref or ref.endswith(".toml")


def find_recipe(ref: str, cwd: Path | None = None) -> Path:
    """Resolve a recipe reference (a name or a path) to a file, or raise RecipeError."""
    if looks_like_path(ref):
        path = Path(ref)
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        if not is_file(path):
            if path.is_dir():
                raise RecipeError(Problem(path, None, "is a directory, not a recipe file"))
            what = "is a symbolic link to a missing file" if path.is_symlink() else \
                "recipe file not found"
            raise RecipeError(Problem(path, None, what,
                                      "check the path, or give a recipe name instead"))
        return path
    for d in search_path(cwd):
        candidate = d / f"{ref}.toml"
        if is_file(candidate):
            return candidate
    known = sorted({p.stem for d in search_path(cwd) if d.is_dir() for p in d.glob("*.toml")})
    hint = suggest(ref, known) or (f"known recipes: {', '.join(known)}" if known else
                                   "create recipes/NAME.toml")
    raise RecipeError(Problem(None, None, f"no recipe named '{ref}' in "
                              + ", ".join(str(d) for d in search_path(cwd)), hint))


def is_file(path: Path) -> bool:
    """Path.is_file that says False, not OSError, for a name too long or otherwise unusable."""
    try:
        return path.is_file()
    except OSError:
        return False


def list_recipes(cwd: Path | None = None) -> list[Path]:
    """Every recipe file on the search path, sorted by name; the first one wins for a name."""
    found: dict[str, Path] = {}
    for d in search_path(cwd):
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.stem, p)
    return [found[k] for k in sorted(found)]
