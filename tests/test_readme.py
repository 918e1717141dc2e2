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
