"""The shape of the code: the import graph has no cycle, every module imports on its own, and
plugins never import each other.

Every import counts, wherever it is written: at module level, inside a function, or under
``if TYPE_CHECKING:``; a cycle hidden in any of them is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "nspawnbuild"
PLUGINS = ROOT / "plugins"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for target in targets:
            # importing a.b.c runs a/__init__ and a/b/__init__ too, but those import nothing
            if target in known and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    assert len(edges) > 30, "the module scan found too few modules"
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cli_is_on_top() -> None:
    """Nothing imports the command line; the command modules import the rest."""
    edges = graph()
    importers = {name for name, deps in edges.items()
                 if "nspawnbuild.cli" in deps or any(d.startswith("nspawnbuild.commands") for d in deps)}
    assert importers <= {"nspawnbuild.cli"} | {n for n in edges if n.startswith("nspawnbuild.commands")}


def test_the_package_init_imports_nothing_of_the_package() -> None:
    """Importing any module runs ``nspawnbuild/__init__``: it must not pull in the rest."""
    assert graph()["nspawnbuild"] == set()


def test_every_module_imports_on_its_own() -> None:
    """Each module in a fresh interpreter: an import that only works after another module was
    imported first (a cycle resolved by luck of order) fails here."""
    names = sorted(modules())

    def run(name: str) -> tuple[str, int, str]:
        done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        return name, done.returncode, done.stderr[-2000:]

    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = [r for r in pool.map(run, names) if r[1] != 0]
    assert not failed, "\n".join(f"{n}: {err}" for n, _, err in failed)


@pytest.mark.parametrize("path", sorted(PLUGINS.glob("*.py")), ids=lambda p: p.name)
def test_plugins_never_import_each_other(path: Path) -> None:
    """A feature or distro is one module: it uses nspawnbuild's API, not another plugin."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path.name} imports a sibling plugin (from .{node.module})"
            assert not (node.module or "").startswith("nspawnbuild_plugins"), path.name
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("nspawnbuild_plugins") for a in node.names), path.name


def layers(edges: dict[str, set[str]]) -> dict[str, int]:
    """Each module's layer: 0 without imports, else one more than the highest it imports."""
    memo: dict[str, int] = {}

    def layer(name: str) -> int:
        if name not in memo:
            deps = [d for d in edges[name] if d != "nspawnbuild"]
            memo[name] = 1 + max(layer(d) for d in deps) if deps else 0
        return memo[name]

    return {name: layer(name) for name in edges}


def documented_layers() -> dict[str, int]:
    """``{module: layer}`` from the table in ARCHITECTURE.md (``| 3 | `cache`, `install` | ...``)."""
    import re

    found: dict[str, int] = {}
    for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines():
        m = re.match(r"^\| (\d+) \| (.+?) \|", line)
        if m:
            for mod in re.findall(r"`([a-z_.*]+)`", m.group(2)):
                found[mod] = int(m.group(1))
    return found


def test_architecture_md_states_each_modules_layer() -> None:
    actual = {name.removeprefix("nspawnbuild."): n for name, n in layers(graph()).items()
              if name not in ("nspawnbuild", "nspawnbuild.recipe", "nspawnbuild.commands")}
    documented = documented_layers()
    commands = {k: v for k, v in actual.items() if k.startswith("commands.")}
    assert "commands.*" in documented and max(commands.values()) == documented["commands.*"]
    plain = {k: v for k, v in actual.items() if not k.startswith("commands.")}
    missing = sorted(set(plain) - set(documented))
    assert not missing, f"ARCHITECTURE.md does not list {missing}"
    wrong = {k: (documented[k], v) for k, v in plain.items() if documented[k] != v}
    assert not wrong, f"ARCHITECTURE.md gives these modules the wrong layer (said, is): {wrong}"


#: what plugins may not import: the build's machinery, which calls them
MACHINERY = ("nspawnbuild.pipeline", "nspawnbuild.tasks", "nspawnbuild.plan", "nspawnbuild.recipe.load",
             "nspawnbuild.commands", "nspawnbuild.cli", "nspawnbuild.plugins")


@pytest.mark.parametrize("path", sorted(PLUGINS.glob("*.py")), ids=lambda p: p.name)
def test_plugins_use_the_api_not_the_machinery(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            assert not name.startswith(MACHINERY), f"{path.name} imports {name}"


def test_the_core_never_imports_a_plugin() -> None:
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names]
                assert not any(n.startswith("nspawnbuild_plugins") for n in names), name
