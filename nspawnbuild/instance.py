"""One image installed as many machines: an instance's name and network settings.

``install DIR --name web2 --address 192.0.2.18/28 --gateway 192.0.2.17`` makes web2 a machine
of its own without rebuilding the image: its /etc/hostname and /etc/hosts say web2, and its
host0 config (the networkd or ifupdown file the network feature wrote) carries its own
addresses. The image tree is untrusted (it came from a tarball), so every write into it goes
through :mod:`imagefs`, resolved inside the tree. The settings are recorded on the host
(ROOT/etc/nspawnbuild/instances/NAME.json) so that the next install of the machine (an
update with ``--restart``) keeps them when the command line does not repeat them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifact import confined
from .atomic import replacing
from .errors import Problem, RecipeError
from .imagefs import read_text_in_root, resolve_in_root, write_file
from .netconf import (
    GENERATED,
    INTERFACES_FILE,
    NETWORK_FILE,
    NetSpec,
    address_problem,
    interfaces_file,
    networkd_file,
    resolv_conf,
)

RECORDS = "etc/nspawnbuild/instances"
MAX_RECORD = 64 << 10
BRIDGE = re.compile(r"[A-Za-z0-9_.-]{1,15}")


@dataclass(frozen=True)
class Overrides:
    """What the command line (or the record of an earlier install) sets for an instance;
    None: the recipe's."""

    address: tuple[str, ...] | None = None
    gateway: tuple[str, ...] | None = None
    dns: tuple[str, ...] | None = None
    bridge: str | None = None

    @property
    def network(self) -> bool:
        return any(v is not None for v in (self.address, self.gateway, self.dns, self.bridge))

    def over(self, older: Overrides) -> Overrides:
        """These values, and ``older``'s where these say nothing."""
        return Overrides(*(new if new is not None else old for new, old in
                           zip(self.as_tuple(), older.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.address, self.gateway, self.dns, self.bridge)

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in zip(("address", "gateway", "dns", "bridge"), self.as_tuple(),
                                strict=True) if v is not None}


def check(address: list[str] | None, gateway: list[str] | None, dns: list[str] | None,
          bridge: str | None) -> Overrides:
    """The command line's values, each checked (RecipeError naming the option, exit 2)."""
    for option, values, kind in (("--address", address, "interface"),
                                 ("--gateway", gateway, "address"), ("--dns", dns, "address")):
        for value in values or ():
            why = address_problem(value, kind)
            if why:
                raise RecipeError(Problem(Path(option), None, f"{value!r} is {why}",
                                          f"{option} takes one value; repeat it for more"))
    if bridge is not None and not BRIDGE.fullmatch(bridge):
        raise RecipeError(Problem(Path("--bridge"), None, f"{bridge!r} is not an interface "
                                  "name", "at most 15 letters, digits, '_', '.', '-'"))
    def kept(values: list[str] | None) -> tuple[str, ...] | None:
        return None if values is None else tuple(values)
    return Overrides(kept(address), kept(gateway), kept(dns), bridge)


def effective(recipe: NetSpec | None, over: Overrides) -> NetSpec | None:
    """The machine's network: the recipe's with the instance's values laid over; RecipeError
    when the instance sets addresses the recipe's mode cannot carry."""
    if not over.network:
        return recipe
    if recipe is None or recipe.mode in ("host",):
        mode = "no network feature" if recipe is None else "mode 'host'"
        raise RecipeError(Problem(Path("--address"), None, f"the image has {mode}: it has no "
                                  "host0 of its own to address", "give addresses only to an "
                                  "image built with [features.network] veth, bridge or zone"))
    spec = recipe.with_instance(address=over.address, gateway=over.gateway, dns=over.dns,
                                bridge=over.bridge)
    if spec.address and spec.dhcp:
        raise RecipeError(Problem(Path("--address"), None, "the image's recipe says dhcp = "
                                  "true", "rebuild it without dhcp to give static addresses"))
    return spec


def record_path(root: Path, name: str) -> Path:
    top = root.resolve()
    return confined(top / RECORDS / f"{name}.json", top / "etc",
                    "install keeps instance settings below ROOT/etc; pick another --root")


def load(root: Path, name: str) -> Overrides:
    """The settings an earlier install recorded for machine ``name`` (none: all None)."""
    path = record_path(root, name)
    if not path.is_file():
        return Overrides()
    try:
        data = json.loads(path.read_bytes()[:MAX_RECORD])
        lists = [data.get(k) for k in ("address", "gateway", "dns")]
        address, gateway, dns = (v if isinstance(v, list) else None for v in lists)
        bridge = data.get("bridge")
        return check(address, gateway, dns, bridge if isinstance(bridge, str) else None)
    except (ValueError, AttributeError, RecipeError) as e:
        raise RecipeError(Problem(path, None, f"is not an instance record nspawnbuild wrote "
                                  f"({e})", "remove it (the recipe's settings then apply), "
                                  "or give the settings again")) from None


def save(root: Path, name: str, over: Overrides) -> Path:
    path = record_path(root, name)
    with replacing(path, mode=0o644) as tmp:
        tmp.write_text(json.dumps({"name": name, **over.as_dict()}, indent=2) + "\n")
    return path


def _owner(tree: Path) -> tuple[int, int]:
    """Who owns the tree's /etc: files written there get the same owner (an image whose
    IDs are shifted keeps them shifted)."""
    st = resolve_in_root(tree, "/etc").stat()
    return st.st_uid, st.st_gid


def hosts_text(old: str | None, name: str) -> str:
    """/etc/hosts with ``name`` on 127.0.1.1 (Debian's convention), everything else kept."""
    lines = [line for line in (old or "127.0.0.1\tlocalhost\n").splitlines()
             if not line.startswith("127.0.1.1")]
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("127.0.0.1")), 0)
    lines.insert(at, f"127.0.1.1\t{name}")
    return "\n".join(lines) + "\n"


def apply_to_tree(tree: Path, name: str, spec: NetSpec | None, over: Overrides) -> list[str]:
    """Write the instance's hostname, hosts and (when it has network values of its own) host0
    config into the freshly imported ``tree``; what was done."""
    uid, gid = _owner(tree)
    done = []
    write_file(tree, "/etc/hostname", f"{name}\n".encode(), uid=uid, gid=gid)
    hosts = hosts_text(read_text_in_root(tree, "/etc/hosts"), name)
    write_file(tree, "/etc/hosts", hosts.encode(), uid=uid, gid=gid)
    done.append(f"set the hostname to {name} (/etc/hostname, /etc/hosts)")
    if spec is None or not (over.address is not None or over.gateway is not None
                            or over.dns is not None):
        return done
    for path, render in ((NETWORK_FILE, networkd_file), (INTERFACES_FILE, interfaces_file)):
        text = read_text_in_root(tree, path)
        if text is not None and text.startswith(GENERATED):
            write_file(tree, path, render(spec).encode(), uid=uid, gid=gid)
            done.append(f"wrote {name}'s own network settings into {path}")
            if path == INTERFACES_FILE and over.dns is not None:  # no resolved there
                write_file(tree, "/etc/resolv.conf", resolv_conf(spec.dns).encode(),
                           uid=uid, gid=gid)
            return done
    raise RecipeError(Problem(Path("--address"), None, f"the image has no host0 config "
                              f"nspawnbuild wrote ({NETWORK_FILE} or {INTERFACES_FILE})",
                              "rebuild the image with this nspawnbuild's network feature"))
