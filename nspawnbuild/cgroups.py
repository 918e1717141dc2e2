"""Whether an image's systemd boots on this host's cgroup hierarchy.

systemd 258 dropped the legacy (v1) and hybrid cgroup hierarchies: a container whose systemd
is 258 or newer stops at boot with "Detected unsupported legacy cgroup hierarchy" on a host
that mounts cgroup v1 (measured on this project's hybrid Debian 12 host: Debian sid's systemd
262 printed "Detected unsupported legacy cgroup hierarchy, refusing execution." and exited;
trixie's 257 booted). Installing such an image
would succeed and fail at its first start, so install says so before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: the first systemd that refuses to boot on a legacy or hybrid hierarchy
UNIFIED_ONLY_SINCE = 258
MOUNTINFO = Path("/proc/self/mountinfo")


def hierarchy(mountinfo: str) -> str:
    """``unified`` (cgroup v2 at /sys/fs/cgroup), ``hybrid`` (v1 controllers there, v2 at
    /sys/fs/cgroup/unified) or ``legacy`` (v1 only), from /proc/self/mountinfo's text."""
    types: dict[str, str] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        fstype = line.split(" - ", 1)[1].split()[0]
        types[fields[4]] = fstype  # the mount point; a later mount over it wins
    if types.get("/sys/fs/cgroup") == "cgroup2":
        return "unified"
    if types.get("/sys/fs/cgroup/unified") == "cgroup2":
        return "hybrid"
    return "legacy"


def image_systemd(packages: Iterable[Any]) -> int | None:
    """The major version of the image's systemd, from the manifest's package list (Debian's
    ``257.13-1~deb13u1``, Fedora's ``257.5-1.fc42``); None for an image without systemd."""
    for package in packages:
        if isinstance(package, Mapping) and package.get("name") == "systemd":
            match = re.match(r"(?:\d+:)?(\d+)", str(package.get("version", "")))
            return int(match.group(1)) if match else None
    return None


def refusal(packages: Iterable[Any], mountinfo: str) -> str | None:
    """Why an image with ``packages`` cannot boot under this host's hierarchy, or None."""
    version = image_systemd(packages)
    layout = hierarchy(mountinfo)
    if version is None or version < UNIFIED_ONLY_SINCE or layout == "unified":
        return None
    return (f"the image's systemd is {version}, and systemd {UNIFIED_ONLY_SINCE} and newer do "
            f"not boot on a {layout} cgroup hierarchy, which this host has (it would stop at "
            "its first start: \"Detected unsupported legacy cgroup hierarchy\")")


FIX = ("boot this host with the unified hierarchy (remove systemd.unified_cgroup_hierarchy=0 "
       "and systemd.legacy_systemd_cgroup_controller=1 from the kernel command line: "
       "GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot), or build the image for "
       f"a release whose systemd is older than {UNIFIED_ONLY_SINCE} ([base] release)")
