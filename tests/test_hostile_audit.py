"""Hostile cases for the audit: tarballs written entry by entry with tarfile (hardlinks,
symlinks, odd names the packer would never write), and trees packed by the real packer, read by
the real Auditor and, for some, by the real ``nspawnbuild audit``. Each case says exactly what
it must find: a finding with its check and path, or nothing for a benign look-alike (a DER
certificate, a public key, a marker string in a binary).

Keys are made per session with the real tools (openssl, ssh-keygen, gpg when present) in a
temporary directory; no key material is committed. Every test runs with the host sentinels checked unchanged.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from conftest import BIN, ROOT
from nspawnbuild.audit import (
    CHECKS,
    INFLATE_MAX,
    SCAN_BYTES,
    Auditor,
    audit_tarball,
    host_machine_id,
    host_state,
    resolv_is_host_specific,
    settings_findings,
    split,
)
from nspawnbuild.pack import pack
from nspawnbuild.plan import nspawn_settings, unit_settings
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.render import render_dropin, render_nspawn
from nspawnbuild.settings import Setting

pytestmark = pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("ssh-keygen")),
                                reason="needs openssl and ssh-keygen to make real keys")

ID = b"0123456789abcdef0123456789abcdef\n"  # a filled machine-id (not the host's)
Keys = dict[str, bytes]


# -- real keys, made once per session ---------------------------------------------------------

def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """Private keys in every encoding the audit knows, and the public look-alikes it must
    leave alone, by file name."""
    d = tmp_path_factory.mktemp("keys")
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", d / "rsa.pem")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", d / "ec.pem")
    _openssl("genpkey", "-algorithm", "ED25519", "-out", d / "ed25519.pem")
    _openssl("genpkey", "-genparam", "-algorithm", "DSA", "-pkeyopt", "dsa_paramgen_bits:1024",
             "-out", d / "dsaparam.pem")
    _openssl("genpkey", "-paramfile", d / "dsaparam.pem", "-out", d / "dsa.pem")
    for k in ("rsa", "ec", "ed25519", "dsa"):
        _openssl("pkcs8", "-topk8", "-nocrypt", "-in", d / f"{k}.pem", "-outform", "DER",
                 "-out", d / f"{k}.p8.der")
    _openssl("rsa", "-in", d / "rsa.pem", "-traditional", "-out", d / "rsa.traditional.pem")
    _openssl("rsa", "-in", d / "rsa.pem", "-traditional", "-outform", "DER", "-out", d / "rsa.p1.der")
    _openssl("ec", "-in", d / "ec.pem", "-outform", "DER", "-out", d / "ec.sec1.der")
    _openssl("dsa", "-in", d / "dsa.pem", "-outform", "DER", "-out", d / "dsa.der")
    _openssl("pkcs8", "-topk8", "-in", d / "rsa.pem", "-v2", "aes256", "-passout", "pass:x",
             "-out", d / "rsa.encrypted.pem")
    _openssl("pkcs8", "-topk8", "-in", d / "rsa.pem", "-v2", "aes256", "-passout", "pass:x",
             "-outform", "DER", "-out", d / "rsa.encrypted.der")
    # the look-alikes: certificates and public keys, PEM and DER
    _openssl("req", "-x509", "-key", d / "rsa.pem", "-subj", "/CN=audit", "-days", "1",
             "-out", d / "cert.pem")
    _openssl("req", "-x509", "-key", d / "rsa.pem", "-subj", "/CN=audit", "-days", "1",
             "-outform", "DER", "-out", d / "cert.der")
    _openssl("req", "-x509", "-key", d / "ec.pem", "-subj", "/CN=audit", "-days", "1",
             "-outform", "DER", "-out", d / "ec.cert.der")
    _openssl("pkey", "-in", d / "rsa.pem", "-pubout", "-out", d / "rsa.pub.pem")
    _openssl("pkey", "-in", d / "rsa.pem", "-pubout", "-outform", "DER", "-out", d / "rsa.pub.der")
    _openssl("rsa", "-in", d / "rsa.pem", "-RSAPublicKey_out", "-outform", "DER",
             "-out", d / "rsa.p1pub.der")
    _openssl("pkey", "-in", d / "ec.pem", "-pubout", "-outform", "DER", "-out", d / "ec.pub.der")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "audit@test",
                    "-f", str(d / "id_ed25519")], check=True, capture_output=True)
    if shutil.which("gpg"):
        _pgp_keys(d)
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def _pgp_keys(d: Path) -> None:
    """An OpenPGP key pair, armoured, from a GnuPG home of its own (its agent stopped after)."""
    home = d / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        subprocess.run([*gpg, "--quick-gen-key", "audit <audit@test>", "ed25519", "sign", "never"],
                       check=True, capture_output=True)
        for what, name in (("--export-secret-keys", "pgp.asc"), ("--export", "pgp.pub.asc")):
            (d / name).write_bytes(subprocess.run([*gpg, "--armor", what], check=True,
                                                  capture_output=True).stdout)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True)


# -- tarballs written entry by entry ----------------------------------------------------------

@dataclass(frozen=True)
class E:
    """One tar entry: a file (``data``), a symlink (``sym``) or a hardlink (``hard``)."""

    name: str
    data: bytes = b""
    sym: str | None = None
    hard: str | None = None
    mode: int = 0o644


def write_tarball(path: Path, entries: list[E]) -> Path:
    """The entries in this order, as a hostile tool could write them (no sorting, no checks)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode = e.mode
            if e.sym is not None:
                info.type, info.linkname = tarfile.SYMTYPE, e.sym
            elif e.hard is not None:
                info.type, info.linkname = tarfile.LNKTYPE, e.hard
            else:
                info.size = len(e.data)
            tar.addfile(info, io.BytesIO(e.data) if e.sym is None and e.hard is None else None)
    return path


def found(path: Path, allow: list[str] | None = None) -> set[tuple[str, str]]:
    """``(check, path)`` of every finding in the tarball that ``allow`` does not accept."""
    failing, _ = split(audit_tarball(path, machine="box"), allow or [])
    return {(f.check, f.path) for f in failing}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nspawnbuild"), "audit", *args], capture_output=True,
                          text=True, timeout=120)


def gzip_members(*parts: bytes) -> bytes:
    """Concatenated gzip members, as ``gzip -c a >f; gzip -c b >>f`` writes (gunzip reads all)."""
    return b"".join(gzip.compress(p, mtime=0) for p in parts)


def elf_binary() -> bytes:
    """A real ELF program of this host."""
    return Path(shutil.which("true") or "/bin/true").read_bytes()


# -- the corpus -------------------------------------------------------------------------------

Case = tuple[Callable[[Keys], list[E]], set[tuple[str, str]]]
KEY = ("private-key", "/opt/app/key")

CORPUS: dict[str, Case] = {
    # PEM and OpenSSH keys that do not start the file
    "pem-after-a-comment-line": (lambda k: [E("opt/app/key", b"# demo key\n" + k["rsa.pem"])], {KEY}),
    "pem-after-64-KiB-of-text": (lambda k: [E("opt/app/key", b"x" * 65535 + b"\n" + k["ec.pem"])],
                                 {KEY}),
    "certificate-then-key-bundle": (lambda k: [E("opt/app/key", k["cert.pem"] + k["rsa.pem"])], {KEY}),
    "openssh-key-after-a-comment": (lambda k: [E("opt/app/key", b"# deploy\n" + k["id_ed25519"])],
                                    {KEY}),
    "encrypted-pkcs8-pem": (lambda k: [E("opt/app/key", k["rsa.encrypted.pem"])], {KEY}),
    "traditional-rsa-pem-crlf": (lambda k: [E("opt/app/key",
                                              k["rsa.traditional.pem"].replace(b"\n", b"\r\n"))], {KEY}),
    "pgp-armoured-private-key": (lambda k: [E("root/backup.asc", b"my key:\n" + k["pgp.asc"])],
                                 {("private-key", "/root/backup.asc")}),
    "key-appended-to-an-elf-binary": (lambda k: [E("opt/app/key", elf_binary() + k["rsa.pem"])], {KEY}),
    # DER keys
    **{f"der-{name}": ((lambda k, n=name: [E("opt/app/key", k[n])]), {KEY})
       for name in ("rsa.p8.der", "ec.p8.der", "ed25519.p8.der", "dsa.p8.der", "rsa.p1.der",
                    "ec.sec1.der", "dsa.der", "rsa.encrypted.der")},
    # keys in small compressed files
    "pem-in-gzip": (lambda k: [E("opt/app/key", gzip.compress(k["rsa.pem"]))], {KEY}),
    "pem-in-second-gzip-member": (lambda k: [E("opt/app/key", gzip_members(b"notes\n", k["ec.pem"]))],
                                  {KEY}),
    "der-in-gzip": (lambda k: [E("opt/app/key", gzip.compress(k["rsa.p8.der"]))], {KEY}),
    "openssh-in-xz": (lambda k: [E("opt/app/key", lzma.compress(k["id_ed25519"]))], {KEY}),
    "pem-in-zstd": (lambda k: [E("opt/app/key", zstandard.ZstdCompressor().compress(k["ed25519.pem"]))],
                    {KEY}),
    "pem-in-bzip2": (lambda k: [E("opt/app/key", bz2.compress(k["ec.pem"]))], {KEY}),
    # benign look-alikes: nothing to find
    "der-certificate": (lambda k: [E("opt/app/key", k["cert.der"])], set()),
    "der-ec-certificate": (lambda k: [E("opt/app/key", k["ec.cert.der"])], set()),
    "der-public-keys": (lambda k: [E(f"opt/app/{n}", k[n]) for n in
                                   ("rsa.pub.der", "rsa.p1pub.der", "ec.pub.der")], set()),
    "pem-certificate-and-public-key": (lambda k: [E("opt/app/key", k["cert.pem"] + k["rsa.pub.pem"])],
                                       set()),
    "pgp-public-key": (lambda k: [E("usr/share/keyrings/x.asc", k["pgp.pub.asc"])], set()),
    "openssh-public-key": (lambda k: [E("root/.ssh/authorized_keys", k["id_ed25519.pub"])], set()),
    "marker-strings-without-a-key": (lambda k: [
        E("usr/bin/ssh-keygen", b"\x7fELF\x00-----BEGIN OPENSSH PRIVATE KEY-----\n\x00\x00"),
        E("usr/share/doc/x/README", b"A key starts with -----BEGIN PRIVATE KEY----- and ...\n")],
        set()),
    "gzipped-certificate": (lambda k: [E("usr/share/doc/x/cert.pem.gz", gzip.compress(k["cert.pem"]))],
                            set()),
    # a second name of a file is checked as that file, under its own name
    "hardlink-to-a-key": (lambda k: [E("opt/app/key", k["rsa.pem"]),
                                     E("etc/ssl/private/leak.pem", hard="opt/app/key")],
                          {KEY, ("private-key", "/etc/ssl/private/leak.pem")}),
    "hardlink-as-machine-id": (lambda k: [E("opt/id", ID), E("etc/machine-id", hard="./opt/id")],
                               {("machine-id", "/etc/machine-id")}),
    "hardlink-to-a-symlink-as-machine-id": (lambda k: [
        E("opt/id", ID), E("opt/link", sym="/opt/id"), E("etc/machine-id", hard="opt/link")],
        {("machine-id", "/etc/machine-id")}),
    # machine-id reached through symlinks, whatever the tar order
    "machine-id-symlink-before-its-target": (lambda k: [
        E("etc/machine-id", sym="../var/lib/real-id"), E("var/lib/real-id", ID)],
        {("machine-id", "/etc/machine-id")}),
    "machine-id-through-a-symlinked-directory": (lambda k: [
        E("etc/machine-id", sym="/usr/lib/ids/mid"), E("usr/lib/ids", sym="../lib64/ids"),
        E("usr/lib64/ids/mid", ID)], {("machine-id", "/etc/machine-id")}),
    "dbus-machine-id-symlink-to-a-filled-file": (lambda k: [
        E("etc/machine-id", b""), E("var/lib/dbus/machine-id", sym="/opt/id"), E("opt/id", ID)],
        {("machine-id", "/var/lib/dbus/machine-id")}),
    "debian-dbus-symlink-to-an-empty-machine-id": (lambda k: [
        E("etc/machine-id", b""), E("var/lib/dbus/machine-id", sym="/etc/machine-id")], set()),
    "machine-id-symlink-to-run-dangling": (lambda k: [E("etc/machine-id", sym="/run/machine-id")],
                                           set()),
    "machine-id-symlink-loop": (lambda k: [E("etc/machine-id", sym="a"), E("etc/a", sym="machine-id")],
                                set()),
    # names spelt so that a comparison of raw names misses them
    "odd-spellings-of-names": (lambda k: [E("./etc//machine-id", ID),
                                          E("etc/./ssh/ssh_host_ed25519_key", b"k")],
                               {("machine-id", "/etc/machine-id"),
                                ("ssh-host-key", "/etc/ssh/ssh_host_ed25519_key")}),
    "world-writable-second-name-outside-tmp": (lambda k: [
        E("tmp/scratch", b"x", mode=0o666), E("etc/profile.d/z.sh", hard="tmp/scratch")],
        {("world-writable", "/etc/profile.d/z.sh")}),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_hostile_corpus(case: str, keys: Keys, tmp_path: Path, host_sentinels: object) -> None:
    build, expected = CORPUS[case]
    if "pgp" in case and "pgp.asc" not in keys:
        pytest.skip("needs gpg to make an OpenPGP key")
    assert found(write_tarball(tmp_path / "x.tar", build(keys))) == expected


def test_the_self_test_keys_compiled_into_libgnutls_are_not_findings(
        tmp_path: Path, host_sentinels: object) -> None:
    """Every Debian image has libgnutls, whose read-only data holds PEM self-test keys."""
    lib = next(iter(sorted(Path("/usr/lib").glob("*/libgnutls.so.30.*"))), None)
    if lib is None:
        pytest.skip("this host has no libgnutls")
    data = lib.read_bytes()
    assert b"PRIVATE KEY-----\n" in data  # what makes it a real test of the exemption
    assert found(write_tarball(tmp_path / "x.tar", [E("usr/lib/libgnutls.so.30", data)])) == set()


def test_the_host_files_at_any_path(tmp_path: Path, host_sentinels: object) -> None:
    """The build host's resolv.conf and machine-id, copied anywhere in the image."""
    resolv, machine_id = host_state()[1], host_machine_id()
    if not (resolv and resolv_is_host_specific(resolv)) or not machine_id:
        pytest.skip("this host has no resolv.conf of its own or no machine-id")
    tarball = write_tarball(tmp_path / "x.tar", [
        E("opt/backup/resolv.conf", resolv + b"\n"), E("srv/app/node-id", machine_id + b"\n"),
        E("etc/resolv.conf", b"nameserver 192.0.2.1\n")])
    assert found(tarball) == {("resolv-conf", "/opt/backup/resolv.conf"),
                              ("machine-id", "/srv/app/node-id")}


def test_systemd_resolved_stub_file_is_no_host_state() -> None:
    # the one systemd ships in every image: it names no network of the host
    stub = b"nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"
    assert not resolv_is_host_specific(stub)
    assert resolv_is_host_specific(b"nameserver 10.1.2.3\n")
    assert resolv_is_host_specific(stub + b"search corp.example\n")


def test_the_search_is_bounded_where_the_module_says(keys: Keys, tmp_path: Path,
                                                     host_sentinels: object) -> None:
    key = keys["ec.pem"]
    inside = b"x" * (SCAN_BYTES - len(key) - 1) + b"\n" + key
    beyond = b"x" * SCAN_BYTES + b"\n" + key
    tarball = write_tarball(tmp_path / "x.tar", [E("opt/inside", inside), E("opt/beyond", beyond)])
    assert found(tarball) == {("private-key", "/opt/inside")}


def test_hardlinks_need_every_name_allowed(keys: Keys, tmp_path: Path, host_sentinels: object) -> None:
    """Allowing the first name does not let a second name pass, nor the other way round."""
    tarball = write_tarball(tmp_path / "x.tar", [
        E("opt/demo/key.pem", keys["rsa.pem"]), E("etc/ssl/private/leak.pem", hard="opt/demo/key.pem")])
    assert found(tarball, ["private-key:/opt/demo/*"]) == {("private-key", "/etc/ssl/private/leak.pem")}
    assert found(tarball, ["private-key:/etc/ssl/*"]) == {("private-key", "/opt/demo/key.pem")}
    assert found(tarball, ["private-key:/opt/demo/*", "private-key:/etc/ssl/private/*"]) == set()
    r = cli(str(tarball), "--allow", "private-key:/opt/demo/*")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "private-key: /etc/ssl/private/leak.pem (" in r.stdout and "a hardlink to /opt/demo/key.pem" \
        in r.stdout
    assert "allowed: private-key: /opt/demo/key.pem" in r.stdout
    r = cli(str(tarball), "--allow", "private-key:/opt/demo/*", "--allow", "private-key:/etc/ssl/*")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_cli_finds_a_der_key_in_a_zstd_image(keys: Keys, tmp_path: Path,
                                                 host_sentinels: object) -> None:
    plain = write_tarball(tmp_path / "x.tar", [E("etc/ssl/private/site.der", keys["ec.sec1.der"]),
                                               E("etc/ssl/certs/site.der", keys["ec.cert.der"])])
    image = tmp_path / "image.tar.zst"
    image.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    r = cli(str(image))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.splitlines() == [f"{image}: private-key: /etc/ssl/private/site.der "
                                     "(a DER SEC1 EC private key)"]


def test_a_decompression_bomb_stops_at_the_bound(keys: Keys, tmp_path: Path,
                                                 host_sentinels: object) -> None:
    """256 MiB of zeros in a 0.25 MiB gzip file, then a key: the CLI reads INFLATE_MAX of it
    (so the key is not reached) in bounded memory (auditing debian-base takes about 50 MiB)."""
    bomb = tmp_path / "bomb.gz"
    with gzip.GzipFile(bomb, "wb", compresslevel=9, mtime=0) as gz:
        block = bytes(1 << 20)
        for _ in range(256):
            gz.write(block)
        gz.write(keys["rsa.pem"])
    assert bomb.stat().st_size < 1 << 20 and 50 * INFLATE_MAX < 256 << 20
    tarball = write_tarball(tmp_path / "x.tar", [E("usr/share/doc/x/changelog.gz", bomb.read_bytes())])
    start = time.monotonic()
    proc = subprocess.Popen([str(BIN / "nspawnbuild"), "audit", str(tarball)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    assert usage.ru_maxrss < 150 * 1024, f"{usage.ru_maxrss} KiB"  # ru_maxrss is in KiB
    assert time.monotonic() - start < 60


def test_the_packer_feeds_hardlinks_symlinks_and_whole_files(
        keys: Keys, tmp_path: Path, host_sentinels: object) -> None:
    """A real tree packed by the real packer: the build's audit sees what ``audit`` sees."""
    root = tmp_path / "root"
    for rel, data in {"opt/demo/key.pem": b"# demo\n" + keys["rsa.pem"], "var/lib/real-id": ID,
                      "usr/share/doc/x/key.der.gz": gzip.compress(keys["ed25519.p8.der"]),
                      "etc/ssl/certs/site.der": keys["cert.der"]}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "etc/ssl/private").mkdir(parents=True)
    os.link(root / "opt/demo/key.pem", root / "etc/ssl/private/leak.pem")
    (root / "etc/machine-id").symlink_to("../var/lib/real-id")
    auditor = Auditor(machine="box")
    dest = tmp_path / "x.tar.zst"
    pack(root, dest, 1704067200, "zstd", 3, inspect=auditor.add)
    assert auditor.result() == audit_tarball(dest, machine="box")
    assert {(f.check, f.path) for f in auditor.result()} == {
        ("private-key", "/etc/ssl/private/leak.pem"), ("private-key", "/opt/demo/key.pem"),
        ("private-key", "/usr/share/doc/x/key.der.gz"), ("machine-id", "/etc/machine-id")}


# -- the generated settings -------------------------------------------------------------------

def rendered(nspawn: list[tuple[str, str, str]], unit: list[tuple[str, str, str]]) -> tuple[str, str]:
    """The .nspawn file and drop-in the real renderer writes for these settings."""
    common = {"name": "x", "digest": "ab", "version": "9"}
    return (render_nspawn([Setting(*s) for s in nspawn], **common),
            render_dropin([Setting(*s) for s in unit], **common))


NSPAWN, DROPIN = "x.nspawn", "systemd-nspawn@x.service.d/50-nspawnbuild.conf"
RISKY_SETTINGS = [
    ("Files", "Bind", "/", "nspawn-bind"),
    ("Files", "BindReadOnly", "/etc:/mnt/host-etc", "nspawn-bind"),
    ("Files", "Bind", "/var/run/docker.sock", "nspawn-bind"),
    ("Files", "Bind", "/run/user/1000/bus:/run/bus:norbind", "nspawn-bind"),
    ("Files", "Bind", "/home/alice:/home/alice:rbind", "nspawn-bind"),
    ("Files", "BindReadOnly", "/root/.ssh:/keys", "nspawn-bind"),
    ("Files", "Bind", "//etc/./:/x", "nspawn-bind"),
    ("Files", "Bind", "/\\etc:/x", "nspawn-bind"),  # nspawn reads "\e" as "e"
    ("Files", "Overlay", "/etc:/var/tmp/upper:/etc", "nspawn-bind"),
    ("Files", "BindUser", "alice", "nspawn-bind"),
    ("Exec", "Capability", "all", "nspawn-capability"),
    ("Exec", "Capability", "CAP_NET_ADMIN CAP_SYS_ADMIN", "nspawn-capability"),
    ("Exec", "PrivateUsers", "no", "nspawn-private-users"),
    ("Exec", "PrivateUsers", "false", "nspawn-private-users"),
    ("Exec", "PrivateUsers", "0", "nspawn-private-users"),
    ("Exec", "PrivateUsers", "identity", "nspawn-private-users"),
    ("Exec", "PrivateUsers", "0:65536", "nspawn-private-users"),
    ("Service", "DevicePolicy", "auto", "unit-devices"),
    ("Service", "DeviceAllow", "/dev/sda rw", "unit-devices"),
    ("Service", "DeviceAllow", "/dev/nvme0n1p2 rwm", "unit-devices"),
    ("Service", "DeviceAllow", "block-loop rwm", "unit-devices"),
]
SAFE_SETTINGS = [
    ("Files", "Bind", "/srv/data:/data"), ("Files", "BindReadOnly", "/srv/ollama:/var/lib/ollama:idmap"),
    ("Files", "Bind", "/etcetera:/x"), ("Files", "Bind", "+/etc:/mnt/image-etc"),
    ("Files", "Bind", "/dev/nvidia0"), ("Files", "Bind", ":/scratch"),
    ("Exec", "PrivateUsers", "pick"), ("Exec", "PrivateUsers", "524288:65536"),
    ("Exec", "Capability", "CAP_NET_ADMIN"),
    ("Service", "DevicePolicy", "closed"), ("Service", "DeviceAllow", "/dev/nvidia0 rw"),
    ("Service", "DeviceAllow", "char-drm rw"), ("Service", "DeviceAllow", "/dev/mapper/control rw"),
]


@pytest.mark.parametrize("section,key,value,check", RISKY_SETTINGS,
                         ids=[f"{k}={v}" for _, k, v, _ in RISKY_SETTINGS])
def test_risky_settings_are_findings(section: str, key: str, value: str, check: str,
                                     host_sentinels: object) -> None:
    unit = section in ("Service", "Unit")
    setting = [(section, key, value)]
    nspawn, dropin = rendered([] if unit else setting, setting if unit else [])
    result = settings_findings(nspawn, dropin, NSPAWN, DROPIN)
    assert [(f.check, f.path) for f in result] == [(check, f"{DROPIN if unit else NSPAWN}:{key}={value}")]
    assert check in CHECKS  # listed in manifest.json's audit.checks


def test_safe_settings_are_not(host_sentinels: object) -> None:
    nspawn, dropin = rendered([s for s in SAFE_SETTINGS if s[0] != "Service"],
                              [s for s in SAFE_SETTINGS if s[0] == "Service"])
    assert settings_findings(nspawn, dropin, NSPAWN, DROPIN) == []


def test_a_recipe_allows_one_risky_setting_not_another(host_sentinels: object) -> None:
    nspawn, dropin = rendered([("Files", "BindReadOnly", "/etc/ssl/certs:/etc/ssl/certs"),
                               ("Files", "Bind", "/")], [("Service", "DevicePolicy", "auto")])
    failing, allowed = split(settings_findings(nspawn, dropin, NSPAWN, DROPIN),
                             ["nspawn-bind:x.nspawn:BindReadOnly=/etc/ssl/certs:*", "/etc/*"])
    assert [f.path for f in allowed] == ["x.nspawn:BindReadOnly=/etc/ssl/certs:/etc/ssl/certs"]
    assert sorted(f.check for f in failing) == ["nspawn-bind", "unit-devices"]


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (ROOT / "recipes").glob("*.toml")))
def test_the_shipped_recipes_have_no_risky_settings(recipe: str, host_sentinels: object) -> None:
    r = load_recipe(ROOT / "recipes" / f"{recipe}.toml")
    common = {"name": r.name, "digest": "ab", "version": "9"}
    nspawn = render_nspawn(nspawn_settings(r), **common)
    dropin = render_dropin(unit_settings(r), **common)
    assert settings_findings(nspawn, dropin, f"{r.name}.nspawn", "dropin") == []
