"""Users: accounts with uid, groups, shell, sudo rights and ssh keys.

```toml
[[features.users.accounts]]
name = "alice"
groups = ["adm"]
sudo = "nopasswd"            # false (default), "password" or "nopasswd"
authorized_keys = ["ssh-ed25519 AAAA... alice@laptop"]
```

Accounts are made inside the image with ``groupadd``/``useradd`` (shadow's tools, the same
options on every distro; the packages that provide them are the distro's ``users`` trait).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nspawnbuild.errors import Problem
from nspawnbuild.feature import (
    KEYS_SCHEMA,
    AnyFeature,
    Feature,
    Tuples,
    authorized_keys,
    check_password_hash,
    install_authorized_keys,
    keys_digest,
    read_once,
    set_password_hash,
)
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.recipe.model import Recipe
from nspawnbuild.rootfs import RootfsContext

USER_NAME = r"^[a-z_][a-z0-9_-]{0,31}$"

ACCOUNT_SCHEMA: dict[str, Any] = {
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


@dataclass(frozen=True)
class Account(Tuples):
    """One ``[[features.users.accounts]]`` entry."""

    name: str
    uid: int | None = None
    group: str | None = None
    groups: tuple[str, ...] = ()
    #: None: /bin/bash when the image has it, else /bin/sh
    shell: str | None = None
    #: None: /home/NAME
    home: str | None = None
    system: bool = False
    sudo: Literal[False, "password", "nopasswd"] = False
    password_hash: str | None = None
    authorized_keys: tuple[str, ...] = ()
    authorized_keys_files: tuple[str, ...] = ()

    @property
    def home_dir(self) -> str:
        return self.home or f"/home/{self.name}"


@dataclass(frozen=True)
class UsersConfig(Tuples):
    accounts: tuple[Account, ...] = ()


@dataclass(frozen=True)
class UsersTraits(Tuples):
    #: packages that provide useradd/groupadd (Debian has them in an essential package)
    packages: tuple[str, ...] = ()


def add_group_command(name: str, gid: int | None, system: bool) -> list[str]:
    """argv that creates a group unless it exists (run in the sandbox)."""
    argv = ["groupadd", "-f"]
    if gid is not None:
        argv += ["-g", str(gid)]
    if system:
        argv.append("-r")
    return [*argv, name]


def add_user_command(name: str, *, uid: int | None, group: str | None, groups: Sequence[str],
                     shell: str, home: str, system: bool) -> list[str]:
    """argv that creates a user with a home directory (run in the sandbox)."""
    argv = ["useradd", "-m", "-d", home, "-s", shell]
    if uid is not None:
        argv += ["-u", str(uid)]
    if group:
        argv += ["-g", group]
    if groups:
        argv += ["-G", ",".join(groups)]
    if system:
        argv.append("-r")
    return [*argv, name]


class Users(Feature[UsersConfig, UsersTraits]):
    """Accounts with their groups, shell, sudo rule, password hash and ssh keys."""

    name = "users"
    config_class = UsersConfig
    traits_class = UsersTraits
    order = 10
    properties = {"accounts": {"type": "array", "items": ACCOUNT_SCHEMA}}

    def __init__(self, config: UsersConfig, traits: UsersTraits):
        super().__init__(config, traits)
        #: each account's public keys, read once by validate()
        self.keys: list[list[str]] | None = None

    @classmethod
    def parse(cls, table: Mapping[str, Any]) -> UsersConfig:
        return UsersConfig(tuple(Account(**acc) for acc in table.get("accounts", [])))

    def _read_keys(self, recipe: Recipe[AnyFeature]) -> tuple[list[list[str]], list[Problem]]:
        keys: list[list[str]] = []
        problems: list[Problem] = []
        for i, acc in enumerate(self.config.accounts):
            found, bad = authorized_keys(recipe.sources, f"features.users.accounts.{i}",
                                         acc.authorized_keys, acc.authorized_keys_files)
            keys.append(found)
            problems += bad
        return keys, problems

    def account_keys(self, recipe: Recipe[AnyFeature]) -> list[list[str]]:
        """Each account's public keys (read by validate(), or now when it was not called)."""
        self.keys = read_once(self.keys, lambda: self._read_keys(recipe))
        return self.keys

    def validate(self, recipe: Recipe[AnyFeature]) -> list[Problem]:
        problems: list[Problem] = []
        seen: set[str] = set()
        for i, acc in enumerate(self.config.accounts):
            key = f"features.users.accounts.{i}"
            if acc.name in seen or acc.name == "root":
                problems.append(recipe.sources.problem(
                    f"{key}.name", f"user '{acc.name}' is declared twice or is root",
                    "root is configured by [features.basics] and [features.ssh]"))
            seen.add(acc.name)
            if acc.password_hash is not None:
                problems += check_password_hash(recipe.sources, f"{key}.password_hash",
                                                acc.password_hash)
        keys, bad = self._read_keys(recipe)
        if not bad:
            self.keys = keys
        return problems + bad

    def packages(self, recipe: Recipe[AnyFeature]) -> list[str]:
        accounts = self.config.accounts
        if not accounts:
            return []
        sudo = [recipe.distro.map_package("sudo")] if any(a.sudo for a in accounts) else []
        return [*self.traits.packages, *sudo]

    def digest(self, recipe: Recipe[AnyFeature]) -> Any:
        digests = [keys_digest(keys) for keys in self.account_keys(recipe)]
        return {"users": digests} if digests else None

    def configure(self, ctx: RootfsContext) -> None:
        for acc, keys in zip(self.config.accounts, self.account_keys(ctx.recipe), strict=True):
            home = acc.home_dir
            for group in [g for g in [acc.group, *acc.groups] if g]:
                ctx.run(add_group_command(group, None, False), step=f"group {group}",
                        network=False)
            shell = acc.shell or ("/bin/bash" if ctx.path("/bin/bash").exists() else "/bin/sh")
            ctx.run(add_user_command(acc.name, uid=acc.uid, group=acc.group, groups=acc.groups,
                                     shell=shell, home=home, system=acc.system),
                    step=f"user {acc.name}", network=False)
            if acc.password_hash is not None:
                set_password_hash(ctx, acc.name, acc.password_hash)
            if keys:
                install_authorized_keys(ctx, acc.name, home, keys)
            if acc.sudo:
                rule = "ALL=(ALL:ALL) NOPASSWD: ALL" if acc.sudo == "nopasswd" else "ALL=(ALL:ALL) ALL"
                ctx.write_file(f"/etc/sudoers.d/50-nspawnbuild-{acc.name}", f"{acc.name} {rule}\n",
                               mode=0o440)


@hookimpl
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    return [Users]
