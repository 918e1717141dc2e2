"""``inspect`` and ``diff``: what is in a built image, and what changed between two builds.

Both read only the artifact directory (manifest.json, the tarball's headers, the .nspawn and
the drop-in), so they work on artifacts downloaded from CI as well as on local builds.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .audit import open_tarball
from .errors import Problem, RecipeError

BAR = 30


@dataclass
class Artifact:
    dir: Path
    manifest: dict

    @classmethod
    def open(cls, path: Path) -> Artifact:
        try:
            return cls(path, json.loads((path / "manifest.json").read_text()))
        except (OSError, ValueError) as e:
            raise RecipeError(Problem(path, None, f"not an artifact directory ({e})",
                                      "give a directory a build wrote, e.g. out/NAME")) from None

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def tarball(self) -> Path:
        return self.dir / self.manifest["artifacts"]["tarball"]["file"]

    def settings(self, which: str) -> list[str]:
        rel = self.manifest["artifacts"][which]["file"]
        return [line for line in (self.dir / rel).read_text().splitlines()
                if line and not line.startswith("#")]

    def files(self, with_digests: bool = False) -> dict[str, tuple[int, str]]:
        """``{path: (size, kind or digest)}`` from the tarball (headers; digests on request)."""
        out: dict[str, tuple[int, str]] = {}
        with open_tarball(self.tarball) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for m in tar:
                name = "/" + m.name.removeprefix("./").strip("/")
                if m.isfile() and with_digests:
                    fh = tar.extractfile(m)
                    h = hashlib.sha256()
                    while fh and (chunk := fh.read(1 << 20)):
                        h.update(chunk)
                    out[name] = (m.size, f"{m.mode:o}:{m.uid}:{m.gid}:{h.hexdigest()}")
                else:
                    out[name] = (m.size, f"{m.mode:o}:{m.uid}:{m.gid}:{m.type!r}:{m.linkname}")
        return out


def _bar(value: float, top: float) -> str:
    return "█" * max(1, round(BAR * value / top)) if top else ""


def human_size(n: float) -> str:
    """Bytes as B/KiB/MiB/GiB for tables."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def inspect_report(art: Artifact, top: int = 15) -> str:
    m = art.manifest
    lines = [f"{art.name}: {m['base']['distro']} {m['base']['release']} {m['base']['arch']}, "
             f"{len(m['packages'])} packages, tree {human_size(m['tree']['bytes'])}, tarball "
             f"{human_size(m['artifacts']['tarball']['size'])} ({m['artifacts']['tarball']['compression']})",
             f"  recipe digest {m['recipe_digest'][:16]}, nspawnbuild {m['tool']['version']}, "
             f"epoch {m['source_date_epoch']}", "", f"largest packages (top {top}):"]
    pkgs = sorted(m["packages"], key=lambda p: -p["installed_size_kib"])[:top]
    biggest = pkgs[0]["installed_size_kib"] if pkgs else 0
    for p in pkgs:
        lines.append(f"  {p['name'][:28]:28} {human_size(p['installed_size_kib'] * 1024):>10}  "
                     f"{_bar(p['installed_size_kib'], biggest)}")
    sizes: dict[str, int] = defaultdict(int)
    for path, (size, _) in art.files().items():
        sizes["/" + path.strip("/").split("/")[0]] += size
    lines += ["", "size by top-level directory:"]
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])
    for d, size in ranked:
        if size:
            lines.append(f"  {d:28} {human_size(size):>10}  {_bar(size, ranked[0][1])}")
    lines += ["", "settings (.nspawn):"] + [f"  {s}" for s in art.settings("nspawn")]
    unit = art.settings("dropin")
    lines += ["", "unit drop-in:"] + ([f"  {s}" for s in unit] or ["  (none)"])
    return "\n".join(lines)


def diff_report(a: Artifact, b: Artifact) -> tuple[str, bool]:
    """A readable comparison of two builds, and whether they differ at all."""
    lines: list[str] = [f"--- {a.dir}", f"+++ {b.dir}"]
    pa = {p["name"]: p["version"] for p in a.manifest["packages"]}
    pb = {p["name"]: p["version"] for p in b.manifest["packages"]}
    pkg_lines = [f"  + {n} {pb[n]}" for n in sorted(pb.keys() - pa.keys())]
    pkg_lines += [f"  - {n} {pa[n]}" for n in sorted(pa.keys() - pb.keys())]
    pkg_lines += [f"  ~ {n} {pa[n]} -> {pb[n]}" for n in sorted(pa.keys() & pb.keys())
                  if pa[n] != pb[n]]
    lines += ["packages:"] + (pkg_lines or ["  (same)"])
    fa, fb = a.files(with_digests=True), b.files(with_digests=True)
    by_dir: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for path in fa.keys() | fb.keys():
        parents = path.strip("/").split("/")[:-1]  # summarise by directory, two levels deep
        d = "/" + "/".join(parents[:2])
        if path not in fa:
            by_dir[d][0] += 1
        elif path not in fb:
            by_dir[d][1] += 1
        elif fa[path] != fb[path]:
            by_dir[d][2] += 1
    lines.append("files (added / removed / changed, by directory):")
    file_lines = [f"  {d:40} +{x} -{y} ~{z}" for d, (x, y, z) in sorted(by_dir.items())]
    lines += file_lines or ["  (same)"]
    sa, sb = a.manifest["tree"]["bytes"], b.manifest["tree"]["bytes"]
    ta, tb = a.manifest["artifacts"]["tarball"]["size"], b.manifest["artifacts"]["tarball"]["size"]
    lines.append(f"size: tree {human_size(sa)} -> {human_size(sb)} ({human_size(sb - sa)}), "
                 f"tarball {human_size(ta)} -> {human_size(tb)} ({human_size(tb - ta)})")
    setting_lines = []
    for which in ("nspawn", "dropin"):
        xa, xb = a.settings(which), b.settings(which)
        setting_lines += [f"  - {s}" for s in xa if s not in xb]
        setting_lines += [f"  + {s}" for s in xb if s not in xa]
    lines += ["settings:"] + (setting_lines or ["  (same)"])
    differs = bool(pkg_lines or file_lines or setting_lines or sa != sb)
    return "\n".join(lines), differs
