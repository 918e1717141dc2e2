"""Exceptions that carry a message meant for the user, and the exit code that goes with it.

Two kinds exist because the user has to react differently: bad input (exit 2) is fixed by
editing a recipe or a command line, a failed build (exit 1) by reading its log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: where it is, what is wrong, and how to fix it."""

    file: Path | None
    key: str | None
    message: str
    hint: str | None = None
    line: int | None = None

    def format(self) -> str:
        where = str(self.file) if self.file else "<recipe>"
        if self.line:
            where += f":{self.line}"
        text = f"{where}: "
        if self.key:
            text += f"key '{self.key}': "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class NspawnbuildError(Exception):
    """Base class: an error whose message is complete and needs no traceback."""

    exit_code = EXIT_BUILD_FAILED


class RecipeError(NspawnbuildError):
    """A recipe (or a command-line argument naming one) is invalid. Exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: Problem | Iterable[Problem]):
        found = [problems] if isinstance(problems, Problem) else list(problems)
        self.problems = sorted(found, key=lambda p: (str(p.file), p.line or 0))
        super().__init__("\n".join(p.format() for p in self.problems))


def error_lines(error: NspawnbuildError) -> str:
    """The text printed for an error: one ``error:`` line per problem."""
    if isinstance(error, RecipeError):
        return "\n".join(f"error: {p.format()}" for p in error.problems)
    return f"error: {error}"


class BuildError(NspawnbuildError):
    """A build step failed; the message names the step and the log to read."""

    exit_code = EXIT_BUILD_FAILED


class HostToolMissing(BuildError):
    """A program the build needs is not installed on this host."""

    def __init__(self, tool: str, package: str, why: str):
        super().__init__(
            f"'{tool}' is not installed on this host but is needed {why}; "
            f"install it with: apt-get install {package}"
        )
