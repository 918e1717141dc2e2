"""Property tests: whatever a recipe file holds, load_recipe loads it or raises RecipeError.

Never a traceback of another kind: the CLI turns RecipeError into a clean message and exit 2,
and anything else into a crash.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nspawnbuild.errors import RecipeError
from nspawnbuild.recipe.load import load_recipe

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Keys the validator knows, at every level, so random documents reach deep validation.
KEYS = [
    "name", "base", "distro", "release", "arch", "mirror", "components", "variant",
    "packages", "post", "run", "network", "shell", "files", "src", "dest", "mode", "owner",
    "template", "nspawn", "unit", "Exec", "Files", "Network", "Service", "Unit", "Install",
    "Boot", "Bind", "Environment", "MemoryMax", "output", "compression", "level", "features",
    "extends", "epoch", "target_systemd", "description",
]
STRINGS = [
    "debian", "ubuntu", "bookworm", "amd64", "main", "minbase", "zstd", "xz", "gzip", "none",
    "vim", "a b", "a;b", "/etc/motd", "etc/motd", "/etc/../x", "0644", "rw-r--r--", "root",
    "root:root", "true", "/bin/sh", "recipe.toml", "data", "template.j2", "no-such-file",
    "debian-base", "../recipe.toml", "x\ny", "x\\", "[Exec]", "-x", "", "my_image",
]
INTS = [0, 1, 9, 12, 22, 99, -1, 252, 86400, 1704067200, 2**63 - 1, 0o644]

keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
scalars = st.one_of(
    st.sampled_from(STRINGS), st.text(max_size=20),
    st.sampled_from(INTS), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(), st.floats(),
    st.datetimes(max_value=datetime.datetime(9999, 1, 1)), st.dates(), st.times(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)
documents = st.dictionaries(keys, values, max_size=8)


def _table(required: dict, optional: dict) -> st.SearchStrategy:
    return st.fixed_dictionaries(required, optional=optional)


def mostly(common: list, rare: list) -> st.SearchStrategy:
    """Mostly one of ``common`` (60% of draws or more), otherwise one of ``rare``."""
    return st.sampled_from(common * max(1, 3 * len(rare) // len(common)) + rare)


text_values = st.one_of(mostly(["yes", "/srv", "/srv:/srv", "1G", "A=1", ""],
                               ["x\ny", "x\\", "a\u0007b"]), st.text(max_size=10))
setting_values = st.one_of(text_values, st.integers(-5, 5), st.booleans(),
                           st.lists(st.one_of(text_values, st.integers(), st.booleans()),
                                    max_size=3))


def settings_tables(known: dict[str, list[str]], rare_sections: list[str],
                    rare_keys: list[str]) -> st.SearchStrategy:
    """[nspawn] or [unit]: mostly sections and keys that exist, with values of every kind."""
    def section(name: str) -> st.SearchStrategy:
        names = mostly(known.get(name, rare_keys), rare_keys)
        return st.dictionaries(names, setting_values, max_size=3).map(lambda d: (name, d))

    return st.lists(mostly(list(known), rare_sections).flatmap(section), max_size=3).map(dict)


# Recipe-shaped documents that are valid as far as the schema goes, so that the checks after
# it run: default names, compression levels, .nspawn/unit settings, [[files]] sources,
# templates and extends.
valid_recipes = _table({"base": _table(
    {"distro": st.sampled_from(["debian", "ubuntu"])},
    {"release": st.sampled_from(["bookworm", "trixie", "24.04"]),
     "arch": st.sampled_from(["amd64", "arm64"]),
     "mirror": st.sampled_from(["http://127.0.0.1:9/debian", "file:///srv/mirror"]),
     "components": st.lists(st.sampled_from(["main", "contrib", "universe"]), min_size=1,
                            max_size=3, unique=True),
     "variant": st.sampled_from(["minbase", "standard"])})}, {
    "name": st.sampled_from(["img", "web.example.com", "a-b", "a" * 64]),
    "description": st.text(max_size=20),
    "extends": mostly(["debian-base"], ["recipe.toml", "./recipe.toml", "no-such-recipe"]),
    "epoch": st.integers(86400, 4102444800),
    "target_systemd": st.integers(230, 999),
    "packages": st.lists(st.sampled_from(["vim", "curl", "openssh-server", "libc6:amd64",
                                          "g++", "less"]), max_size=4, unique=True),
    "post": st.lists(_table({"run": st.text(min_size=1, max_size=20)},
                            {"name": st.text(max_size=10), "network": st.booleans(),
                             "shell": st.sampled_from(["/bin/sh", "/bin/bash"])}), max_size=3),
    "files": st.lists(_table(
        {"src": mostly(["template.j2", "data/../template.j2"],
                       ["recipe.toml", "data", "missing", "x" * 300, "/dev/null"]),
         "dest": st.sampled_from(["/etc/motd", "/etc/hosts", "/root/x"])},
        {"mode": st.sampled_from(["0644", "755", "4755", 0o600, 0o7777]),
         "owner": st.sampled_from(["root", "root:root", "1000:1000"]),
         "template": st.booleans()}), max_size=3),
    "nspawn": settings_tables({"Exec": ["Boot", "PrivateUsers", "Hostname", "Environment"],
                               "Files": ["Bind", "BindReadOnly", "Volatile"],
                               "Network": ["VirtualEthernet", "Zone", "Port"]},
                              rare_sections=["Exek"], rare_keys=["Bnd", "Bind"]),
    "unit": settings_tables({"Service": ["MemoryMax", "Environment", "CPUQuota"],
                             "Unit": ["After", "Description"]},
                            rare_sections=["Install"], rare_keys=["memory_max", "Mem.Max"]),
    "output": _table({}, {"compression": st.sampled_from(["zstd", "xz", "gzip", "none"]),
                          "level": st.integers(-1, 23)}),
})


@st.composite
def mutated(draw: st.DrawFn, docs: st.SearchStrategy) -> dict:
    """A document with up to three values replaced, added or deleted at random places."""
    doc = draw(docs)
    for _ in range(draw(st.integers(0, 3))):
        node: dict | list = doc
        while True:  # walk down to a random container
            slots = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not slots:
                break
            child = node[draw(st.sampled_from(slots))]
            if not (isinstance(child, dict | list) and child and draw(st.booleans())):
                break
            node = child
        action = draw(st.sampled_from(["replace", "add", "delete"]))
        if isinstance(node, dict):
            slot = draw(st.sampled_from(list(node) or KEYS)) if action != "add" else draw(keys)
            if action == "delete":
                node.pop(slot, None)
            else:
                node[slot] = draw(values)
        elif action == "add" or not node:
            node.append(draw(values))
        else:
            i = draw(st.integers(0, len(node) - 1))
            if action == "delete":
                del node[i]
            else:
                node[i] = draw(values)
    return doc


recipes = mutated(valid_recipes)

TEMPLATES = st.sampled_from([
    "plain text\n", "{{ name }}\n", "{{ recipe.base.distro }}\n", "{{ nope }}\n", "{% if %}\n",
    "{{ 1 // 0 }}\n", "{{ name + 1 }}\n", "{{ recipe.__class__ }}\n", "{{ name.upper() }}\n",
])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every example (module-scoped: hypothesis reuses it safely)."""
    d = tmp_path_factory.mktemp("fuzz")
    (d / "data").mkdir()
    return d


def _load(path: Path) -> None:
    try:
        load_recipe(path)
    except RecipeError as e:
        assert e.problems
        for problem in e.problems:
            assert problem.message
            problem.format()


@FUZZ
@given(doc=documents)
def test_random_document_loads_or_raises_recipe_error(workdir: Path, doc: dict):
    path = workdir / "recipe.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    _load(path)


@FUZZ
@given(doc=recipes, template=TEMPLATES)
def test_random_recipe_loads_or_raises_recipe_error(workdir: Path, doc: dict, template: str):
    (workdir / "template.j2").write_text(template)
    path = workdir / "recipe.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    _load(path)


@FUZZ
@given(text=st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(['[base]', 'distro = "debian"', "[[post]]", 'run = "x"',
                              "[[files]]", 'src = "recipe.toml"', 'dest = "/x"', "template = true",
                              "[nspawn.Exec]", "Boot = true", 'name = "x"', "packages = [", "]",
                              '"vim",', "epoch = 1.5", "[output]", "level = 99", "= 1", "[",
                              "a.b.c = 1", '"\\u0000" = 1', "x = '''", "'''",
                              "x = " + "[" * 2000, "y = " + "{a=" * 2000]),
             max_size=12).map("\n".join),
))
def test_random_text_loads_or_raises_recipe_error(workdir: Path, text: str):
    path = workdir / "recipe.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _load(path)


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes_load_or_raise_recipe_error(workdir: Path, data: bytes):
    path = workdir / "recipe.toml"
    path.write_bytes(data)
    _load(path)


JINJA = [
    "text ", "\n", "{{ name }}", "{{ recipe.base.distro }}", "{{ recipe.packages|join(',') }}",
    "{{ nope }}", "{{ 1 // 0 }}", "{{ name + 1 }}", "{{ name|int }}", "{{ '%d' % name }}",
    "{% if name %}", "{% endif %}", "{% for p in recipe.packages %}", "{% endfor %}", "{{",
    "}}", "{% raw %}", "{{ recipe.__class__.__mro__ }}", "{{ range(10**9)|list }}",
    "{{ name.no.such.attr }}", "{{ recipe['nope'] }}", "{{ recipe.epoch / 0 }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "{% include 'other.j2' %}",
]
template_contents = st.one_of(
    st.lists(st.sampled_from(JINJA), max_size=6).map("".join).map(str.encode),
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=40),
)


@FUZZ
@given(content=template_contents)
def test_random_template_loads_or_raises_recipe_error(workdir: Path, content: bytes):
    (workdir / "template.j2").write_bytes(content)
    path = workdir / "recipe.toml"
    path.write_text('packages = ["vim"]\n[base]\ndistro = "debian"\n\n'
                    '[[files]]\nsrc = "template.j2"\ndest = "/etc/motd"\ntemplate = true\n')
    _load(path)
