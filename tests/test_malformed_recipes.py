"""Every malformed recipe in tests/malformed/ gives a clean error: exit 2, file and key named.

Adding a case is adding a file to tests/malformed/ and a line to EXPECTED; a case file with no
line in EXPECTED fails the test. Files a case needs (parents for ``extends``, ``[[files]]``
sources) live in tests/malformed/parents/ and tests/malformed/data/ and are not cases.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nspawnbuild.errors import RecipeError
from nspawnbuild.recipe.load import load_recipe

MALFORMED = Path(__file__).parent / "malformed"
CASES = sorted(p.name for p in MALFORMED.glob("*.toml"))


@dataclass(frozen=True)
class Expect:
    """What the error for a case must say.

    ``key``: the key the message names (``key 'KEY'``), None for problems with the whole
    file (syntax, encoding). ``file``: the file the problem is reported in, relative to
    tests/malformed/, when it is not the case file itself (a parent reached by ``extends``).
    ``text``: a fragment the message must also contain.
    """

    key: str | None
    text: str | None = None
    file: str | None = None


SYNTAX = "TOML syntax error"

EXPECTED: dict[str, Expect] = {
    # TOML syntax
    "toml-syntax-unclosed-table.toml": Expect(None, SYNTAX),
    "toml-syntax-unclosed-string.toml": Expect(None, SYNTAX),
    "toml-syntax-unclosed-array.toml": Expect(None, SYNTAX),
    "toml-syntax-duplicate-key.toml": Expect(None, SYNTAX),
    "toml-syntax-duplicate-table.toml": Expect(None, SYNTAX),
    "toml-syntax-missing-value.toml": Expect(None, SYNTAX),
    "toml-syntax-bare-word-value.toml": Expect(None, SYNTAX),
    "toml-syntax-invalid-escape.toml": Expect(None, SYNTAX),
    "toml-syntax-trailing-comma-inline-table.toml": Expect(None, SYNTAX),
    "toml-syntax-key-without-value.toml": Expect(None, SYNTAX),
    "toml-syntax-byte-order-mark.toml": Expect(None, SYNTAX),
    "toml-syntax-nested-too-deep.toml": Expect(None, "nested too deeply"),
    "non-utf8.toml": Expect(None, "is not UTF-8"),
    "nesting-too-deep.toml": Expect("nspawn.x.x.x", "nested more than"),
    # wrong types
    "packages-string.toml": Expect("packages", "must be an array"),
    "epoch-string.toml": Expect("epoch", "must be an integer"),
    "epoch-float.toml": Expect("epoch", "must be an integer, not a float"),
    "epoch-datetime.toml": Expect("epoch", "not a date-time"),
    "base-string.toml": Expect("base", "must be a table"),
    "post-table.toml": Expect("post", "must be an array"),
    "post-run-integer.toml": Expect("post[0].run", "must be a string"),
    "post-run-missing.toml": Expect("post[0].run", "required"),
    "post-shell-relative.toml": Expect("post[0].shell"),
    "files-mode-bogus.toml": Expect("files[0].mode"),
    "files-mode-float.toml": Expect("files[0].mode"),
    "files-template-string.toml": Expect("files[0].template", "must be a boolean"),
    "files-owner-bogus.toml": Expect("files[0].owner"),
    "output-level-string.toml": Expect("output.level", "must be an integer"),
    "output-level-float.toml": Expect("output.level", "must be an integer, not a float"),
    "output-string.toml": Expect("output", "must be a table"),
    "features-string.toml": Expect("features", "must be a table"),
    "nspawn-section-not-table.toml": Expect("nspawn.Exec", "must be a table"),
    # unknown keys
    "unknown-top-key.toml": Expect("pakages", "did you mean 'packages'?"),
    "unknown-top-key-no-suggestion.toml": Expect("colour", "allowed keys"),
    "base-unknown-key.toml": Expect("base.relase", "did you mean 'release'?"),
    "output-unknown-key.toml": Expect("output.compresion", "did you mean 'compression'?"),
    "post-unknown-key.toml": Expect("post[0].netwrk", "did you mean 'network'?"),
    "files-unknown-key.toml": Expect("files[0].templat", "did you mean 'template'?"),
    "features-unknown.toml": Expect("features.no-such-feature", "unknown feature"),
    # [base]
    "base-distro-unknown.toml": Expect("base.distro", "did you mean 'debian'?"),
    "base-missing.toml": Expect("base", "required"),
    "base-distro-missing.toml": Expect("base.distro", "required"),
    "base-mirror-with-space.toml": Expect("base.mirror"),
    "empty-file.toml": Expect("base", "required"),
    # machine names
    "name-underscore.toml": Expect("name", "machine name"),
    "name-leading-dash.toml": Expect("name", "machine name"),
    "name-leading-dot.toml": Expect("name", "machine name"),
    "name-trailing-dot.toml": Expect("name", "machine name"),
    "name-double-dot.toml": Expect("name", "machine name"),
    "name-65-chars.toml": Expect("name", "machine name"),
    "name-empty.toml": Expect("name", "machine name"),
    "bad_stem.toml": Expect("name", "file stem 'bad_stem'"),
    # [[files]]
    "files-src-missing.toml": Expect("files[0].src", "does not exist"),
    "files-src-directory.toml": Expect("files[0].src", "not a regular file"),
    "files-src-name-too-long.toml": Expect("files[0].src", "cannot read"),
    "files-dest-relative.toml": Expect("files[0].dest"),
    "files-dest-dotdot.toml": Expect("files[0].dest"),
    "files-dest-missing.toml": Expect("files[0].dest", "required"),
    "files-template-undefined-variable.toml": Expect("files[0].src", "'no_such_variable' is undefined"),
    "files-template-division-by-zero.toml": Expect("files[0].src", "failed to render"),
    # extends
    "extends-cycle.toml": Expect("extends", "extends cycle", file="parents/cycle-b.toml"),
    "extends-self.toml": Expect("extends", "extends cycle"),
    "extends-missing-parent-path.toml": Expect("extends", "not found"),
    "extends-missing-parent-name.toml": Expect("extends", "not found"),
    "extends-not-string.toml": Expect("extends"),
    "extends-parent-syntax-error.toml": Expect(None, SYNTAX, file="parents/syntax-error.toml"),
    "extends-parent-unknown-key.toml": Expect("pakages", "did you mean 'packages'?",
                                              file="parents/unknown-key.toml"),
    "extends-bad-package-after-string-parent.toml": Expect("packages[1]", "curl;reboot"),
    # absurd values
    "epoch-negative.toml": Expect("epoch"),
    "epoch-huge.toml": Expect("epoch"),
    "target-systemd-too-old.toml": Expect("target_systemd"),
    "output-level-99.toml": Expect("output.level"),
    "output-level-gzip-out-of-range.toml": Expect("output.level", "out of range for gzip"),
    "output-level-none-nonzero.toml": Expect("output.level", "out of range for none"),
    "output-compression-unknown.toml": Expect("output.compression", "must be one of"),
    # packages
    "packages-with-space.toml": Expect("packages[0]"),
    "packages-with-comma.toml": Expect("packages[0]"),
    "packages-with-semicolon.toml": Expect("packages[0]"),
    "packages-leading-dash.toml": Expect("packages[0]"),
    "packages-duplicate.toml": Expect("packages", "non-unique"),
    # .nspawn and unit settings
    "nspawn-value-newline.toml": Expect("nspawn.Exec.Environment", "line break"),
    "nspawn-value-section-injection.toml": Expect("nspawn.Exec.Hostname", "line break"),
    "nspawn-value-list-item-newline.toml": Expect("nspawn.Files.Bind", "line break"),
    "nspawn-value-trailing-backslash.toml": Expect("nspawn.Files.Bind", "backslash"),
    "nspawn-value-control-char.toml": Expect("nspawn.Exec.Hostname", "control character"),
    "nspawn-value-float.toml": Expect("nspawn.Exec.OOMScoreAdjust", "1.5"),
    "nspawn-section-unknown.toml": Expect("nspawn.Exek", "did you mean 'Exec'?"),
    "nspawn-exec-key-unknown.toml": Expect("nspawn.Exec.Bnd", "no setting Bnd="),
    "nspawn-files-key-unknown.toml": Expect("nspawn.Files.Bnd", "did you mean 'Bind'?"),
    "unit-install-section.toml": Expect("unit.Install", "not allowed"),
    "unit-value-section-injection.toml": Expect("unit.Service.Environment", "line break"),
    "unit-key-lowercase.toml": Expect("unit.Service.memory_max", "not a systemd setting name"),
    # [[sources]]
    "sources-sha256-short.toml": Expect("sources[0].sha256", "64 hex digits"),
    "sources-sha256-missing.toml": Expect("sources[0].sha256", "required"),
    "sources-url-ftp.toml": Expect("sources[0].url", "ftp://"),
    "sources-dest-relative.toml": Expect("sources[0].dest"),
    "sources-dest-dotdot.toml": Expect("sources[0].dest"),
    "sources-dest-trailing-slash.toml": Expect("sources[0].dest", "ends with '/'"),
    "sources-strip-without-extract.toml": Expect("sources[0].strip_components",
                                                 "only allowed with extract = true"),
    "sources-strip-negative.toml": Expect("sources[0].strip_components"),
    "sources-mode-with-extract.toml": Expect("sources[0].mode", "only allowed without extract"),
    "sources-mode-bogus.toml": Expect("sources[0].mode"),
    "sources-unknown-key.toml": Expect("sources[0].extrakt", "did you mean 'extract'?"),
    "sources-extends-bad-sha256.toml": Expect("sources[0].sha256", "not-a-digest"),
}


def nspawnbuild(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``nspawnbuild`` command (or the module, if the script is missing)."""
    script = Path(sys.executable).with_name("nspawnbuild")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "nspawnbuild.cli"]
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "xdg-cache")}
    env.pop("SOURCE_DATE_EPOCH", None)
    return subprocess.run([*argv, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          errors="replace", timeout=120)


def problem_line(file: Path, key: str | None) -> re.Pattern[str]:
    """One problem line naming ``file`` (and ``key``): ``FILE[:LINE]: key 'KEY': ...``."""
    where = re.escape(str(file)) + r"(:\d+)?: "
    return re.compile(where + (f"key '{re.escape(key)}': " if key else r"(?!key ')"))


def check_clean_error(result: subprocess.CompletedProcess[str], file: Path,
                      expect: Expect) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert problem_line(file, expect.key).search(result.stderr), result.stderr
    if expect.text:
        assert expect.text in result.stderr, result.stderr


def test_every_case_has_an_expectation():
    assert len(CASES) >= 40
    missing = [c for c in CASES if c not in EXPECTED]
    assert not missing, f"add these case files to EXPECTED: {missing}"
    stale = [c for c in EXPECTED if c not in CASES]
    assert not stale, f"EXPECTED names case files that do not exist: {stale}"


@pytest.mark.parametrize("case", CASES)
def test_validate_gives_clean_error(case: str, tmp_path: Path):
    expect = EXPECTED.get(case)
    assert expect is not None, f"tests/malformed/{case} has no entry in EXPECTED"
    path = MALFORMED / case
    result = nspawnbuild("validate", str(path), cwd=tmp_path)
    check_clean_error(result, MALFORMED / (expect.file or case), expect)
    assert result.stdout == ""


@pytest.mark.parametrize("case", CASES)
def test_build_gives_clean_error_and_writes_nothing(case: str, tmp_path: Path):
    expect = EXPECTED.get(case)
    assert expect is not None, f"tests/malformed/{case} has no entry in EXPECTED"
    out = tmp_path / "out"
    result = nspawnbuild("build", str(MALFORMED / case), "--out", str(out),
                         "--work-dir", str(tmp_path / "work"),
                         "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    check_clean_error(result, MALFORMED / (expect.file or case), expect)
    assert not out.exists() or not any(out.iterdir())


# -- recipes that cannot be read at all ------------------------------------------------------
# Tests run as root, and root reads a chmod 000 file anyway; so "unreadable" is tested with a
# recipe path that is a directory and one that is a dangling symbolic link.

def _unreadable(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "recipes-here" / "unreadable.toml"
    path.parent.mkdir()
    if kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "no-such-target.toml")
    return path


UNREADABLE = ["directory", "dangling-symlink"]


@pytest.mark.parametrize("kind", UNREADABLE)
@pytest.mark.parametrize("command", ["validate", "build"])
def test_unreadable_recipe(kind: str, command: str, tmp_path: Path):
    path = _unreadable(kind, tmp_path)
    extra = [] if command == "validate" else [
        "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
        "--cache-dir", str(tmp_path / "cache")]
    result = nspawnbuild(command, str(path), *extra, cwd=tmp_path)
    check_clean_error(result, path, Expect(None))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", UNREADABLE)
def test_unreadable_recipe_load_recipe(kind: str, tmp_path: Path):
    path = _unreadable(kind, tmp_path)
    for ref in (path, str(path)):
        with pytest.raises(RecipeError) as exc:
            load_recipe(ref)
        assert exc.value.problems[0].file == path


def test_unreadable_parent(tmp_path: Path):
    parent = _unreadable("directory", tmp_path)
    child = tmp_path / "child.toml"
    child.write_text(f'extends = "{parent}"\n')
    with pytest.raises(RecipeError) as exc:
        load_recipe(child)
    [problem] = exc.value.problems
    assert (problem.file, problem.key, problem.line) == (child, "extends", 1)


# -- load_recipe directly: line numbers and hints ---------------------------------------------

def _problem(case: str):
    with pytest.raises(RecipeError) as exc:
        load_recipe(MALFORMED / case)
    assert len(exc.value.problems) == 1, exc.value.problems
    return exc.value.problems[0]


@pytest.mark.parametrize(("case", "key", "line"), [
    ("unknown-top-key.toml", "pakages", 2),
    ("base-unknown-key.toml", "base.relase", 4),
    ("files-dest-relative.toml", "files[0].dest", 7),
    ("post-unknown-key.toml", "post[0].netwrk", 7),
    ("nspawn-value-section-injection.toml", "nspawn.Exec.Hostname", 6),
    ("output-level-gzip-out-of-range.toml", "output.level", 7),
    ("extends-bad-package-after-string-parent.toml", "packages[1]", 3),
    ("files-template-undefined-variable.toml", "files[0].src", 6),
    ("toml-syntax-unclosed-table.toml", None, 2),
    ("toml-syntax-duplicate-key.toml", None, 3),
])
def test_problem_line(case: str, key: str | None, line: int):
    problem = _problem(case)
    assert (problem.file, problem.key, problem.line) == (MALFORMED / case, key, line)
    assert problem.format().startswith(f"{MALFORMED / case}:{line}: ")


def test_did_you_mean_for_misspelt_key():
    problem = _problem("unknown-top-key.toml")
    assert problem.hint == "did you mean 'packages'?"
    assert problem.format().endswith("(did you mean 'packages'?)")


def test_problem_in_parent_names_parent():
    problem = _problem("extends-parent-unknown-key.toml")
    assert problem.file == MALFORMED / "parents" / "unknown-key.toml"
    assert (problem.key, problem.line) == ("pakages", 2)


def test_every_problem_is_reported(tmp_path: Path):
    recipe = tmp_path / "many.toml"
    recipe.write_text('pakages = ["vim"]\nepoch = "x"\n[base]\ndistro = "debian"\nrelase = "x"\n')
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    assert {p.key for p in exc.value.problems} == {"pakages", "epoch", "base.relase"}
    assert all(p.file == recipe for p in exc.value.problems)
