"""Basics every image gets: /etc/hosts that knows the machine's name, a root shell that is
pleasant to use, and optionally a root password (given only as a hash).

``[features.basics]`` is optional; without it the defaults apply. (/etc/hostname itself is
written by the core scrub step, after every plugin, so no bootstrapper's copy of the build
host's name can survive.)
"""

from __future__ import annotations

from typing import Any

from nspawnbuild import hookimpl
from nspawnbuild.features import check_password_hash
from nspawnbuild.recipe import Recipe
from nspawnbuild.rootfs import RootfsContext

HOSTS = """127.0.0.1\tlocalhost
127.0.1.1\t{name}
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
"""
SKEL_FILES = (".bashrc", ".profile")


@hookimpl
def nspawnbuild_feature_schemas() -> dict[str, Any]:
    return {"basics": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "root_password_hash": {
                "type": "string",
                "description": "crypt(3) hash for root, e.g. from `openssl passwd -6`",
            },
            "root_shell_rc": {
                "type": "boolean",
                "description": "copy /etc/skel's .bashrc and .profile to /root (default true)",
            },
        },
    }}


@hookimpl
def nspawnbuild_validate(recipe: Recipe) -> None:
    table = recipe.feature("basics") or {}
    if "root_password_hash" in table:
        check_password_hash(recipe, "features.basics.root_password_hash",
                            table["root_password_hash"])


@hookimpl
def nspawnbuild_configure_rootfs(ctx: RootfsContext) -> None:
    table = ctx.recipe.feature("basics") or {}
    ctx.write_file("/etc/hosts", HOSTS.format(name=ctx.recipe.name))
    if table.get("root_shell_rc", True):
        for name in SKEL_FILES:
            skel = ctx.path(f"/etc/skel/{name}")
            if skel.is_file():
                ctx.write_file(f"/root/{name}", skel.read_bytes())
    if "root_password_hash" in table:
        set_password_hash(ctx, "root", table["root_password_hash"])


def set_password_hash(ctx: RootfsContext, user: str, hashed: str) -> None:
    """Put ``hashed`` into /etc/shadow for ``user`` (the same format on every distro)."""
    shadow = ctx.path("/etc/shadow")
    lines = shadow.read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == user and len(fields) > 2:
            fields[1] = hashed
            lines[i] = ":".join(fields)
            break
    else:
        raise ValueError(f"no user {user} in the image's /etc/shadow")
    st = shadow.stat()
    ctx.write_file("/etc/shadow", "\n".join(lines) + "\n", mode=st.st_mode & 0o7777,
                   owner=f"{st.st_uid}:{st.st_gid}")
