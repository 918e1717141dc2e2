"""Basics every image gets: /etc/hosts that knows the machine's name, a root shell that is
pleasant to use, and optionally a root password (given only as a hash).

``[features.basics]`` is optional; without it the defaults apply (the feature is always on).
(/etc/hostname itself is written by the core scrub step, after every plugin, so no
bootstrapper's copy of the build host's name can survive.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nspawnbuild.errors import Problem
from nspawnbuild.feature import (
    AnyFeature,
    Feature,
    NoTraits,
    Tuples,
    check_password_hash,
    set_password_hash,
)
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.rootfs import RootfsContext

HOSTS = """127.0.0.1\tlocalhost
127.0.1.1\t{name}
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
"""
SKEL_FILES = (".bashrc", ".profile")


@dataclass(frozen=True)
class BasicsConfig(Tuples):
    #: crypt(3) hash for root; None leaves root's password as the bootstrap made it (locked)
    root_password_hash: str | None = None
    root_shell_rc: bool = True


class Basics(Feature[BasicsConfig, NoTraits]):
    """/etc/hosts, root's shell rc files and root's password hash: on for every image."""

    name = "basics"
    config_class = BasicsConfig
    order = 95
    always = True
    properties = {
        "root_password_hash": {
            "type": "string",
            "description": "crypt(3) hash for root, e.g. from `openssl passwd -6`",
        },
        "root_shell_rc": {
            "type": "boolean",
            "description": "copy /etc/skel's .bashrc and .profile to /root (default true)",
        },
    }

    def validate(self, recipe: Recipe[AnyFeature]) -> list[Problem]:
        if self.config.root_password_hash is None:
            return []
        return check_password_hash(recipe.sources, "features.basics.root_password_hash",
                                   self.config.root_password_hash)

    def configure(self, ctx: RootfsContext) -> None:
        ctx.write_file("/etc/hosts", HOSTS.format(name=ctx.recipe.name))
        if self.config.root_shell_rc:
            for name in SKEL_FILES:
                skel = ctx.path(f"/etc/skel/{name}")
                if skel.is_file():
                    ctx.write_file(f"/root/{name}", skel.read_bytes())
        if self.config.root_password_hash is not None:
            set_password_hash(ctx, "root", self.config.root_password_hash)


@hookimpl
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    return [Basics]
