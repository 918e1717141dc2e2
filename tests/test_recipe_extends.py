"""Loading recipes: extends, merge rules, defaults, search path, digests."""

from __future__ import annotations

from pathlib import Path

import pytest

from nspawnbuild.errors import RecipeError
from nspawnbuild.feature import authorized_keys
from nspawnbuild.recipe.defaults import DEFAULT_EPOCH
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.recipe.merge import merge
from nspawnbuild.recipe.model import Output
from nspawnbuild.recipe.sourcemap import locate


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


PARENT = """
description = "parent"
packages = ["less", "procps"]
[base]
distro = "debian"
release = "bookworm"
[[post]]
run = "echo parent"
[[files]]
src = "files/motd"
dest = "/etc/motd"
[nspawn.Exec]
LimitNOFILE = 1024
"""


def test_child_wins_tables_merge_and_lists_append(tmp_path: Path) -> None:
    write(tmp_path / "lib" / "files" / "motd", "from parent\n")
    write(tmp_path / "lib" / "parent.toml", PARENT)
    write(tmp_path / "files" / "issue", "from child\n")
    child = write(tmp_path / "child.toml", """
extends = "lib/parent.toml"
packages = ["procps", "curl"]
[base]
release = "trixie"
[[post]]
run = "echo child"
[[files]]
src = "files/issue"
dest = "/etc/issue"
[nspawn.Exec]
LimitNOFILE = 4096
""")
    r = load_recipe(child)
    assert r.name == "child"  # never inherited: defaults to the child's file stem
    assert r.data["description"] == "parent"
    assert r.base["distro"] == "debian" and r.base["release"] == "trixie"
    assert r.packages == ("less", "procps", "curl")
    assert [p.run for p in r.post] == ["echo parent", "echo child"]
    # src is relative to the recipe that declared it
    assert [f.content for f in r.files] == [b"from parent\n", b"from child\n"]
    assert r.data["nspawn"]["Exec"]["LimitNOFILE"] == 4096
    assert r.chain == (tmp_path / "lib" / "parent.toml", child)


def test_merge_replaces_non_append_lists() -> None:
    merged = merge({"base": {"components": ["main"]}}, {"base": {"components": ["contrib"]}})
    assert merged["base"]["components"] == ["contrib"]


def test_defaults_are_filled_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    r = load_recipe(write(tmp_path / "min.toml", '[base]\ndistro = "debian"\n'))
    assert r.name == "min"
    assert r.epoch == DEFAULT_EPOCH
    assert r.target_systemd == 257  # trixie's systemd
    assert r.output == Output("gzip", 6) and r.data["output"] == {"compression": "gzip", "level": 6}
    assert r.base["release"] == "trixie" and list(r.base["components"]) == ["main"]
    assert r.base["variant"] == "minbase" and r.base["arch"]
    assert "mirror" not in r.base  # no mirror: the bootstrapper's own default


def test_source_date_epoch_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "e.toml", '[base]\ndistro = "debian"\n')
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert load_recipe(path).epoch == 1700000000
    write(path, 'epoch = 1600000000\n[base]\ndistro = "debian"\n')
    assert load_recipe(path).epoch == 1600000000  # the recipe's own value wins


def test_extends_by_name_on_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "recipes" / "base1.toml", '[base]\ndistro = "debian"\npackages=[]\n'
          .replace("packages=[]\n", ""))
    write(tmp_path / "recipes" / "app.toml", 'extends = "base1"\npackages = ["curl"]\n')
    monkeypatch.chdir(tmp_path)
    r = load_recipe("app")
    assert r.name == "app" and r.packages == ("curl",) and r.base["distro"] == "debian"


def test_digest_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "x.toml", '[base]\ndistro = "debian"\npackages_note = 1\n'
              .replace("packages_note = 1\n", ""))
    b = write(tmp_path / "b" / "x.toml", '# comment\n\n[base]\n  distro   =   "debian"\n')
    assert load_recipe(a).digest() == load_recipe(b).digest()
    write(b, '[base]\ndistro = "debian"\nrelease = "bookworm"\n')
    assert load_recipe(a).digest() != load_recipe(b).digest()


def test_file_content_is_part_of_the_digest(tmp_path: Path) -> None:
    write(tmp_path / "motd", "one\n")
    path = write(tmp_path / "f.toml", '[base]\ndistro = "debian"\n[[files]]\nsrc = "motd"\n'
                 'dest = "/etc/motd"\nmode = "0600"\n')
    first = load_recipe(path)
    assert first.files[0].mode == 0o600
    write(tmp_path / "motd", "two\n")
    assert load_recipe(path).digest() != first.digest()


def test_templates_render_with_the_recipe_as_context(tmp_path: Path) -> None:
    write(tmp_path / "motd.j2", "Welcome to {{ name }} ({{ recipe.base.release }})\n")
    path = write(tmp_path / "t.toml", 'description = "x"\n[base]\ndistro = "debian"\n'
                 '[[files]]\nsrc = "motd.j2"\ndest = "/etc/motd"\ntemplate = true\n')
    assert load_recipe(path).files[0].content == b"Welcome to t (trixie)\n"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path / "many.toml", 'pakages = ["x"]\n[base]\ndistro = "debain"\n'
                 '[output]\nlevel = "high"\n')
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    text = str(e.value)
    assert "unknown distro 'debain'" in text and "did you mean 'debian'?" in text
    assert "unknown key 'pakages'" in text and "did you mean 'packages'?" in text
    assert "key 'output.level'" in text
    assert all(p.file == path for p in e.value.problems)


def test_locate_finds_keys_in_tables_and_arrays_of_tables() -> None:
    text = 'name = "x"\n[base]\ndistro = "d"\n[[post]]\nrun = "a"\n[[post]]\nrun = "b"\n' \
           '[nspawn.Exec]\nBoot = true\n'
    assert locate(text, ["name"]) == 1
    assert locate(text, ["base", "distro"]) == 3
    assert locate(text, ["post", 1, "run"]) == 7
    assert locate(text, ["nspawn", "Exec", "Boot"]) == 9
    assert locate(text, ["nspawn", "Files"]) is None


def test_feature_files_are_relative_to_the_recipe_that_names_them(tmp_path: Path) -> None:
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0bGVzdGtleWZvcm5zcGF3bmJ1aWxkdGVzdHM0 t@h"
    write(tmp_path / "lib" / "keys.pub", pub + "\n")
    write(tmp_path / "lib" / "parent.toml", '[base]\ndistro = "debian"\n'
          '[features.ssh]\nauthorized_keys_files = ["keys.pub"]\n')
    child = write(tmp_path / "child.toml", 'extends = "lib/parent.toml"\n')
    r = load_recipe(child)
    assert authorized_keys(r.sources, "features.ssh", [], ["keys.pub"]) == ([pub], [])
