"""The feature API: one class per ``[features.<name>]`` table, and helpers for feature authors.

A feature plugin is one module under ``plugins/`` (or a third-party distribution) that defines a
:class:`Feature` subclass and registers it through the one hook ``nspawnbuild_features``::

    @dataclass(frozen=True)
    class MotdConfig:
        text: str

    class Motd(Feature[MotdConfig, NoTraits]):
        name = "motd"
        config_class = MotdConfig
        properties = {"text": {"type": "string", "description": "the message"}}
        required = ("text",)

        def configure(self, ctx: RootfsContext) -> None:
            ctx.write_file("/etc/motd", self.config.text + "\\n")

    @hookimpl
    def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
        return [Motd]

(``plugins/motd.py`` is that feature, with its checks; its tests are ``tests/test_motd.py``.)

The core makes one object per enabled feature when the recipe is loaded (its table parsed once
into ``config``; the JSON Schema, with the config's defaults as ``default``, has checked it
first), and calls only the features a recipe turns on, each method once per build, in ``order``.
Every method has a no-op default, so a feature implements only what it does.

Facts a feature needs from a distro (the ssh service's name, the packages that provide
``useradd``) are the feature's **traits**: a frozen dataclass with defaults that the feature
declares, and that a distro plugin fills in with plain data (``Distro.traits[feature name]``),
so that neither module imports the other and a new distro or feature is one new module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from .distro import Distro
from .errors import BuildError, Problem, RecipeError
from .hostneeds import HostContext, HostSettings
from .recipe.model import Recipe
from .recipe.sourcemap import SourceMap
from .rootfs import RootfsContext
from .settings import Setting

C = TypeVar("C")
T = TypeVar("T")
K = TypeVar("K")


@dataclass(frozen=True)
class NoConfig:
    """The config of a feature whose table has no keys (``[features.gpu-dri]``)."""


@dataclass(frozen=True)
class NoTraits:
    """The traits of a feature that needs no facts from the distro."""


class Feature(Generic[C, T]):
    """One ``[features.<name>]`` table: how it is checked, and what it adds to an image.

    Subclasses set ``name``, ``config_class`` and ``properties`` (JSON Schema of the table's
    keys; ``default`` comes from the config class), optionally ``traits_class``, ``required``,
    ``order`` and ``always``, and override the methods they need.
    """

    #: the table's name: ``[features.<name>]``
    name: ClassVar[str]
    #: a frozen dataclass whose fields are the table's keys (``parse`` makes it from the table)
    config_class: ClassVar[type[Any]] = NoConfig
    #: a frozen dataclass with defaults: the facts the feature needs from a distro
    traits_class: ClassVar[type[Any]] = NoTraits
    #: JSON Schema of each key of the table
    properties: ClassVar[dict[str, Any]] = {}
    #: keys the table must have
    required: ClassVar[tuple[str, ...]] = ()
    #: one line for ``nspawnbuild plugins`` and the schema
    description: ClassVar[str] = ""
    #: features run in ascending order (ties: registration order): ``configure``, ``finalize``,
    #: ``firstboot`` commands, and the settings each feature adds (the .nspawn file groups
    #: them by section); built-ins use 10..95, firstboot 1000
    order: ClassVar[int] = 100
    #: on for every recipe, with its defaults, even without a table (``basics``)
    always: ClassVar[bool] = False
    #: False: the feature has no ``[features.<name>]`` table (``sources`` works on the recipe's
    #: top-level ``[[sources]]``); it is then always on, and not in the schema's features
    table: ClassVar[bool] = True

    def __init__(self, config: C, traits: T):
        self.config = config
        self.traits = traits

    # -- made by the core -------------------------------------------------------------------
    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The table's JSON Schema: ``properties`` with each config default as ``default``."""
        props = {k: dict(v) for k, v in cls.properties.items()}
        if dataclasses.is_dataclass(cls.config_class):
            for f in dataclasses.fields(cls.config_class):
                default = _json_default(f)
                if f.name in props and default is not None and "default" not in props[f.name]:
                    props[f.name]["default"] = default
        schema: dict[str, Any] = {"type": "object", "additionalProperties": False,
                                  "properties": props}
        if cls.required:
            schema["required"] = list(cls.required)
        if cls.description:
            schema["description"] = cls.description
        return schema

    @classmethod
    def parse(cls, table: Mapping[str, Any]) -> C:
        """The config from a table the schema accepted (override for nested tables)."""
        return cls.config_class(**table)  # type: ignore[no-any-return]

    @classmethod
    def traits_for(cls, distro: Distro) -> T:
        """This feature's traits as ``distro`` fills them in (defaults for what it leaves out).

        A trait the feature does not declare is a plugin bug (a misspelt name would otherwise
        leave the default in place, silently): a BuildError that says whose."""
        given = dict(distro.traits.get(cls.name, {}))
        known = {f.name for f in dataclasses.fields(cls.traits_class)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise BuildError(f"distro plugin '{distro.name}' gives feature '{cls.name}' traits it "
                             f"does not declare: {', '.join(unknown)} (it declares "
                             f"{', '.join(sorted(known)) or 'none'}); report it to the plugin's "
                             "authors")
        return cls.traits_class(**given)  # type: ignore[no-any-return]

    @classmethod
    def check_class(cls) -> str | None:
        """What is wrong with this class as a feature (None when nothing): every key the schema
        accepts must be a field of the config dataclass, unless the class parses tables itself.
        Checked when the plugin is registered, so a mismatch fails there, not in a user's build."""
        if not getattr(cls, "name", None):
            return "it has no name"
        if cls.parse.__func__ is not Feature.parse.__func__:  # type: ignore[attr-defined]
            return None
        if not dataclasses.is_dataclass(cls.config_class):
            return f"config_class {cls.config_class.__name__} is not a dataclass"
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        extra = sorted((set(cls.properties) | set(cls.required)) - fields)
        if extra:
            return (f"its schema accepts {', '.join(extra)}, which config_class "
                    f"{cls.config_class.__name__} has no field for (or override parse())")
        return None

    @classmethod
    def make(cls, table: Mapping[str, Any], distro: Distro) -> Feature[C, T]:
        return cls(cls.parse(table), cls.traits_for(distro))

    # -- what a feature may do (all no-ops by default) ----------------------------------------
    def validate(self, recipe: Recipe[Feature[Any, Any]]) -> list[Problem]:
        """Problems the schema cannot see, made with ``recipe.sources.problem(key, msg, hint)``.

        Called once, when the recipe is loaded, before any other method; every problem of every
        feature is reported together. Files the table names are read here, with
        ``recipe.sources.read_file``; keep what you read on ``self`` for the later methods."""
        return []

    def packages(self, recipe: Recipe[Feature[Any, Any]]) -> list[str]:
        """Distro package names to install (``recipe.distro.map_package`` translates generic
        names). They are part of the bootstrap's cache key: keep the list deterministic."""
        return []

    def digest(self, recipe: Recipe[Feature[Any, Any]]) -> Any:
        """JSON data that shapes ``configure`` besides the table itself (the content of a file
        the table names, a template shipped with the plugin), so that a change rebuilds."""
        return None

    def configure(self, ctx: RootfsContext) -> None:
        """Change the bootstrapped tree, before the recipe's ``[[files]]`` and ``[[post]]``.

        Write through ``ctx.write_file()`` / ``ctx.path()`` (symlink-safe inside the image) and
        run commands inside the image with ``ctx.run()`` (the sandbox). Never touch the host."""

    def finalize(self, ctx: RootfsContext) -> None:
        """Check or change the tree after the post-steps, before host state is scrubbed."""

    def nspawn_settings(self, recipe: Recipe[Feature[Any, Any]]) -> list[Setting]:
        """Settings for the ``.nspawn`` file (``Bind=`` may repeat). The recipe's own
        ``[nspawn]`` table comes after every feature's, so it can override a single-valued key."""
        return []

    def unit_settings(self, recipe: Recipe[Feature[Any, Any]]) -> list[Setting]:
        """Settings for the ``systemd-nspawn@NAME.service`` drop-in (``DeviceAllow=`` ...)."""
        return []

    def firstboot(self, recipe: Recipe[Feature[Any, Any]]) -> list[str]:
        """Shell commands to run once, on each container's first boot, on the target host
        (work that needs the host's network, a key made per container)."""
        return []

    def host_needs(self, recipe: Recipe[Feature[Any, Any]]) -> Any:
        """JSON data for :meth:`host_settings`, when some settings can only be made on the
        target host (its GPU driver's files); recorded in the manifest under ``host_needs``."""
        return None

    @classmethod
    def host_settings(cls, needs: Any, host: HostContext) -> HostSettings:
        """At install, on the target host: what ``host_needs`` recorded, turned into settings
        for the installed .nspawn and drop-in and files for the installed tree. ``needs``
        comes from a manifest, which may come from anywhere: check it."""
        raise BuildError(f"feature '{cls.name}' recorded needs for the host but has no "
                         "host_settings to meet them; report it to the plugin's authors")


AnyFeature = Feature[Any, Any]


def _json_default(f: dataclasses.Field[Any]) -> Any:
    """A config field's default as JSON Schema shows it (tuples as arrays), or None."""
    default: Any = f.default
    factory: Any = f.default_factory
    if default is dataclasses.MISSING and factory is not dataclasses.MISSING:
        default = factory()
    if isinstance(default, tuple):
        default = list(default)
    if isinstance(default, str | int | bool | float | list) and default != []:
        return default
    return None


# -- helpers for feature authors ----------------------------------------------------------------
#
# Shared by several feature plugins, which never import each other: what they have in common
# lives here. Checks return problems (every problem of a recipe is reported at once); nothing
# here raises for bad input.

SSH_KEY = re.compile(
    r"^(?:(?:[a-z-]+(?:=\"[^\"]*\")?,?)+ )?"  # optional options, e.g. no-pty,from="..."
    r"(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(?:256|384|521)|"
    r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}(?: [^\n\r]*)?$")
CRYPT_HASH = re.compile(r"^\$(1|5|6|y|gy|7|2[abxy]?)\$[./A-Za-z0-9$=,]{8,}$")
KEYS_SCHEMA: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}


class Tuples:
    """A base for frozen config and traits dataclasses: list values become tuples.

    A TOML array and a distro's trait come as lists; as tuples the dataclass stays immutable
    (and hashable), so a feature can declare ``tuple[str, ...]`` fields and take either.
    """

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self):
            return
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))


def authorized_keys(sources: SourceMap, key: str, inline: Iterable[str],
                    files: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """The public keys of a table at ``key`` (``features.ssh``, ``features.users.accounts.0``):
    its ``authorized_keys`` and the lines of its ``authorized_keys_files`` (read here, once,
    confined to the directory of the recipe that names them), and the problems found.

    Each inline key and each file is checked to hold public keys only: a private key pasted by
    mistake must never reach an image. A file is reported once, at its first bad line.
    """
    keys: list[str] = []
    problems: list[Problem] = []
    for i, k in enumerate(inline):
        if not SSH_KEY.match(k.strip()):
            problems.append(sources.problem(
                f"{key}.authorized_keys", f"entry {i} does not look like an ssh public key: "
                f"{k[:40]!r}", "paste one line of an id_*.pub file, e.g. 'ssh-ed25519 AAAA... "
                "me@host'"))
        keys.append(k.strip())
    for name in files:
        files_key = f"{key}.authorized_keys_files"
        try:
            text, path = sources.read_file(files_key, name)
        except RecipeError as e:
            problems += e.problems
            continue
        for n, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not SSH_KEY.match(line):
                problems.append(sources.problem(files_key, f"{path}:{n} is not an ssh public key",
                                                "use a .pub file, never a private key"))
                break
            keys.append(line)
    return keys, problems


def read_once(kept: K | None, read: Callable[[], tuple[K, list[Problem]]]) -> K:
    """What ``validate`` read and kept, or ``read()`` now when it was not called (a feature
    object made outside a load): the value, or a RecipeError with its problems."""
    if kept is not None:
        return kept
    value, problems = read()
    if problems:
        raise RecipeError(problems)
    return value


def keys_digest(keys: Iterable[str]) -> str:
    """sha256 of a list of public keys: what a rootfs digest records instead of the keys."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def check_password_hash(sources: SourceMap, key: str, value: str) -> list[Problem]:
    """A problem unless ``value`` (at ``key``) is a crypt(3) hash: a plaintext password would be
    readable in the recipe, the image and its manifest."""
    if CRYPT_HASH.match(value):
        return []
    return [sources.problem(key, "must be a crypt(3) password hash, not a password",
                            "make one with `openssl passwd -6` or `mkpasswd -m yescrypt`; a "
                            "plaintext password would be readable in the recipe, the image and "
                            "its manifest")]


def install_authorized_keys(ctx: RootfsContext, user: str, home: str, keys: Iterable[str]) -> None:
    """~/.ssh/authorized_keys owned by the user, with the modes sshd insists on."""
    ctx.make_dir(f"{home}/.ssh", mode=0o700, owner=user)
    ctx.write_file(f"{home}/.ssh/authorized_keys", "\n".join(keys) + "\n", mode=0o600,
                   owner=user)


def set_password_hash(ctx: RootfsContext, user: str, hashed: str) -> None:
    """Put ``hashed`` into the image's /etc/shadow for ``user`` (the same format on every
    distro), keeping the file's mode and owner."""
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
