"""Collecting a recipe's problems, so that one ``validate`` run reports all of them.

Every check appends here instead of raising; the loader raises once, at the end, with every
problem found. The list is bounded (MAX_PROBLEMS): a hostile recipe with a million bad entries
must not make a million messages, each of which scans its file for a line number.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from ..errors import Problem, RecipeError
from .sourcemap import SourceMap

MAX_PROBLEMS: Final = 50  # problems listed for one recipe; locating each one reads its text


class Problems:
    """The problems found so far in the recipe of ``sources``, at most MAX_PROBLEMS of them."""

    def __init__(self, sources: SourceMap):
        self.sources = sources
        self.found: list[Problem] = []
        #: problems past MAX_PROBLEMS: counted, not listed (nor located)
        self.unlisted = 0

    def __bool__(self) -> bool:
        return bool(self.found)

    def at(self, key_path: Sequence[str | int], message: str, hint: str | None = None) -> None:
        """A problem with a key of the resolved recipe, located in the file that set it."""
        if self._full():
            return
        self.found.append(self.sources.problem_at(key_path, message, hint))

    def add(self, problems: Iterable[Problem]) -> None:
        """Problems made elsewhere (a plugin's, a template's)."""
        for problem in problems:
            if not self._full():
                self.found.append(problem)

    def _full(self) -> bool:
        if len(self.found) >= MAX_PROBLEMS:
            self.unlisted += 1
            return True
        return False

    def raise_if_any(self) -> None:
        """Raise a RecipeError with every problem found (and how many were not listed)."""
        if not self.found:
            return
        more = [Problem(None, None, f"{self.unlisted} more problems in {self.sources.leaf.path} "
                        f"are not listed (at most {MAX_PROBLEMS} are)",
                        "fix these and validate again")] if self.unlisted else []
        raise RecipeError([*self.found, *more])
