"""The README's recipe reference is checked against the schema the plugins produce.

A key added to a plugin without a line in the README, or a README row for a key that no longer
exists, fails here: the reference cannot drift from what `nspawnbuild validate` accepts.
"""

from __future__ import annotations

import re

from conftest import ROOT
from nspawnbuild.recipe.load import recipe_json_schema

README = (ROOT / "README.md").read_text()
SCHEMA = recipe_json_schema()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def table_keys(text: str) -> set[str]:
    """First-column keys of the markdown tables in ``text``: `name`, `[base]`, `[nspawn.*]`."""
    keys = set()
    for cell in re.findall(r"^\| (`[^|]+`(?:, `[^|]+`)*)", text, re.M):
        for key in re.findall(r"`([^`]+)`", cell):
            keys.add(key.strip("[]").removesuffix(".*"))
    return keys


def toml_keys(text: str) -> set[str]:
    """Keys assigned in the TOML examples of ``text`` (commented-out ones included)."""
    keys = set()
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        keys |= set(re.findall(r"^#? ?([a-z_0-9]+) = ", block, re.M))
        keys |= set(re.findall(r"^#? ?\[\[?[a-z_]+\.([a-z_0-9]+)\]\]?", block, re.M))  # [[base.repos]]
    return keys


def test_every_top_level_key_is_in_the_reference_table_and_no_other() -> None:
    documented = table_keys(section("Recipes")) - {"key"}
    assert documented == set(SCHEMA["properties"])


def test_every_feature_is_in_the_features_table_and_no_other() -> None:
    documented = {k.split()[0] for k in table_keys(section("Features"))} - {"feature"}
    features = set(SCHEMA["properties"]["features"]["properties"])
    assert documented == features, (
        f"the README's Features table lacks {sorted(features - documented)} and has "
        f"{sorted(documented - features)} that no plugin provides: add a row per feature")


def test_every_key_of_base_files_post_sources_output_has_an_example() -> None:
    shown = toml_keys(README)
    for table in ("base", "output"):
        missing = set(SCHEMA["properties"][table]["properties"]) - shown
        assert not missing, f"[{table}] keys without an example in the README: {missing}"
    for table in ("files", "post", "sources"):
        missing = set(SCHEMA["properties"][table]["items"]["properties"]) - shown
        assert not missing, f"[[{table}]] keys without an example in the README: {missing}"


def apt_packages(text: str) -> set[str]:
    """The package names of every ``apt-get install`` in ``text``: lines continued with a
    backslash joined, options and what follows ``&&``, ``>``, ``;`` or ``|`` dropped."""
    joined = re.sub(r"\\\n", " ", text)
    names: set[str] = set()
    for command in re.findall(r"apt-get install ([^&>;|\n]*)", joined):
        names |= {w for w in command.split() if not w.startswith("-")}
    return names


def test_the_readme_commands_install_every_package_ci_installs() -> None:
    """CI runs on a fresh machine with .ci/run's packages; a new user has only the Quick
    start's two commands: what CI needs and they lack fails here, not on the user's machine."""
    quick_start = section("Quick start")
    ci = apt_packages((ROOT / ".ci" / "run").read_text())
    assert ci, "no apt-get install found in .ci/run"
    missing = ci - apt_packages(quick_start)
    assert not missing, f"the Quick start's commands do not install {sorted(missing)}"
