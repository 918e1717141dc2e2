"""Basics every image gets: an /etc/hosts that knows the machine's own name.

(/etc/hostname itself is written by the core scrub step, after every plugin, so that no
bootstrapper's copy of the build host's name can survive.)
"""

from __future__ import annotations

from nspawnbuild import hookimpl
from nspawnbuild.rootfs import RootfsContext

HOSTS = """127.0.0.1\tlocalhost
127.0.1.1\t{name}
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
"""


@hookimpl
def nspawnbuild_configure_rootfs(ctx: RootfsContext) -> None:
    ctx.write_file("/etc/hosts", HOSTS.format(name=ctx.recipe.name))
