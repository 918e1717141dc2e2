"""motd: the message of the day, ``/etc/motd``, shown after a login.

```toml
[features.motd]
text = "Welcome to the build box. Report problems to ops@example.org."
```

The whole feature is this module and its line in ``pyproject.toml``'s entry points: what adding
a feature to nspawnbuild takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nspawnbuild.feature import Feature, NoTraits, Tuples
from nspawnbuild.hookspecs import hookimpl
from nspawnbuild.rootfs import RootfsContext

#: what the message may be: text of at most MAX_LENGTH characters, lines separated by newlines
#: and no other control character (an escape sequence would reach every login's terminal)
MAX_LENGTH = 4096
TEXT = r"^[^\x00-\x09\x0b-\x1f\x7f]*$"
MOTD = "/etc/motd"


@dataclass(frozen=True)
class MotdConfig(Tuples):
    text: str


def motd_file(text: str) -> str:
    """The file's content: the text, ending with a newline (one is added when missing)."""
    return text if text.endswith("\n") else text + "\n"


class Motd(Feature[MotdConfig, NoTraits]):
    """/etc/motd with the recipe's text."""

    name = "motd"
    config_class = MotdConfig
    required = ("text",)
    properties = {
        "text": {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH, "pattern": TEXT,
                 "description": "the message of the day, written to /etc/motd",
                 "x-hint": f"plain text of at most {MAX_LENGTH} characters; newlines are the "
                           "only control characters allowed"},
    }

    def configure(self, ctx: RootfsContext) -> None:
        ctx.write_file(MOTD, motd_file(self.config.text), mode=0o644)


@hookimpl
def nspawnbuild_features() -> list[type[Feature[Any, Any]]]:
    return [Motd]
