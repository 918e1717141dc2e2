"""The commands that put a built image on this machine: ``install`` (as a host would run it)
and ``shell`` / ``boot`` (try it in a scratch copy)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import AddCommand, options_from


def add_install(command: AddCommand) -> None:
    p = command("install", help="install built artifacts on this host (or under --root)",
                epilog="examples:\n  nspawnbuild install out/ollama-gpu --enable --start\n"
                       "  nspawnbuild install out/debian-base --root /mnt/target --name web1\n"
                       "  nspawnbuild install out/web --name web2 --address 192.0.2.18/28 "
                       "--gateway 192.0.2.17 --host-network --start\n"
                       "  nspawnbuild install https://HOST/images/web/ --start")
    p.add_argument("artifact_dir", metavar="DIR|URL",
                   help="a directory a build wrote (out/NAME), or the http://, https:// or "
                        "file:// URL of a signed set, which is downloaded and verified first")
    p.add_argument("--keyring", metavar="FILE",
                   help="for a URL: the signers' public keys (default: the host's import "
                        "keyring, as machinectl pull-tar uses)")
    p.add_argument("--name", help="machine name on the host, and its hostname (default: the "
                                  "recipe's); one image installs as many machines")
    p.add_argument("--root", default="/", help="install into this directory tree instead of /")
    p.add_argument("--force", action="store_true",
                   help="replace an existing machine (refused while it runs; its state "
                        "directories are kept)")
    p.add_argument("--restart", action="store_true",
                   help="replace a running machine: stop it, install, start it again (the old "
                        "image is put back when the new one does not start)")
    p.add_argument("--address", action="append", metavar="ADDR/PREFIX",
                   help="this instance's own address on host0, e.g. 192.0.2.18/28 or "
                        "2001:db8::18/64, in place of the recipe's (repeat for more)")
    p.add_argument("--gateway", action="append", metavar="ADDR",
                   help="this instance's gateway, in place of the recipe's (repeat for more; "
                        "with --host-network it is the host's address on the link)")
    p.add_argument("--dns", action="append", metavar="ADDR",
                   help="this instance's name servers, in place of the recipe's (repeat)")
    p.add_argument("--bridge", metavar="IFNAME",
                   help="join this host bridge instead of the recipe's network wiring")
    p.add_argument("--host-network", action="store_true",
                   help="install and apply the host's half of the network (networkd files "
                        "for ve-NAME or the bridge, forwarding sysctls, NAT); see DIR/host/")
    p.add_argument("--enable", action="store_true", help="start the machine at boot")
    p.add_argument("--start", action="store_true", help="start it now (needs systemd running)")
    p.set_defaults(func=cmd_install)


def cmd_install(args: argparse.Namespace) -> int:
    from ..hostsetup import settings_for
    from ..install import install
    from ..instance import check
    from ..pull import install_url, is_url

    root = Path(args.root)
    settings = check(args.address, args.gateway, args.dns, args.bridge)
    if is_url(args.artifact_dir):
        done = install_url(args.artifact_dir, keyring=Path(args.keyring) if args.keyring else None,
                           name=args.name, root=root, force=args.force, enable=args.enable,
                           start=args.start, restart=args.restart, say=print,
                           overrides=settings, host_network=args.host_network,
                           host_settings=settings_for)
    else:
        done = install(Path(args.artifact_dir), name=args.name, root=root, force=args.force,
                       enable=args.enable, start=args.start, restart=args.restart,
                       overrides=settings, host_network=args.host_network,
                       host_settings=settings_for)
    for line in done:
        print(line)
    return 0


def _add_run(command: AddCommand, verb: str, text: str) -> None:
    p = command(verb, help=text,
                epilog=f"examples:\n  nspawnbuild {verb} debian-base\n"
                       + ("  nspawnbuild shell out/debian-base -- cat /etc/os-release"
                          if verb == "shell" else "  (press ^] three times to leave)"))
    p.add_argument("image", metavar="IMAGE", help="a recipe name or an artifact directory")
    if verb == "shell":
        p.add_argument("command", nargs="*", metavar="-- CMD",
                       help="command to run instead of a shell, after --")
    else:
        p.set_defaults(command=[])
    p.add_argument("--out", help="artifact directory (default: ./out)")
    p.add_argument("--work-dir", help="scratch space (default: ./.nspawnbuild)")
    p.set_defaults(func=cmd_run, command_name=verb)


def add_shell(command: AddCommand) -> None:
    _add_run(command, "shell", "run a shell (or a command) in a built image, with its settings")


def add_boot(command: AddCommand) -> None:
    _add_run(command, "boot", "boot a built image in systemd-nspawn, with its settings")


def cmd_run(args: argparse.Namespace) -> int:
    from ..artifact import Artifact
    from ..imagerun import locate_image, run_image

    layout = options_from(args).layout
    target = locate_image(args.image, layout)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run_image(Artifact.open(target), layout.work / "run", boot=args.command_name == "boot",
                     command=command)
