"""Locales and timezone: generate the listed locales, set LANG, link /etc/localtime.

How a distro provides locales is its ``locales`` trait ``style``:

- ``locale-gen`` (Debian, Ubuntu): the ``locales`` package; ``/etc/locale.gen`` lists the
  locales and ``locale-gen`` compiles them inside the image;
- ``langpack`` (Fedora): precompiled ``glibc-langpack-LANG`` packages (or
  ``glibc-minimal-langpack`` for C.* only); only ``/etc/locale.conf`` is written;
- ``musl`` (Alpine): ``musl-locales``; musl has no locale-gen and reads LANG from the
  environment, so a profile.d script sets it;
- ``""``: the distro cannot do it (yet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nspawnbuild.errors import BuildError, Problem
from nspawnbuild.feature import AnyFeature, Feature, Tuples
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.rootfs import RootfsContext
from nspawnbuild.settings import Setting

LOCALE = r"^([a-z]{2,3}_[A-Z]{2}|C)\.[A-Za-z0-9-]+(@[a-z]+)?$"
TIMEZONE = r"^[A-Z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$|^UTC$"
STYLES = ("locale-gen", "langpack", "musl")


@dataclass(frozen=True)
class LocalesConfig(Tuples):
    locales: tuple[str, ...] = ()
    #: None: the first of locales
    lang: str | None = None
    #: None: leave /etc/localtime as the bootstrap made it (and nspawn's Timezone= default)
    timezone: str | None = None


@dataclass(frozen=True)
class LocalesTraits(Tuples):
    #: how the distro provides locales: "locale-gen", "langpack", "musl"; "" = unsupported
    style: str = ""
    #: packages that provide /usr/share/zoneinfo
    timezone_packages: tuple[str, ...] = ("tzdata",)


def locale_packages(style: str, locales: tuple[str, ...]) -> list[str]:
    """The packages that provide ``locales`` in a distro of ``style`` (generic names)."""
    if style == "locale-gen":
        return ["locales"]
    if style == "langpack":
        langs = sorted({re.split(r"[_.@]", loc)[0] for loc in locales if not loc.startswith("C.")})
        return [f"glibc-langpack-{lang}" for lang in langs] or ["glibc-minimal-langpack"]
    if style == "musl":
        return ["musl-locales"]
    return []


def configure_locales(ctx: RootfsContext, style: str, locales: tuple[str, ...], lang: str) -> None:
    """Generate ``locales`` inside the image and make ``lang`` the default, the ``style`` way."""
    if style == "locale-gen":
        # /etc/locale.gen lists "NAME CHARSET"; locale-gen compiles exactly those
        wanted = [loc for loc in locales if not loc.startswith("C.")]
        ctx.write_file("/etc/locale.gen",
                       "".join(f"{loc} {loc.partition('.')[2]}\n" for loc in wanted))
        if wanted:
            ctx.run(["locale-gen"], step="locale-gen", network=False)
        ctx.write_file("/etc/default/locale", f"LANG={lang}\n")
        ctx.write_file("/etc/locale.conf", f"LANG={lang}\n")
    elif style == "langpack":
        # Fedora's langpacks are precompiled: nothing to generate, only the default to set
        ctx.write_file("/etc/locale.conf", f"LANG={lang}\n")
    elif style == "musl":
        # musl has no locale-gen: musl-locales provides them; the default comes from profile.d
        ctx.write_file("/etc/profile.d/20-nspawnbuild-locale.sh",
                       f"export LANG={lang}\nexport LC_COLLATE=C\n")
    else:
        raise BuildError(f"{ctx.distro.name} does not support [features.locales] yet")


class Locales(Feature[LocalesConfig, LocalesTraits]):
    """Generated locales, the default LANG and the timezone."""

    name = "locales"
    config_class = LocalesConfig
    traits_class = LocalesTraits
    order = 80
    properties = {
        "locales": {"type": "array", "minItems": 1, "items": {
            "type": "string", "pattern": LOCALE,
            "x-hint": "a locale with its charset, e.g. en_US.UTF-8 or C.UTF-8"}},
        "lang": {"type": "string", "pattern": LOCALE,
                 "description": "default LANG; default: the first of locales"},
        "timezone": {"type": "string", "pattern": TIMEZONE,
                     "x-hint": "a tz database name such as Europe/Berlin or UTC"},
    }

    def validate(self, recipe: Recipe[AnyFeature]) -> list[Problem]:
        problems: list[Problem] = []
        lang, locales = self.config.lang, self.config.locales
        if lang and lang not in locales and not lang.startswith("C."):
            problems.append(recipe.sources.problem(
                "features.locales.lang", f"'{lang}' is not one of the generated locales",
                f"add it to locales, or use one of {', '.join(locales) or 'C.UTF-8'}"))
        if locales and self.traits.style not in STYLES:
            problems.append(recipe.sources.problem(
                "features.locales.locales",
                f"{recipe.distro.name} does not support [features.locales] yet"))
        return problems

    def packages(self, recipe: Recipe[AnyFeature]) -> list[str]:
        c = self.config
        pkgs = locale_packages(self.traits.style, c.locales) if c.locales else []
        if c.timezone is not None:
            pkgs += self.traits.timezone_packages
        return [recipe.distro.map_package(p) for p in pkgs]

    def nspawn_settings(self, recipe: Recipe[AnyFeature]) -> list[Setting]:
        # nspawn's default Timezone=auto replaces the image's /etc/localtime with the host's
        # zone on every start; the recipe chose a zone, so nspawn must leave it alone
        if self.config.timezone is not None:
            return [Setting("Exec", "Timezone", "off", "locales")]
        return []

    def configure(self, ctx: RootfsContext) -> None:
        c = self.config
        if c.locales:
            configure_locales(ctx, self.traits.style, c.locales, c.lang or c.locales[0])
        if c.timezone is not None:
            tz = c.timezone
            if not ctx.path(f"/usr/share/zoneinfo/{tz}").is_file():
                raise BuildError(f"timezone '{tz}' is not in the image's /usr/share/zoneinfo; "
                                 "check the name in [features.locales] timezone")
            ctx.symlink("/etc/localtime", f"../usr/share/zoneinfo/{tz}")
            ctx.write_file("/etc/timezone", f"{tz}\n")


@hookimpl
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    return [Locales]
