"""The one environment every process a build starts runs in, whatever the caller's.

A bootstrapper, a package manager or a maintainer script that reads the caller's umask, time
zone, locale, ``$HOME``, host name or any stray variable can write it into the image, and then
two builds of one recipe differ by who ran them. So the processes of a build never inherit the
caller's: each gets

- the umask :data:`UMASK` (022);
- the environment :data:`FIXED` (``PATH``, ``HOME=/root``, ``LANG``/``LC_ALL=C.UTF-8``,
  ``TZ=UTC``), the proxy variables of :data:`PASSED` when the caller has them (they choose the
  route to the archive, not what is installed), and what the caller of the process adds (the
  recipe's ``SOURCE_DATE_EPOCH`` for bootstrappers and steps, a bootstrapper's own ``HOME``);
  nothing else of the caller's, not even ``LD_PRELOAD``;
- for build steps (:meth:`nspawnbuild.steplog.StepLog.run`), a UTS namespace of its own whose
  host name is :data:`HOSTNAME` and NIS domain name :data:`DOMAINNAME` (containers get the
  machine name from systemd-nspawn, and the domain name from here).

Inside the container systemd-nspawn passes none of its own environment; the steps get nspawn's
defaults plus :data:`CONTAINER` and ``SOURCE_DATE_EPOCH`` (see :mod:`nspawnbuild.sandbox`).

Not fixed: the number of CPUs (a process may ask for it), the kernel's clock (only a VM or the
host's clock could change it) and the kernel itself. The packer does not depend on them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

UMASK = 0o022
HOSTNAME = "localhost"
DOMAINNAME = "(none)"  # what the kernel has when nobody set one
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: the whole environment of a build's process, before what its caller adds
FIXED: Mapping[str, str] = {
    "PATH": PATH,
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
}
#: the caller's variables a build's process still gets: how to reach the network
PASSED = ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy",
          "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY")
#: what every command inside the image gets besides systemd-nspawn's own defaults
CONTAINER: Mapping[str, str] = {
    "DEBIAN_FRONTEND": "noninteractive",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
}

CLONE_NEWUTS = 0x04000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def environment(extra: Mapping[str, str] | None = None,
                caller: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one of the build's processes: :data:`FIXED`, the :data:`PASSED`
    variables ``caller`` (default: this process's environment) has, then ``extra``."""
    outer = os.environ if caller is None else caller
    env = dict(FIXED)
    env.update({k: outer[k] for k in PASSED if k in outer})
    env.update(extra or {})
    return env


def set_umask() -> None:
    """In a child before it executes: the build's umask."""
    os.umask(UMASK)


def enter_uts_namespace(hostname: str = HOSTNAME, domainname: str = DOMAINNAME) -> None:
    """Move this process into a UTS namespace of its own with fixed names (needs root).

    Run in a child before it executes (``preexec_fn``): the host's names stay as they are, and
    what the child and its own children see from ``uname`` is the same on every build host.
    """
    if _libc.unshare(CLONE_NEWUTS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"a UTS namespace for the build: {os.strerror(err)}")
    for call, value in ((_libc.sethostname, hostname), (_libc.setdomainname, domainname)):
        data = value.encode()
        if call(data, len(data)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"set the build's {value!r}: {os.strerror(err)}")


def build_child() -> None:
    """``preexec_fn`` part of a build step: the umask and the UTS namespace."""
    set_umask()
    enter_uts_namespace()
