"""What ``nspawnbuild build`` prints when it is done: the files it published, with size and
sha256, and the commands that install them on a host (``--json``: the same as data).

Read back from out/NAME (the manifest and SHA256SUMS a build wrote), so that what is printed
is what a host will get.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.text import Text

from .install import read_sums
from .paths import BUILD_LOG, dropin_name, nspawn_name
from .pkgcache import read_use
from .recipe.defaults import ZSTD_IMPORT_SINCE
from .signing import SIGNATURE
from .sizes import human_size


def build_summary(out: Path, cache_use: Path | None = None) -> dict[str, Any]:
    """What a build published: the files with size and sha256 (from its manifest); with
    ``cache_use``, how this run's bootstrap and package layer used the package cache (none
    of either ran when both layers were in the cache: nothing installed, nothing downloaded)."""
    manifest = json.loads((out / "manifest.json").read_text())
    files: list[dict[str, Any]] = [{"file": str(p.relative_to(out)), "size": p.stat().st_size}
                                   for p in sorted(out.rglob("*"))
                                   if p.is_file() and p.name != BUILD_LOG]
    digests = read_sums(out / "SHA256SUMS")
    for f in files:
        f["sha256"] = digests.get(str(f["file"]))
    signed = (out / SIGNATURE).is_file()
    tarball = manifest["artifacts"]["tarball"]["file"]
    return {"name": manifest["name"], "dir": str(out), "files": files,
            "tarball": tarball, "log": str(out / BUILD_LOG),
            "signature": SIGNATURE if signed else None,
            "pull_min_systemd": ZSTD_IMPORT_SINCE if str(tarball).endswith(".zst") else None,
            **({"package_cache": read_use(cache_use).as_dict()} if cache_use else {})}


def pull_line(summary: dict[str, Any]) -> str:
    """Which hosts can ``machinectl pull-tar`` the tarball: systemd's import reads gzip and xz
    in every version, zstd only from 258."""
    since = summary.get("pull_min_systemd")
    if since is None:
        return "machinectl pull-tar: every systemd host can pull it (with SHA256SUMS beside it)"
    return (f"machinectl pull-tar: only hosts with systemd {since} or newer can pull it (zstd); "
            "for older ones set [output] compression = \"gzip\" or \"xz\"")


def format_summary(summary: dict[str, Any]) -> Text:
    """The table of what was published and the commands that install it (styled for a terminal)."""
    name, out, tarball = summary["name"], summary["dir"], summary["tarball"]
    files: list[dict[str, Any]] = summary["files"]
    width = max(len(f["file"]) for f in files)
    text = Text("\n")
    text.append(f"{name}", style="bold green").append(f": {out}\n")
    for f in files:
        text.append(f"  {f['file']:{width}} ").append(f"{human_size(f['size']):>10}", style="cyan")
        text.append(f"  {f['sha256'] or ''}\n", style="dim")
    text.append(f"  build log: {summary['log']}\n", style="dim")
    if "package_cache" in summary:
        use = summary["package_cache"]
        text.append(f"  packages: {use['from_cache']} from the cache, {use['downloaded']} "
                    f"downloaded ({human_size(use['downloaded_bytes'])})\n", style="dim")
    text.append(f"  {pull_line(summary)}\n", style="dim")
    if summary.get("signature"):
        text.append(f"  signed: {summary['signature']}; check it with: nspawnbuild verify {out} "
                    "--keyring PUBLIC-KEYS.gpg\n", style="dim")
    zstd = str(tarball).endswith(".zst")
    dropin = dropin_name(name)
    text.append("install on a host (as root):\n", style="bold")
    text.append(f"  nspawnbuild install {out} --enable --start\n")
    text.append("or by hand:\n", style="bold")
    text.append("\n".join([
        (f"  zstd -dc {out}/{tarball} | machinectl import-tar - {name}   # systemd < 258"
         if zstd else f"  machinectl import-tar {out}/{tarball} {name}"),
        f"  install -D -m 0644 {out}/{nspawn_name(name)} /etc/systemd/nspawn/{nspawn_name(name)}",
        f"  install -D -m 0644 {out}/{dropin} /etc/systemd/system/{dropin}",
        f"  systemctl daemon-reload && machinectl start {name}   # machinectl enable {name}: at boot",
    ]))
    return text
