"""Host sentinels for the hostile-recipe corpus: decoys a hostile build would change if it escaped.

Each one stands in for a real host resource the test must never touch:

- decoy files (a "secret" and a token also put in the test process's environment, as a CI
  token would be): a recipe that reads host files would ship them;
- a decoy loop device over a 1 MiB file: a step that ``mknod``s a host block device and writes
  to it would change the file behind it (never this machine's real disk);
- a decoy cgroup-v1 hierarchy (``name=nbdecoy``, no controllers) with its own ``release_agent``:
  the classic cgroup-v1 escape writes there.

``check()`` after each case says what changed, if anything.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Sentinels:
    top: Path
    token: str
    secret: Path
    backing: Path
    loop: str | None  # /dev/loopN, None when this host has no loop devices
    loop_dev: tuple[int, int] | None
    cgroup: Path | None  # mount point of the decoy hierarchy, None when it cannot be mounted
    state: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> dict[str, str]:
        out = {"secret": _sha(self.secret), "backing": _sha(self.backing)}
        if self.loop:
            with open(self.loop, "rb") as fh:
                out["loop"] = hashlib.sha256(fh.read()).hexdigest()
        if self.cgroup:
            out["release_agent"] = (self.cgroup / "release_agent").read_text()
            out["notify_on_release"] = (self.cgroup / "notify_on_release").read_text()
            out["children"] = ",".join(sorted(p.name for p in self.cgroup.iterdir() if p.is_dir()))
        out["top"] = ",".join(sorted(p.name for p in self.top.iterdir()))
        return out

    def check(self) -> list[str]:
        now = self.snapshot()
        return [f"{k}: {self.state[k]!r} -> {now.get(k)!r}" for k in self.state
                if now.get(k) != self.state[k]]


def setup(top: Path) -> Sentinels:
    top.mkdir(parents=True, exist_ok=True)
    token = f"NSBDECOY{secrets.token_hex(8)}"
    secret = top / "secret"
    secret.write_text(f"root:$6$decoy$hash-{token}:19000:0:99999:7:::\n")
    backing = top / "disk.img"
    backing.write_bytes(token.encode() * ((1 << 20) // len(token)))
    loop = loop_dev = None
    r = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if r.returncode == 0:
        loop = r.stdout.strip()
        st = os.stat(loop)
        loop_dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    cgroup: Path | None = top / "cgroup"
    assert cgroup is not None
    cgroup.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "cgroup", "-o", "none,name=nbdecoy", "nbdecoy", str(cgroup)],
                      capture_output=True).returncode != 0:
        cgroup.rmdir()
        cgroup = None
    s = Sentinels(top, token, secret, backing, loop, loop_dev, cgroup)
    s.state = s.snapshot()
    return s


def teardown(s: Sentinels) -> None:
    if s.cgroup:
        subprocess.run(["umount", str(s.cgroup)], check=False)
    if s.loop:
        subprocess.run(["losetup", "-d", s.loop], check=False)
