"""Render the .nspawn file and the unit drop-in with Jinja2 from collected settings."""

from __future__ import annotations

import functools

import jinja2

from .settings import Setting, group_settings

NSPAWN_ORDER = ("Exec", "Files", "Network")
UNIT_ORDER = ("Unit", "Service")
DROPIN_NAME = "50-nspawnbuild.conf"


@functools.cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("nspawnbuild", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_ini(template: str, settings: list[Setting], order: tuple[str, ...], *, name: str,
               digest: str, version: str) -> str:
    sections = group_settings(settings, order)
    return _env().get_template(template).render(
        sections=sections, name=name, digest=digest, version=version)


def render_nspawn(settings: list[Setting], *, name: str, digest: str, version: str) -> str:
    return render_ini("nspawn.j2", settings, NSPAWN_ORDER, name=name, digest=digest,
                      version=version)


def render_dropin(settings: list[Setting], *, name: str, digest: str, version: str) -> str:
    return render_ini("dropin.j2", settings, UNIT_ORDER, name=name, digest=digest,
                      version=version)
