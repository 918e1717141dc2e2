"""Locales and timezone: generate the listed locales, set LANG, link /etc/localtime."""

from __future__ import annotations

from typing import Any

from nspawnbuild import hookimpl
from nspawnbuild.distro import Distro
from nspawnbuild.errors import BuildError
from nspawnbuild.features import fail
from nspawnbuild.recipe import Recipe
from nspawnbuild.rootfs import RootfsContext
from nspawnbuild.settings import Setting

LOCALE = r"^([a-z]{2,3}_[A-Z]{2}|C)\.[A-Za-z0-9-]+(@[a-z]+)?$"
TIMEZONE = r"^[A-Z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$|^UTC$"


@hookimpl
def nspawnbuild_feature_schemas() -> dict[str, Any]:
    return {"locales": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "locales": {"type": "array", "minItems": 1, "items": {
                "type": "string", "pattern": LOCALE,
                "x-hint": "a locale with its charset, e.g. en_US.UTF-8 or C.UTF-8"}},
            "lang": {"type": "string", "pattern": LOCALE,
                     "description": "default LANG; default: the first of locales"},
            "timezone": {"type": "string", "pattern": TIMEZONE,
                         "x-hint": "a tz database name such as Europe/Berlin or UTC"},
        },
    }}


@hookimpl
def nspawnbuild_packages(recipe: Recipe, distro: Distro) -> list[str]:
    table = recipe.feature("locales")
    if table is None:
        return []
    pkgs = distro.locale_packages(table["locales"]) if table.get("locales") else []
    if "timezone" in table:
        pkgs += distro.timezone_packages()
    return [distro.map_package(p) for p in pkgs]


@hookimpl
def nspawnbuild_nspawn_settings(recipe: Recipe, distro: Distro) -> list[Setting]:
    # nspawn's default Timezone=auto replaces the image's /etc/localtime with the host's
    # zone on every start; the recipe chose a zone, so nspawn must leave it alone
    if "timezone" in (recipe.feature("locales") or {}):
        return [Setting("Exec", "Timezone", "off", "locales")]
    return []


@hookimpl
def nspawnbuild_validate(recipe: Recipe) -> None:
    table = recipe.feature("locales") or {}
    lang, locales = table.get("lang"), table.get("locales", [])
    if lang and lang not in locales and not lang.startswith("C."):
        fail(recipe, "features.locales.lang", f"'{lang}' is not one of the generated locales",
             f"add it to locales, or use one of {', '.join(locales) or 'C.UTF-8'}")


@hookimpl
def nspawnbuild_configure_rootfs(ctx: RootfsContext) -> None:
    table = ctx.recipe.feature("locales")
    if table is None:
        return
    locales = table.get("locales", [])
    if locales:
        ctx.distro.configure_locales(ctx, locales, table.get("lang", locales[0]))
    if "timezone" in table:
        tz = table["timezone"]
        if not ctx.path(f"/usr/share/zoneinfo/{tz}").is_file():
            raise BuildError(f"timezone '{tz}' is not in the image's /usr/share/zoneinfo; check "
                             "the name in [features.locales] timezone")
        ctx.symlink("/etc/localtime", f"../usr/share/zoneinfo/{tz}")
        ctx.write_file("/etc/timezone", f"{tz}\n")
