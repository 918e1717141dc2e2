"""Hostile artifact directories and tarballs against install, inspect, diff and audit.

Each case crafts an artifact directory by hand (a tiny tar.zst, a .nspawn, the drop-in,
manifest.json, SHA256SUMS), runs the real CLI with ``--root`` in a tmp tree (the real
systemd-import does the import), and says what it expects: a one-line error with the right exit
code, no traceback, nothing written. Decoys stand for what a hostile name or symlink would
reach: the host sentinels (tests/sentinels.py) and a decoy machine beside them
(``host_sentinels.top / install-victims``), each checked unchanged after every case. Tarball
cases run under a 600 MB address-space limit: a 33 KiB file that claims a 1 GiB header must be
refused before it is read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import zstandard

import sentinels
from conftest import BIN, Env

NAME = "nbhostile"
LIMIT = 600 << 20  # address space of each CLI run in the tarball cases
GIB = 1 << 30
DROPIN = "50-nspawnbuild.conf"
OPENSSH = (b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
           b"-----END OPENSSH PRIVATE KEY-----\n")

# -- artifacts made by hand ------------------------------------------------------------------


def _member(name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE,
            link: str = "", fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """One tar member (header and padded data) as bytes; ``data`` None makes a directory."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if data is None and kind == tarfile.REGTYPE else kind
    info.mode = 0o755 if info.type == tarfile.DIRTYPE else 0o644
    info.linkname = link
    info.size = len(data or b"")
    pad = -info.size % tarfile.BLOCKSIZE
    return info.tobuf(format=fmt) + (data or b"") + bytes(pad)


EOF_BLOCKS = bytes(2 * tarfile.BLOCKSIZE)
IMAGE = (_member(".") + _member("./etc") + _member("./etc/os-release", b"ID=nbhostile\n")
         + _member("./usr") + _member("./usr/lib") + _member("./usr/lib/os-release", b"ID=x\n"))


def zstd(chunks: Iterable[bytes]) -> bytes:
    """Compress a stream of chunks (a hostile tarball can be a GiB before compression)."""
    comp = zstandard.ZstdCompressor(level=3).compressobj()
    return b"".join(comp.compress(c) for c in chunks) + comp.flush()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(name: str, tarball: str, size: int) -> dict[str, object]:
    """The manifest fields install, inspect and diff read, as a build writes them."""
    return {"format": 1, "name": name, "description": "hand-made", "recipe_digest": "0" * 64,
            "source_date_epoch": 1704067200, "target_systemd": 252,
            "base": {"distro": "debian", "release": "bookworm", "arch": "amd64"},
            "tool": {"name": "nspawnbuild", "version": "0"},
            "packages": [{"name": "base-files", "version": "12.4", "arch": "amd64",
                          "installed_size_kib": 400}],
            "tree": {"bytes": 18},
            "artifacts": {"tarball": {"file": tarball, "size": size, "compression": "zstd"},
                          "nspawn": {"file": f"{name}.nspawn"},
                          "dropin": {"file": f"systemd-nspawn@{name}.service.d/{DROPIN}"}}}


def write_sums(art: Path, files: Iterable[str]) -> None:
    (art / "SHA256SUMS").write_text("".join(f"{sha256(art / f)}  {f}\n" for f in sorted(files)))


def make_artifact(art: Path, *, name: str = NAME, tarball: bytes | None = None) -> Path:
    """An artifact directory as a build writes it, around ``tarball`` (compressed bytes)."""
    tb = f"{name}.tar.zst"
    art.mkdir(parents=True)
    (art / tb).write_bytes(zstd([IMAGE + EOF_BLOCKS]) if tarball is None else tarball)
    (art / f"{name}.nspawn").write_text("[Exec]\nPrivateUsers=pick\n")
    (art / f"systemd-nspawn@{name}.service.d").mkdir()
    (art / f"systemd-nspawn@{name}.service.d" / DROPIN).write_text("[Service]\nTasksMax=64\n")
    (art / "manifest.json").write_text(json.dumps(manifest(name, tb, (art / tb).stat().st_size)))
    write_sums(art, [tb, f"{name}.nspawn", f"systemd-nspawn@{name}.service.d/{DROPIN}",
                     "manifest.json"])
    return art


def tree_state(top: Path) -> dict[str, tuple[str, ...]]:
    """Everything under ``top`` (symlinks not followed): kind, mode and content or target."""
    if not os.path.lexists(top):
        return {}
    state: dict[str, tuple[str, ...]] = {}
    paths = [top] + [Path(d) / n for d, dirs, files in os.walk(top) for n in dirs + files]
    for p in paths:
        st = p.lstat()
        rel = str(p.relative_to(top))
        if p.is_symlink():
            state[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            state[rel] = ("dir", oct(st.st_mode))
        else:
            state[rel] = ("file", oct(st.st_mode), sha256(p))
    return state


# -- decoys and running the CLI ------------------------------------------------------------


@pytest.fixture(scope="module")
def _victims(_sentinels: sentinels.Sentinels) -> Iterator[Path]:
    """A decoy machine beside the host sentinels: the image directory, .nspawn and drop-in a
    name like ../../x or a symlinked ROOT/var/lib/machines would make install replace. Made
    once per module, before any test snapshots the sentinels."""
    top = _sentinels.top / "install-victims"
    (top / "victim").mkdir(parents=True)
    (top / "victim" / "keep").write_text("the host's own machine\n")
    (top / "victim.nspawn").write_text("[Exec]\nBoot=yes\n")
    (top / "systemd-nspawn@victim.service.d").mkdir()
    (top / "systemd-nspawn@victim.service.d" / DROPIN).write_text("[Service]\n")
    yield top
    subprocess.run(["rm", "-rf", "--one-file-system", str(top)], check=True)


@pytest.fixture
def victims(_victims: Path, host_sentinels: sentinels.Sentinels) -> Iterator[Path]:
    """The decoy machine, checked unchanged after the test (and the host sentinels with it)."""
    before = tree_state(_victims)
    yield _victims
    assert tree_state(_victims) == before, "a hostile case changed the decoy machine"


def clean_error(r: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """Exit ``code``, one ``error:`` line on stderr holding every fragment, no traceback."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def limited(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI under a 600 MB address-space limit (what a 1 GiB header cannot fit in)."""
    return subprocess.run(["prlimit", f"--as={LIMIT}", "--", str(BIN / "nspawnbuild"), *args],
                          cwd=env.tmp, env=env.environ(), capture_output=True, text=True,
                          timeout=600)


def install(env: Env, art: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return env.nspawnbuild("install", str(art), "--root", str(root), *extra)


# -- the good case: the corpus is only hostile if this one works -----------------------------


def test_hand_made_artifact_installs_inspects_and_audits_under_the_limit(
        env: Env, tmp_path: Path, victims: Path) -> None:
    art = make_artifact(tmp_path / "art")
    (tmp_path / "real-root").mkdir()
    (tmp_path / "root").symlink_to(tmp_path / "real-root")  # a symlinked --root is the user's choice
    r = limited(env, "install", str(art), "--root", str(tmp_path / "root"), "--enable")
    assert r.returncode == 0, r.stdout + r.stderr
    root = tmp_path / "real-root"
    assert (root / "var/lib/machines" / NAME / "etc/os-release").read_text() == "ID=nbhostile\n"
    assert (root / "etc/systemd/nspawn" / f"{NAME}.nspawn").read_text() == \
        (art / f"{NAME}.nspawn").read_text()
    assert (root / "etc/systemd/system" / f"systemd-nspawn@{NAME}.service.d" / DROPIN).is_file()
    assert (root / "etc/systemd/system/machines.target.wants" /
            f"systemd-nspawn@{NAME}.service").is_symlink()
    for verb in ("inspect", "audit"):
        r = limited(env, verb, str(art))
        assert r.returncode == 0 and not r.stderr, (verb, r.stdout, r.stderr)
    r = limited(env, "diff", str(art), str(art), "--exit-code")
    assert r.returncode == 0, r.stdout + r.stderr


# -- install: names ------------------------------------------------------------------------


def _to_victim(root: Path, victims: Path) -> str:
    """The relative name that leads from ROOT/var/lib/machines to the decoy machine."""
    return os.path.relpath(victims / "victim", root / "var/lib/machines")


BAD_NAMES = {"parent": "../../x", "to-victim": None, "empty": "", "leading-dash": "-x",
             "leading-dot": ".x", "underscore": "a_b", "dot-dot": "a..b", "too-long": "x" * 65,
             "slash": "web/1", "newline": "web1\n", "trailing-dash": "web-"}


@pytest.mark.parametrize("case", BAD_NAMES)
def test_install_refuses_a_bad_name_before_touching_anything(
        env: Env, tmp_path: Path, victims: Path, case: str) -> None:
    root = tmp_path / "root"
    (root / "var/lib/machines").mkdir(parents=True)  # as on a host: ../ can be resolved from it
    before = tree_state(root)
    name = BAD_NAMES[case] if BAD_NAMES[case] is not None else _to_victim(root, victims)
    art = make_artifact(tmp_path / "art")
    r = install(env, art, root, f"--name={name}", "--force")  # --force: the old rm -rf
    clean_error(r, 2, "error: --name: ", "is not a valid machine name", "1 to 64 letters")
    assert tree_state(root) == before


@pytest.mark.parametrize("case", ["parent", "to-victim"])
def test_install_refuses_a_bad_name_in_the_manifest(
        env: Env, tmp_path: Path, victims: Path, case: str) -> None:
    root = tmp_path / "root"
    (root / "var/lib/machines").mkdir(parents=True)
    before = tree_state(root)
    name = "../../x" if case == "parent" else _to_victim(root, victims)
    art = make_artifact(tmp_path / "art")
    data = json.loads((art / "manifest.json").read_text())
    data["name"] = name
    (art / "manifest.json").write_text(json.dumps(data))
    write_sums(art, [f"{NAME}.tar.zst", f"{NAME}.nspawn",
                     f"systemd-nspawn@{NAME}.service.d/{DROPIN}", "manifest.json"])
    r = install(env, art, root, "--force")
    clean_error(r, 2, f"{art}/manifest.json: key 'name': ", "is not a valid machine name")
    assert tree_state(root) == before
    clean_error(env.nspawnbuild("inspect", str(art)), 2, "is not a valid machine name")


# -- install: symlinks on the way ----------------------------------------------------------


SYMLINKS = {  # path under ROOT -> what in the decoy dir it points to
    "machines-dir": ("var/lib/machines", "."),
    "image": ("var/lib/machines/victim", "victim"),
    "nspawn-dir": ("etc/systemd/nspawn", "."),
    "nspawn-file": ("etc/systemd/nspawn/victim.nspawn", "victim.nspawn"),
    "dropin-dir": ("etc/systemd/system/systemd-nspawn@victim.service.d",
                   "systemd-nspawn@victim.service.d"),
    "etc": ("etc", "."),
}


@pytest.mark.parametrize("case", SYMLINKS)
def test_install_refuses_a_destination_that_a_symlink_takes_outside(
        env: Env, tmp_path: Path, victims: Path, case: str) -> None:
    root = tmp_path / "root"
    where, target = SYMLINKS[case]
    (root / where).parent.mkdir(parents=True)
    (root / where).symlink_to(victims / target)
    before = tree_state(root)
    art = make_artifact(tmp_path / "art")
    r = install(env, art, root, "--name", "victim", "--force", "--enable")
    clean_error(r, 2, "leads to", f"outside {root}/", "replace the symlink")
    assert tree_state(root) == before


def test_install_refuses_an_artifact_file_that_is_a_symlink_outside(
        env: Env, tmp_path: Path, victims: Path) -> None:
    art = make_artifact(tmp_path / "art")
    (art / f"{NAME}.nspawn").unlink()
    (art / f"{NAME}.nspawn").symlink_to(victims / "victim.nspawn")  # the host's, sums matching
    write_sums(art, [f"{NAME}.tar.zst", f"{NAME}.nspawn",
                     f"systemd-nspawn@{NAME}.service.d/{DROPIN}", "manifest.json"])
    clean_error(install(env, art, tmp_path / "root"), 2, f"{NAME}.nspawn: leads to")
    assert not os.path.lexists(tmp_path / "root")
    clean_error(env.nspawnbuild("inspect", str(art)), 2, "leads to", "outside")


# -- install: SHA256SUMS and manifest.json -------------------------------------------------

TB, NS, DI = f"{NAME}.tar.zst", f"{NAME}.nspawn", f"systemd-nspawn@{NAME}.service.d/{DROPIN}"


def _sums(*names: str) -> Callable[[Path], None]:
    return lambda art: write_sums(art, names)


def _text(rel: str, text: str) -> Callable[[Path], None]:
    return lambda art: (art / rel).write_text(text)


def _lines(*extra: str) -> Callable[[Path], None]:
    def edit(art: Path) -> None:
        with open(art / "SHA256SUMS", "a") as fh:
            fh.write("".join(f"{x}\n" for x in extra))
    return edit


def _manifest(edit: Callable[[dict], object] | None = None, raw: str | None = None,
              ) -> Callable[[Path], None]:
    """Change manifest.json (a dict edit or raw text), then SHA256SUMS to match it."""
    def change(art: Path) -> None:
        data = json.loads((art / "manifest.json").read_text())
        if edit:
            edit(data)
        (art / "manifest.json").write_text(raw if raw is not None else json.dumps(data))
        write_sums(art, [TB, NS, DI, "manifest.json"])
    return change


def _delete(*path: str) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        for key in path[:-1]:
            data = data[key]
        del data[path[-1]]
    return edit


def _set(value: object, *path: str) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value
    return edit


D = "0" * 64
#: case -> (how the artifact directory is spoiled, exit code, fragments of the error line)
BAD_ARTIFACTS: dict[str, tuple[Callable[[Path], None], int, tuple[str, ...]]] = {
    "sums-empty": (_text("SHA256SUMS", ""), 2, ("SHA256SUMS: empty",)),
    "sums-blank-lines": (_text("SHA256SUMS", "\n\n"), 2, ("SHA256SUMS:1: bad line",)),
    "sums-garbage": (_text("SHA256SUMS", "hello\n"), 2, ("SHA256SUMS:1: bad line 'hello'",)),
    "sums-short-digest": (_lines(f"abc  {TB}"), 2, ("SHA256SUMS:5: bad line",)),
    "sums-duplicate": (_lines(f"{D}  {TB}"), 2, ("SHA256SUMS:5: bad line",)),
    "sums-absolute": (_lines(f"{D}  /etc/shadow"), 2, ("SHA256SUMS:5: bad line",)),
    "sums-parent": (_lines(f"{D}  ../../etc/shadow"), 2, ("SHA256SUMS:5: bad line",)),
    "sums-binary": (lambda art: (art / "SHA256SUMS").write_bytes(b"\xff\xfe\n"), 2,
                    ("SHA256SUMS: cannot read it (not UTF-8 text)",)),
    "sums-missing": (lambda art: (art / "SHA256SUMS").unlink(), 2, ("no SHA256SUMS here",)),
    "sums-lack-tarball": (_sums(NS, DI, "manifest.json"), 2, (f"does not list {TB}",)),
    "sums-lack-nspawn": (_sums(TB, DI, "manifest.json"), 2, (f"does not list {NS}",)),
    "sums-lack-dropin": (_sums(TB, NS, "manifest.json"), 2, (f"does not list {DI}",)),
    "sums-lack-manifest": (_sums(TB, NS, DI), 2, ("does not list manifest.json",)),
    "tarball-changed": (lambda art: (art / TB).write_bytes(zstd([EOF_BLOCKS])), 1,
                        (f"{TB} does not match SHA256SUMS",)),
    "manifest-changed": (_text("manifest.json", "{}"), 1, ("manifest.json does not match",)),
    "nspawn-missing": (lambda art: (art / NS).unlink(), 1, ("the artifacts are incomplete",)),
    "manifest-not-json": (_manifest(raw="{'name': 1"), 2, ("manifest.json: not valid JSON",)),
    "manifest-nested": (_manifest(raw="[" * 100_000 + "]" * 100_000), 2,
                        ("manifest.json: not valid JSON (nested too deeply)",)),
    "manifest-array": (_manifest(raw="[]"), 2, ("manifest.json: [] is not of type 'object'",)),
    "manifest-no-name": (_manifest(_delete("name")), 2, ("'name' is a required property",)),
    "manifest-no-tarball": (_manifest(_delete("artifacts", "tarball")), 2,
                            ("key 'artifacts': 'tarball' is a required property",)),
    "manifest-name-number": (_manifest(_set(7, "name")), 2,
                             ("key 'name': 7 is not of type 'string'",)),
    "manifest-absolute-file": (_manifest(_set("/etc/shadow", "artifacts", "nspawn", "file")), 2,
                               ("key 'artifacts.nspawn.file': '/etc/shadow' is not a path "
                                "inside the artifact directory",)),
    "manifest-parent-file": (_manifest(_set("../x.tar.zst", "artifacts", "tarball", "file")), 2,
                             ("'../x.tar.zst' is not a path inside",)),
}


@pytest.mark.parametrize("case", BAD_ARTIFACTS)
def test_install_refuses_a_bad_artifact_directory(
        env: Env, tmp_path: Path, victims: Path, case: str) -> None:
    spoil, code, fragments = BAD_ARTIFACTS[case]
    art = make_artifact(tmp_path / "art")
    spoil(art)
    r = install(env, art, tmp_path / "root", "--force", "--enable")
    clean_error(r, code, *fragments)
    assert not os.path.lexists(tmp_path / "root")


# -- hostile tarballs: the bounded reader ---------------------------------------------------


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _zeros(n: int) -> Iterator[bytes]:
    chunk = bytes(1 << 20)
    for _ in range(n >> 20):
        yield chunk


def _pax_record(key: str, value: str) -> bytes:
    """One ``LEN KEY=VALUE\\n`` record; LEN counts its own digits."""
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % tarfile.BLOCKSIZE)


def _gnu_sparse(blocks: int) -> Iterator[bytes]:
    """An old GNU sparse member whose map goes on for ``blocks`` extension blocks (tarfile
    keeps every map entry in a list before the member is returned)."""
    info = tarfile.TarInfo("./sparse")
    head = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    head[156:157] = tarfile.GNUTYPE_SPARSE
    head[386:410] = b"00000000001\x00" * 2
    head[482] = 1  # extended: a map block follows
    head[148:155] = b"%06o\x00" % tarfile.calc_chksums(bytes(head))[0]
    yield bytes(head)
    block = b"00000000001\x00" * 42 + b"\x01" + bytes(7)
    many = block * 2048  # 1 MiB of map
    for _ in range(blocks // 2048):
        yield many
    yield block[:504] + bytes(8)


#: kind -> (the tarball's uncompressed chunks, what the error line says)
HOSTILE: dict[str, tuple[Callable[[], Iterable[bytes]], str]] = {
    "pax-1gib": (lambda: [_header("./PaxHeaders/x", tarfile.XHDTYPE, GIB), *_zeros(GIB), IMAGE,
                          EOF_BLOCKS], "a PAX extended header of 1073741824 bytes"),
    "longname-1gib": (lambda: [_header("././@LongLink", tarfile.GNUTYPE_LONGNAME, GIB),
                               *_zeros(GIB), IMAGE, EOF_BLOCKS],
                      "a GNU long name header of 1073741824 bytes"),
    "longlink-1gib": (lambda: [_header("././@LongLink", tarfile.GNUTYPE_LONGLINK, GIB),
                               *_zeros(GIB), IMAGE, EOF_BLOCKS],
                      "a GNU long link header of 1073741824 bytes"),
    "pax-chain": (lambda: [*(_header("./PaxHeaders/x", tarfile.XHDTYPE, 10)
                             + _padded(_pax_record("path", "a")) for _ in range(2000)),
                           IMAGE, EOF_BLOCKS], "more than 8 extended headers in a row"),
    "pax-global-1gib": (lambda: [*(_header("./GlobalHead", tarfile.XGLTYPE, len(rec))
                                   + _padded(rec) for rec in
                                   (_pax_record(f"k{i}", "v" * ((1 << 20) - 64))
                                    for i in range(1100))), IMAGE, EOF_BLOCKS],
                        "PAX global headers of more than 1048576 bytes together"),
    "sparse-map-1gib": (lambda: [IMAGE, *_gnu_sparse(GIB // 512), EOF_BLOCKS],
                        "the headers of one member take more than 4194304 bytes"),
    "sparse-cut-short": (lambda: [IMAGE, next(iter(_gnu_sparse(0)))],
                         "damaged header (cut short"),
    "name-past-path-max": (lambda: [IMAGE, _member("./" + "/".join(["d" * 200] * 25), b"x"),
                                    EOF_BLOCKS], "a member name of more than 4096 bytes"),
    "garbage-mid-archive": (lambda: [IMAGE, b"\xff" * 512, _member("./etc/hidden", b"x"),
                                     EOF_BLOCKS], "damaged header (bad checksum"),
    "not-a-tarball": (lambda: [b"\x7fELF" + b"\x01" * 4092], "not a tar archive"),
    "cut-off": (lambda: [IMAGE[:-700]], "cannot read it as a tarball: "),
}


@functools.cache
def hostile_tarball(kind: str) -> bytes:
    return zstd(HOSTILE[kind][0]())


def test_the_hostile_pax_tarball_is_small() -> None:
    """The 1 GiB header fits in a 33 KiB download: no quota on the download protects a reader."""
    assert len(hostile_tarball("pax-1gib")) < 64 << 10


@pytest.mark.parametrize("verb", ["inspect", "audit", "diff", "install"])
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_tarball_is_a_clean_error_in_bounded_memory(
        env: Env, tmp_path: Path, victims: Path, kind: str, verb: str) -> None:
    art = make_artifact(tmp_path / "art", tarball=hostile_tarball(kind))
    tb = art / f"{NAME}.tar.zst"
    root = tmp_path / "root"
    args = {"inspect": ["inspect", str(art)], "audit": ["audit", str(art)],
            "diff": ["diff", str(make_artifact(tmp_path / "good")), str(art)],
            "install": ["install", str(art), "--root", str(root), "--enable"]}[verb]
    r = limited(env, *args)
    clean_error(r, 2, f"error: {tb}: cannot read it as a tarball", HOSTILE[kind][1])
    assert not os.path.lexists(root)


# -- tarballs that read fine, with members that must not go where they say -------------------


def test_members_after_the_end_of_archive_marker_are_seen_as_systemd_import_sees_them(
        env: Env, tmp_path: Path, victims: Path) -> None:
    """systemd-import runs GNU tar with --ignore-zeros: what follows the end-of-archive zero
    blocks is extracted, so the audit must read it too (tarfile alone stops there)."""
    hidden = IMAGE + EOF_BLOCKS + _member("./root") + _member("./root/id_ed25519", OPENSSH)
    art = make_artifact(tmp_path / "art", tarball=zstd([hidden, EOF_BLOCKS]))
    r = limited(env, "audit", str(art))
    assert r.returncode == 1 and "private-key: /root/id_ed25519" in r.stdout, r.stdout + r.stderr
    r = limited(env, "inspect", str(art))
    assert r.returncode == 0 and "\n  /root " in r.stdout, r.stdout + r.stderr
    r = install(env, art, tmp_path / "root")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "root/var/lib/machines" / NAME / "root/id_ed25519").read_bytes() == OPENSSH


ESCAPES = {
    "parent": _member("../../../escaped", b"x"),
    "absolute": _member("/etc/escaped", b"x"),
    "hardlink-parent": _member("./etc/pw", kind=tarfile.LNKTYPE, link="../../../etc/passwd"),
}


@pytest.mark.parametrize("case", ESCAPES)
def test_install_refuses_a_member_that_leaves_the_image(
        env: Env, tmp_path: Path, victims: Path, case: str) -> None:
    art = make_artifact(tmp_path / "art", tarball=zstd([IMAGE, ESCAPES[case], EOF_BLOCKS]))
    r = install(env, art, tmp_path / "root", "--force")
    clean_error(r, 2, "cannot read it as a tarball: member", "leaves the image")
    assert not os.path.lexists(tmp_path / "root")


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_a_file_written_through_a_symlink_member_stays_in_the_image(
        env: Env, tmp_path: Path, victims: Path, target: str) -> None:
    """``etc -> <decoy>`` then ``etc/pwned``: GNU tar (run by systemd-import) makes the link a
    placeholder until the end, so the file cannot land in the decoy; the import fails."""
    root = tmp_path / "root"
    link = str(victims) if target == "absolute" else os.path.relpath(
        victims, root / "var/lib/machines" / NAME)
    tarball = zstd([_member("."), _member("./etc", kind=tarfile.SYMTYPE, link=link),
                    _member("./etc/pwned", b"pwned\n"), EOF_BLOCKS])
    art = make_artifact(tmp_path / "art", tarball=tarball)
    r = install(env, art, root)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: systemd-import failed:\n"), r.stderr  # and what tar said
    assert "./etc/pwned: Cannot open: Not a directory" in r.stderr, r.stderr
    assert not (root / "var/lib/machines" / NAME).exists()
    assert not (victims / "pwned").exists()
