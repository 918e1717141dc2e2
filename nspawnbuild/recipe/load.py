"""Load a recipe: find it, read its chain, merge it, check everything, fill in defaults.

Everything a user can get wrong in a recipe is caught here, before any work starts, and
reported at once, each problem with the file, the key, the line and how to fix it: the
schema's problems first (when there are any, nothing else is checked: the later checks rely
on the shapes the schema guarantees), then the checks the schema cannot express (the default
name, the compression level, the settings tables, ``[[files]]``, ``[[sources]]``, templates),
then the distro plugin's and every enabled feature plugin's ``validate``.

A recipe is untrusted input, so loading one is bounded and confined (see ``read``,
``entries`` and ``templates``). ``validate``, ``list``, ``show`` and ``build`` all load recipes
through :func:`load_recipe`, so the bounds hold for each of them.

This is the one module of the package that asks the plugin registry: the distro classes by
name, their ``base_schema``, the feature classes and their ``schema()``.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import jsonschema

from ..distro import Distro
from ..errors import Problem, RecipeError
from ..feature import AnyFeature
from ..plugins import Registry, get_registry
from ..schema import (
    COMPRESSION_LEVELS,
    MACHINE_NAME_HINT,
    MACHINE_NAME_PATTERN,
    SBOM_FORMATS,
    full_schema,
)
from ..settings import Setting, suggest, table_to_settings
from .defaults import (
    DEFAULT_EPOCH,
    DEFAULT_LEVELS,
    DEFAULT_TARGET_SYSTEMD,
    MIN_ENV_EPOCH,
    default_compression,
)
from .entries import load_files, load_sources
from .find import find_recipe
from .merge import merge_chain
from .messages import schema_problems
from .model import Output, PostStep, Recipe, freeze
from .problems import Problems
from .read import load_chain
from .sourcemap import SourceMap
from .templates import render_templates

__all__ = ["DEFAULT_EPOCH", "DEFAULT_LEVELS", "DEFAULT_TARGET_SYSTEMD", "load_recipe",
           "recipe_json_schema"]

# TOML has distinct integer and float types: 3.0 is not an integer, whatever JSON Schema says.
_TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                          type_checker=_TYPE_CHECKER)

T = TypeVar("T")

_NAME_RE: Final = re.compile(MACHINE_NAME_PATTERN)
SCHEMA_ID: Final = "https://nspawnbuild.invalid/recipe.schema.json"


def load_recipe(ref: str | Path, cwd: Path | None = None) -> Recipe[AnyFeature]:
    """Find, read, merge and validate a recipe. Raises RecipeError with every problem found.

    ``ref`` is a path (a :class:`Path` is taken as is) or a recipe reference resolved from
    ``cwd`` (a name on the search path, or a path). Each file of the chain is read once; the
    Distro and the feature objects are made once, here; the Recipe is complete when it is
    made and never changes afterwards."""
    path = ref if isinstance(ref, Path) else find_recipe(ref, cwd)
    files = load_chain(path, cwd)
    data, origins = merge_chain(files)
    sources = SourceMap(tuple(files), origins)
    problems = Problems(sources)
    registry = get_registry()

    distro_cls = _check_schema(data, registry, problems)
    # made once: its defaults() may ask the host (Debian runs dpkg --print-architecture)
    distro = distro_cls(copy.deepcopy(data["base"]))

    # -- the checks the schema cannot express ------------------------------------------------
    leaf = sources.leaf
    name = data.get("name") or leaf.path.stem
    if "name" not in data and not _NAME_RE.match(name):
        problems.at(["name"], f"the name defaults to the file stem '{name}', which is not a "
                    "valid machine name", f"set name = \"...\" in the recipe; {MACHINE_NAME_HINT}")
    # the hosts an image is for run its own release: that release's systemd, else the oldest
    target = data.get("target_systemd", distro.release_systemd() or DEFAULT_TARGET_SYSTEMD)
    output = _output(data, problems, target)
    nspawn = _settings("nspawn", data, problems)
    unit = _settings("unit", data, problems)
    entries = load_files(data, problems)
    source_entries = load_sources(data, problems)

    # -- defaults, in the order (and so the key order of data) they always had ---------------
    data["name"] = name
    data.pop("extends", None)
    env_epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if "epoch" not in data:
        data["epoch"] = int(env_epoch) if env_epoch.isdigit() and int(env_epoch) >= MIN_ENV_EPOCH \
            else DEFAULT_EPOCH
    data["target_systemd"] = target
    data.setdefault("description", "")
    base = data["base"]
    for key, value in distro.base.items():  # the distro's defaults, after the recipe's keys
        if key not in base:
            base[key] = copy.deepcopy(value)

    rendered, template_problems = render_templates(entries, {"recipe": data, "name": name},
                                                   sources)
    problems.add(template_problems)
    features = _make_features(data, registry, distro, problems)

    recipe: Recipe[AnyFeature] = Recipe(
        name=name, path=leaf.path, data=freeze(data), sources=sources, distro=distro,
        features=tuple(features), files=tuple(rendered), source_entries=tuple(source_entries),
        post=tuple(_post_step(item) for item in data.get("post", [])),
        packages=tuple(data.get("packages", [])), output=output, nspawn=tuple(nspawn),
        unit=tuple(unit), epoch=int(data["epoch"]), target_systemd=int(data["target_systemd"]),
        description=str(data["description"]),
        audit_allow=tuple(data.get("audit", {}).get("allow", [])))

    # -- the plugins' own checks: every problem of every plugin --------------------------------
    _collect(problems, distro.validate, sources)
    for feature in features:
        _collect(problems, feature.validate, recipe)
    problems.raise_if_any()
    return recipe


def _check_schema(data: Mapping[str, Any], registry: Registry,
                  problems: Problems) -> type[Distro]:
    """Check ``data`` against the schema of its distro and the features; the distro's class.

    Raises RecipeError with every problem the schema finds: the later checks rely on the
    shapes it guarantees. An unknown distro is reported (with a suggestion); ``[base]`` is then
    checked against the keys of every distro, as which one was meant is not known."""
    distro_cls = None
    extras: dict[str, Any] = {}
    unused: Mapping[str, str] = {}
    base = data.get("base")
    name = base.get("distro") if isinstance(base, dict) else None
    if isinstance(name, str) and name in registry.distros:
        distro_cls = registry.distros[name]
        unused = distro_cls.unused_keys
        # a key the distro refuses passes the schema and is reported below with its reason,
        # without stopping the checks that come after the schema
        extras = {**{k: {} for k in unused}, **distro_cls.base_schema}
    else:
        for cls in registry.distros.values():
            extras.update(cls.base_schema)
        if isinstance(name, str):
            known = sorted(registry.distros)
            problems.at(["base", "distro"], f"unknown distro '{name}'",
                        suggest(name, known) or "known distros: "
                        + (", ".join(known) or "none (no distro plugin loaded)"))
    schema = full_schema(extras, feature_schemas(registry))
    for err in sorted(_Validator(schema).iter_errors(data),
                      key=lambda e: list(map(str, e.absolute_path))):
        for key_path, message, hint in schema_problems(err):
            problems.at(key_path, message, hint)
    problems.raise_if_any()
    for key, why in unused.items():
        if isinstance(base, dict) and key in base and key not in extras_of(distro_cls):
            problems.at(["base", key], f"{name} does not use {key}", why)
    if distro_cls is None:  # not reached: the schema requires [base] distro, a string
        raise RecipeError(problems.sources.problem("base.distro", "is required but missing"))
    return distro_cls


def extras_of(distro_cls: type[Distro] | None) -> Mapping[str, Any]:
    return distro_cls.base_schema if distro_cls else {}


def feature_schemas(registry: Registry) -> dict[str, dict[str, Any]]:
    """``{name: schema()}`` of every feature that has a ``[features.<name>]`` table (a feature
    with ``table = False``, such as ``sources``, is always on and has none)."""
    return {name: cls.schema() for name, cls in registry.features.items()
            if cls.table}


def _output(data: dict[str, Any], problems: Problems, target_systemd: int) -> Output:
    """``[output]`` with its defaults filled into ``data`` (the compression the target hosts can
    pull); a level out of range is reported."""
    out = data.setdefault("output", {})
    out.setdefault("compression", default_compression(target_systemd))
    lo, hi = COMPRESSION_LEVELS[out["compression"]]
    out.setdefault("level", DEFAULT_LEVELS[out["compression"]])
    if not lo <= out["level"] <= hi:
        problems.at(["output", "level"], f"level {out['level']} is out of range for "
                    f"{out['compression']}", f"use {lo} to {hi}")
    sign = out.get("sign")
    # a relative key file is found beside the recipe that names it, as [[files]] src is
    sign_dir = problems.sources.declaring_file("output.sign").parent if sign else None
    # not filled into data: a recipe that does not name it resolves (and digests) as before
    formats = out.get("sbom", ["spdx"])
    sbom = tuple(f for f in SBOM_FORMATS if f in formats)  # the schema checked the words
    return Output(out["compression"], out["level"], sign=sign, sign_dir=sign_dir, sbom=sbom)


def _settings(kind: str, data: Mapping[str, Any], problems: Problems) -> list[Setting]:
    """The recipe's ``[nspawn]`` or ``[unit]`` table as settings, parsed once; each key that is
    not allowed is reported."""
    settings, found = table_to_settings(kind, data.get(kind, {}))
    for dotted, message, hint in found:
        problems.at(dotted.split("."), message, hint)
    return settings


def _post_step(item: Mapping[str, Any]) -> PostStep:
    return PostStep(run=item["run"], name=item.get("name"), shell=item.get("shell", "/bin/sh"),
                    network=item.get("network", True))


def _make_features(data: Mapping[str, Any], registry: Registry, distro: Distro,
                   problems: Problems) -> list[AnyFeature]:
    """One object per enabled feature (its table present, or ``always``), in run order."""
    tables = data.get("features", {})
    features: list[AnyFeature] = []
    for cls in registry.feature_order():
        if cls.name in tables or cls.always:
            try:
                features.append(cls.make(tables.get(cls.name) or {}, distro))
            except RecipeError as e:  # a parse() that checks more than the schema can
                problems.add(e.problems)
    return features


def _collect(problems: Problems, check: Callable[[T], Iterable[Problem]], arg: T) -> None:
    """Add the problems a plugin's ``validate`` returns, or raises (``SourceMap.read_file``
    raises RecipeError): a plugin's first problem never hides the others'."""
    try:
        problems.add(check(arg))
    except RecipeError as e:
        problems.add(e.problems)


def recipe_json_schema() -> dict[str, Any]:
    """The schema for editors (``nspawnbuild schema``): every installed distro's ``[base]``
    keys and every feature's table."""
    registry = get_registry()
    extras: dict[str, Any] = {}
    for cls in registry.distros.values():
        extras.update(cls.base_schema)
    schema = full_schema(extras, feature_schemas(registry))
    schema["$id"] = SCHEMA_ID
    # [base] and its distro may come from the recipe that this one extends
    schema.pop("required", None)
    schema["properties"]["base"].pop("required", None)
    schema["properties"]["base"]["properties"]["distro"]["enum"] = sorted(registry.distros)
    return schema
