"""Helpers shared by feature plugins: errors that point into the recipe, files next to it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import NoReturn

from .errors import Problem, RecipeError
from .recipe import Recipe, locate

SSH_KEY = re.compile(
    r"^(?:(?:[a-z-]+(?:=\"[^\"]*\")?,?)+ )?"  # optional options, e.g. no-pty,from="..."
    r"(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(?:256|384|521)|"
    r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}(?: [^\n\r]*)?$")
CRYPT_HASH = re.compile(r"^\$(1|5|6|y|gy|7|2[abxy]?)\$[./A-Za-z0-9$=,]{8,}$")
# absolute, no "." or ".." component (the first one included), no ':' (nspawn's separator),
# no backslash (nspawn reads it as an escape), no control characters
ABS_PATH = r"^/(?!(.*/)?\.\.?(/|$))[^\x00-\x1f\x7f:\\]*$"
KEYS_SCHEMA = {"type": "array", "items": {"type": "string", "minLength": 1}}


def fail(recipe: Recipe, key: str, message: str, hint: str | None = None) -> NoReturn:
    """Raise a RecipeError for ``key`` (dotted) of ``recipe``, with its line when found."""
    line = None
    for path in reversed(recipe.chain):
        try:
            parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
            line = locate(path.read_text(), parts)
        except OSError:
            continue
        if line:
            raise RecipeError(Problem(path, key, message, hint, line))
    raise RecipeError(Problem(recipe.path, key, message, hint))


def declaring_file(recipe: Recipe, key: str) -> Path:
    """The file of the ``extends`` chain that set ``key`` (the child-most one that has it)."""
    for path in reversed(recipe.chain):
        try:
            node: object = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
        for part in key.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                break
        else:
            return path
    return recipe.path


def read_recipe_file(recipe: Recipe, key: str, name: str, limit: int = 1 << 20) -> tuple[str, Path]:
    """The text of a file named in a feature table, confined like ``[[files]] src``: inside the
    directory of the recipe file that names it (symlinks followed; no /proc, /sys, /dev, no
    FIFOs or devices), at most ``limit`` bytes."""
    from .fetch import Refused, read_confined

    root = declaring_file(recipe, key).parent
    try:
        data, real = read_confined(root, name, limit, f"a file here may have {limit} bytes")
    except Refused as e:
        fail(recipe, key, str(e), e.hint)
    except FileNotFoundError:
        fail(recipe, key, f"file {root / name} does not exist", "paths are relative to the recipe file")
    except OSError as e:
        fail(recipe, key, f"cannot read {name}: {e.strerror}",
             "paths are relative to the recipe file that names them")
    return data.decode("utf-8", "replace"), real


def authorized_keys(recipe: Recipe, key: str, inline: list[str], files: list[str]) -> list[str]:
    """Inline keys plus the keys read from files, each checked to look like a public key."""
    keys: list[str] = []
    for i, k in enumerate(inline):
        if not SSH_KEY.match(k.strip()):
            fail(recipe, f"{key}.authorized_keys", f"entry {i} does not look like an ssh public "
                 f"key: {k[:40]!r}", "paste one line of an id_*.pub file, e.g. 'ssh-ed25519 AAAA... me@host'")
        keys.append(k.strip())
    for name in files:
        text, path = read_recipe_file(recipe, f"{key}.authorized_keys_files", name)
        for n, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not SSH_KEY.match(line):
                fail(recipe, f"{key}.authorized_keys_files", f"{path}:{n} is not an ssh public key",
                     "use a .pub file, never a private key")
            keys.append(line)
    return keys


def check_password_hash(recipe: Recipe, key: str, value: str) -> None:
    if not CRYPT_HASH.match(value):
        fail(recipe, key, "must be a crypt(3) password hash, not a password",
             "make one with `openssl passwd -6` or `mkpasswd -m yescrypt`; a plaintext password "
             "would be readable in the recipe, the image and its manifest")
