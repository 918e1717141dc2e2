"""[features.motd]: the feature added as one module under plugins/ (and its entry point).

The unit tests load recipes from temporary files and write into a plain directory tree (the
feature only writes a file, so no sandbox is needed); the integration test builds a Debian
image with it and reads /etc/motd from the tarball.
"""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, Env, tarball_of, unpack
from nspawnbuild.errors import RecipeError
from nspawnbuild.feature import AnyFeature
from nspawnbuild.plugins import get_registry, registered_entry_points
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.rootfs import RootfsContext
from nspawnbuild.steplog import StepLog
from nspawnbuild_plugins.motd import MAX_LENGTH, Motd, motd_file

BASE = '[base]\ndistro = "debian"\n'
HINT = f"plain text of at most {MAX_LENGTH} characters"


def load(tmp_path: Path, body: str) -> Recipe[AnyFeature]:
    path = tmp_path / "r.toml"
    path.write_text(BASE + textwrap.dedent(body))
    return load_recipe(path)


def refused(tmp_path: Path, body: str, key: str, *words: str) -> None:
    """Loading ``body`` fails with exactly one problem, at ``key``, that mentions ``words``."""
    with pytest.raises(RecipeError) as info:
        load(tmp_path, body)
    problems = info.value.problems
    assert [p.key for p in problems] == [key], str(info.value)
    text = problems[0].format()
    for word in words:
        assert word in text, text
    assert problems[0].file == tmp_path / "r.toml" and problems[0].line


def test_motd_is_registered_like_every_built_in() -> None:
    assert registered_entry_points()["motd"] == "nspawnbuild_plugins.motd"
    assert get_registry().features["motd"] is Motd


def test_the_table_turns_the_feature_on(tmp_path: Path) -> None:
    assert load(tmp_path, "").feature("motd") is None
    r = load(tmp_path, '[features.motd]\ntext = "Welcome"\n')
    motd = r.feature("motd")
    assert isinstance(motd, Motd) and motd.config.text == "Welcome"


def test_text_is_required(tmp_path: Path) -> None:
    refused(tmp_path, "[features.motd]\n", "features.motd.text", "required")


@pytest.mark.parametrize("value,words", [
    ('""', ["non-empty", HINT]),
    ("1", ["must be a string", HINT]),
    ('"red \\u001b[31malert"', ["invalid value", HINT]),  # an escape reaches every terminal
    ('"a\\tb"', ["invalid value", HINT]),
    ('"a\\rb"', ["invalid value", HINT]),
    ('"a\\u0000b"', ["invalid value", HINT]),
    (f'"{"x" * (MAX_LENGTH + 1)}"', [HINT]),
], ids=["empty", "number", "escape", "tab", "carriage-return", "nul", "too-long"])
def test_bad_text_is_refused_with_the_reason(tmp_path: Path, value: str, words: list[str]) -> None:
    refused(tmp_path, f"[features.motd]\ntext = {value}\n", "features.motd.text", *words)


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    refused(tmp_path, '[features.motd]\ntext = "hi"\ncolour = "red"\n', "features.motd.colour",
            "unknown key 'colour'", "allowed keys: text")


def test_longest_text_and_newlines_are_accepted(tmp_path: Path) -> None:
    r = load(tmp_path, f'[features.motd]\ntext = "{"x" * MAX_LENGTH}"\n')
    assert r.feature("motd") is not None
    r = load(tmp_path, '[features.motd]\ntext = """\nline one\nline two\n"""\n')
    motd = r.feature("motd")
    assert isinstance(motd, Motd) and motd.config.text == "line one\nline two\n"


@pytest.mark.parametrize("text,written", [
    ("hi", "hi\n"), ("hi\n", "hi\n"), ("two\nlines", "two\nlines\n"), ("gap\n\n", "gap\n\n"),
])
def test_the_file_ends_with_one_newline(text: str, written: str) -> None:
    assert motd_file(text) == written


@pytest.mark.skipif(os.geteuid() != 0, reason="files in an image are written owned by root")
def test_configure_writes_etc_motd(tmp_path: Path) -> None:
    r = load(tmp_path, '[features.motd]\ntext = "Welcome to the lab"\n')
    root = tmp_path / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "motd").write_text("the distro's own motd\n")
    motd = r.feature("motd")
    assert motd is not None
    ctx = RootfsContext(root, r, r.distro, StepLog(tmp_path / "build.log"))
    motd.configure(ctx)
    path = root / "etc" / "motd"
    assert path.read_text() == "Welcome to the lab\n"
    st = path.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert (st.st_uid, st.st_gid) == (0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="files in an image are written owned by root")
def test_configure_stays_inside_the_image(tmp_path: Path) -> None:
    """A /etc/motd symlink out of the tree (a hostile base) is resolved inside the image."""
    r = load(tmp_path, '[features.motd]\ntext = "hi"\n')
    outside = tmp_path / "host-motd"
    outside.write_text("host\n")
    root = tmp_path / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "motd").symlink_to(outside)
    motd = r.feature("motd")
    assert motd is not None
    motd.configure(RootfsContext(root, r, r.distro, StepLog(tmp_path / "build.log")))
    assert outside.read_text() == "host\n"
    assert (root / outside.relative_to("/")).read_text() == "hi\n"


@pytest.mark.integration
def test_build_writes_etc_motd(env: Env) -> None:
    recipe = env.tmp / "motd.toml"
    recipe.write_text(f'extends = "{ROOT / "recipes" / "debian-base.toml"}"\nname = "motd"\n'
                      '[features.motd]\ntext = """\nWelcome to the motd test.\nSecond line."""\n')
    r = env.nspawnbuild("build", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    tree = unpack(tarball_of(env.out / "motd"), env.tmp / "tree")
    motd = tree / "etc" / "motd"
    assert motd.read_text() == "Welcome to the motd test.\nSecond line.\n"
    assert stat.S_IMODE(motd.lstat().st_mode) == 0o644 and not motd.is_symlink()
