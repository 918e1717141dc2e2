"""Users: accounts with uid, groups, shell, sudo rights and ssh keys.

```toml
[[features.users.accounts]]
name = "alice"
groups = ["adm"]
sudo = "nopasswd"            # false (default), "password" or "nopasswd"
authorized_keys = ["ssh-ed25519 AAAA... alice@laptop"]
```
"""

from __future__ import annotations

import hashlib
from typing import Any

from nspawnbuild import hookimpl
from nspawnbuild.distro import Distro
from nspawnbuild.features import KEYS_SCHEMA, authorized_keys, check_password_hash, fail
from nspawnbuild.recipe import Recipe
from nspawnbuild.rootfs import RootfsContext

from .basics import set_password_hash

USER_NAME = r"^[a-z_][a-z0-9_-]{0,31}$"


@hookimpl
def nspawnbuild_feature_schemas() -> dict[str, Any]:
    account = {
        "type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": USER_NAME,
                     "x-hint": "lower-case letters, digits, '_' and '-', at most 32"},
            "uid": {"type": "integer", "minimum": 1, "maximum": 65533},
            "group": {"type": "string", "pattern": USER_NAME},
            "groups": {"type": "array", "items": {"type": "string", "pattern": USER_NAME}},
            "shell": {"type": "string", "pattern": r"^/[^\s:]*$"},
            "home": {"type": "string", "pattern": r"^/[^\s:]*$"},
            "system": {"type": "boolean"},
            "sudo": {"enum": [False, "password", "nopasswd"]},
            "password_hash": {"type": "string"},
            "authorized_keys": KEYS_SCHEMA,
            "authorized_keys_files": KEYS_SCHEMA,
        },
    }
    return {"users": {"type": "object", "additionalProperties": False,
                      "properties": {"accounts": {"type": "array", "items": account}}}}


def _accounts(recipe: Recipe) -> list[dict[str, Any]]:
    return list((recipe.feature("users") or {}).get("accounts", []))


@hookimpl
def nspawnbuild_validate(recipe: Recipe) -> None:
    seen: set[str] = set()
    for i, acc in enumerate(_accounts(recipe)):
        key = f"features.users.accounts.{i}"
        if acc["name"] in seen or acc["name"] == "root":
            fail(recipe, f"{key}.name", f"user '{acc['name']}' is declared twice or is root",
                 "root is configured by [features.basics] and [features.ssh]")
        seen.add(acc["name"])
        if "password_hash" in acc:
            check_password_hash(recipe, f"{key}.password_hash", acc["password_hash"])
        authorized_keys(recipe, key, acc.get("authorized_keys", []),
                        acc.get("authorized_keys_files", []))


@hookimpl
def nspawnbuild_packages(recipe: Recipe, distro: Distro) -> list[str]:
    accounts = _accounts(recipe)
    sudo = [distro.map_package("sudo")] if any(a.get("sudo") for a in accounts) else []
    return [*distro.user_packages, *sudo] if accounts else []


@hookimpl
def nspawnbuild_rootfs_digest(recipe: Recipe) -> Any:
    digests = []
    for i, acc in enumerate(_accounts(recipe)):
        keys = authorized_keys(recipe, f"features.users.accounts.{i}",
                               acc.get("authorized_keys", []), acc.get("authorized_keys_files", []))
        digests.append(hashlib.sha256("\n".join(keys).encode()).hexdigest())
    return {"users": digests} if digests else None


@hookimpl
def nspawnbuild_configure_rootfs(ctx: RootfsContext) -> None:
    for i, acc in enumerate(_accounts(ctx.recipe)):
        name = acc["name"]
        home = acc.get("home", f"/home/{name}")
        for group in [g for g in [acc.get("group"), *acc.get("groups", [])] if g]:
            ctx.run(ctx.distro.add_group_command(group, None, False), step=f"group {group}",
                    network=False)
        ctx.run(ctx.distro.add_user_command(
            name, uid=acc.get("uid"), group=acc.get("group"), groups=acc.get("groups", []),
            shell=acc.get("shell", "/bin/bash" if ctx.path("/bin/bash").exists() else "/bin/sh"),
            home=home, system=acc.get("system", False)), step=f"user {name}", network=False)
        if "password_hash" in acc:
            set_password_hash(ctx, name, acc["password_hash"])
        keys = authorized_keys(ctx.recipe, f"features.users.accounts.{i}",
                               acc.get("authorized_keys", []), acc.get("authorized_keys_files", []))
        if keys:
            install_authorized_keys(ctx, name, home, keys)
        if acc.get("sudo"):
            rule = "ALL=(ALL:ALL) NOPASSWD: ALL" if acc["sudo"] == "nopasswd" else "ALL=(ALL:ALL) ALL"
            ctx.write_file(f"/etc/sudoers.d/50-nspawnbuild-{name}", f"{name} {rule}\n", mode=0o440)


def install_authorized_keys(ctx: RootfsContext, user: str, home: str, keys: list[str]) -> None:
    """~/.ssh/authorized_keys owned by the user, with the modes sshd insists on."""
    ctx.make_dir(f"{home}/.ssh", mode=0o700, owner=user)
    ctx.write_file(f"{home}/.ssh/authorized_keys", "\n".join(keys) + "\n", mode=0o600,
                   owner=user)
