"""The deterministic packer: same tree, same bytes; what the archive keeps and drops; and that
GNU tar and the real systemd-import (systemd 252) read it back with links and capabilities.

These tests build small trees as root (owners, device nodes, file capabilities).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
import zstandard

import nspawnbuild.pack as pack_mod
from nspawnbuild.digests import sha256_file
from nspawnbuild.pack import SUFFIXES, pack, walk_sorted

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: owners, mknod, setcap")

EPOCH = 1_700_000_000
NEWER = EPOCH + 86_400 * 400
OLDER = EPOCH - 86_400 * 400
LEVELS = {"zstd": 3, "xz": 6, "gzip": 9, "none": 0}
SYSTEMD_IMPORT = "/lib/systemd/systemd-import"

USER_XATTR = b"\xff\x00\x80binary\n"
CAPS = {"usr/bin/ping": "cap_net_raw+ep",
        # cap_setuid is bit 7: its byte 0x80 is not UTF-8, the case tarfile marks hdrcharset=BINARY
        "usr/bin/newuidmap": "cap_setuid,cap_net_raw+ep"}


# -- helpers ----------------------------------------------------------------------------------

def build_tree(root: Path, *, mtime: int = NEWER, reverse: bool = False, special: bool = True,
               caps: bool = True) -> Path:
    """A small image tree with every kind of entry. Modes are set explicitly (umask-proof);
    ``reverse`` creates entries in the opposite order (a different directory order on disk)."""
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    dirs = {"etc": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/lib": 0o755,
            "usr/lib/deep": 0o755, "var": 0o755, "var/empty": 0o700, "run": 0o755, "dev": 0o755,
            "data": 0o750}
    files = {"etc/hostname": (b"image\n", 0o644), "etc/shadow": (b"root:*:1::::::\n", 0o640),
             "etc/os-release": (b"ID=test\n", 0o644), "usr/bin/a": (b"hardlinked\n", 0o755),
             "usr/bin/sudo": (b"setuid\n", 0o4755), "data/owned": (b"owned\n", 0o600),
             "data/zeta": (b"z\n", 0o644), "data/Alpha": (b"A\n", 0o644),
             "data/caf\u00e9": (b"utf-8 name\n", 0o644), "usr/lib/deep/x": (b"x\n", 0o644)}
    for d in sorted(dirs, reverse=reverse):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in sorted(files, reverse=reverse):
        data, mode = files[f]
        (root / f).write_bytes(data)
        os.chmod(root / f, mode)
    for d, mode in dirs.items():
        os.chmod(root / d, mode)
    os.link(root / "usr/bin/a", root / "usr/bin/b")
    os.chown(root / "data/owned", 1234, 5678)
    os.chown(root / "etc/shadow", 0, 42)
    os.symlink("/etc/shadow", root / "etc/abs-link")
    os.symlink("../../x", root / "usr/lib/rel-link")
    os.mkfifo(root / "run/fifo", 0o600)
    os.chmod(root / "run/fifo", 0o600)
    os.setxattr(root / "etc/hostname", "user.test", USER_XATTR)
    if caps:
        for rel, cap in CAPS.items():
            shutil.copyfile("/bin/true", root / rel)
            os.chmod(root / rel, 0o755)
            subprocess.run(["setcap", cap, str(root / rel)], check=True)
    if special:
        os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(str(root / "run/sock"))
        finally:
            sock.close()
    set_mtimes(root, mtime)
    return root


def set_mtimes(root: Path, mtime: int) -> None:
    paths = [root] + [Path(d) / n for d, ds, fs in os.walk(root) for n in ds + fs]
    for p in sorted(paths, key=lambda p: len(p.parts), reverse=True):  # children before parents
        os.utime(p, (mtime, mtime), follow_symlinks=False)


def expected_names(root: Path) -> list[str]:
    """Depth-first, siblings in byte order, computed independently of walk_sorted."""
    out = ["./"]

    def rec(d: Path, rel: str) -> None:
        for name in sorted(os.listdir(os.fsencode(d))):
            p = d / os.fsdecode(name)
            full = f"{rel}/{os.fsdecode(name)}"
            if p.is_dir() and not p.is_symlink():
                out.append(full + "/")
                rec(p, full)
            else:
                out.append(full)
    rec(root, ".")
    return out


def decompress(path: Path, compression: str) -> bytes:
    data = path.read_bytes()
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    if compression == "xz":
        return lzma.decompress(data)
    if compression == "gzip":
        return gzip.decompress(data)
    return data


def open_tar(data: bytes) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8",
                        errors="surrogateescape")


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with open_tar(data) as tar:
        return {m.name: m for m in tar.getmembers()}


def raw_name(name: str) -> str:
    """tarfile strips a trailing slash from directory names when reading."""
    return name.rstrip("/") if name != "./" else "."


def do_pack(tree: Path, dest_dir: Path, compression: str = "none", **kw) -> tuple[Path, object]:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"image{SUFFIXES[compression]}"
    kw.setdefault("level", LEVELS[compression])
    result = pack(tree, dest, EPOCH, compression, **kw)
    return dest, result


# -- determinism ------------------------------------------------------------------------------

def test_same_tree_twice_same_bytes(tmp_path):
    tree = build_tree(tmp_path / "tree")
    a, ra = do_pack(tree, tmp_path / "a", "zstd", threads=2)
    b, rb = do_pack(tree, tmp_path / "b", "zstd", threads=2)
    assert a.read_bytes() == b.read_bytes()
    assert ra.as_dict() == rb.as_dict()
    tar = decompress(a, "zstd")
    assert hashlib.sha256(tar).hexdigest() == ra.tar_sha256 and len(tar) == ra.tar_size
    assert sha256_file(a) == ra.sha256 and a.stat().st_size == ra.size


def test_copy_elsewhere_other_umask_newer_mtimes_same_bytes(tmp_path):
    tree = build_tree(tmp_path / "tree", mtime=EPOCH + 10)
    old = os.umask(0o077)
    try:
        copy = tmp_path / "somewhere" / "else" / "rootfs"
        copy.parent.mkdir(parents=True)
        subprocess.run(["cp", "-a", "--", str(tree), str(copy)], check=True)
        set_mtimes(copy, int(time.time()) + 3600)
        rebuilt = build_tree(tmp_path / "rebuilt-in-reverse-order", mtime=NEWER, reverse=True)
        c, rc = do_pack(copy, tmp_path / "c", "zstd", threads=2)
        r, rr = do_pack(rebuilt, tmp_path / "r", "zstd", threads=2)
    finally:
        os.umask(old)
    a, ra = do_pack(tree, tmp_path / "a", "zstd", threads=2)
    assert ra.tar_sha256 == rc.tar_sha256 == rr.tar_sha256
    assert a.read_bytes() == c.read_bytes() == r.read_bytes()


def test_zstd_threads_do_not_change_bytes(tmp_path):
    tree = build_tree(tmp_path / "tree", special=False)
    (tree / "data/big").write_bytes(os.urandom(1 << 20) * 6 + bytes(range(256)) * 40000)
    outs = {t: do_pack(tree, tmp_path / f"t{t}", "zstd", threads=t, level=12)[0].read_bytes()
            for t in (1, 4)}
    assert outs[1] == outs[4]


def test_walk_sorted_is_byte_order_depth_first(tmp_path):
    tree = build_tree(tmp_path / "tree", special=False, caps=False)
    names = [name for name, _ in walk_sorted(tree)]
    assert ["./"] + [n + "/" if (tree / n).is_dir() and not (tree / n).is_symlink() else n
                     for n in names] == expected_names(tree)
    assert names.index("./data/Alpha") < names.index("./data/caf\u00e9") < names.index("./data/zeta")


# -- what an entry looks like -----------------------------------------------------------------

def test_mtimes_clamped_owners_numeric_names_relative(tmp_path):
    tree = build_tree(tmp_path / "tree")
    os.utime(tree / "etc/hostname", (OLDER, OLDER))
    os.utime(tree / "etc/abs-link", (OLDER + 7, OLDER + 7), follow_symlinks=False)
    dest, result = do_pack(tree, tmp_path / "out")
    data = dest.read_bytes()
    ms = members(data)
    with open_tar(data) as tar:
        order = [m.name for m in tar.getmembers()]
    assert order == [raw_name(n) for n in expected_names(tree) if n not in ("./dev/null", "./run/sock")]

    assert ms["./etc/hostname"].mtime == OLDER
    assert ms["./etc/abs-link"].mtime == OLDER + 7
    for name, m in ms.items():
        if name not in ("./etc/hostname", "./etc/abs-link"):
            assert m.mtime == EPOCH, name
        assert m.uname == "" and m.gname == "", name
        assert name.startswith("./") or name == ".", name
        assert not name.startswith("/") and ".." not in name.split("/"), name
    assert (ms["./data/owned"].uid, ms["./data/owned"].gid) == (1234, 5678)
    assert (ms["./etc/shadow"].uid, ms["./etc/shadow"].gid) == (0, 42)
    assert ms["./usr/bin/sudo"].mode == 0o4755
    assert ms["./var/empty"].mode == 0o700 and ms["./var/empty"].isdir()
    assert ms["."].isdir() and ms["."].mode == 0o755
    # the header's own name fields are empty, not "root"
    assert b"root\0" not in data
    assert result.counts["files"] == len([m for m in ms.values() if m.isreg()])


def test_links_fifos_kept_devices_and_sockets_dropped(tmp_path):
    tree = build_tree(tmp_path / "tree")
    dest, result = do_pack(tree, tmp_path / "out")
    ms = members(dest.read_bytes())
    assert ms["./usr/bin/a"].isreg() and ms["./usr/bin/a"].size == len(b"hardlinked\n")
    assert ms["./usr/bin/b"].type == tarfile.LNKTYPE
    assert ms["./usr/bin/b"].linkname == "./usr/bin/a"
    assert ms["./etc/abs-link"].issym() and ms["./etc/abs-link"].linkname == "/etc/shadow"
    assert ms["./usr/lib/rel-link"].issym() and ms["./usr/lib/rel-link"].linkname == "../../x"
    assert ms["./run/fifo"].isfifo() and ms["./run/fifo"].mode == 0o600
    assert "./dev/null" not in ms and "./run/sock" not in ms
    assert "./dev" in ms
    assert result.dropped == ["./dev/null", "./run/sock"]
    assert result.counts == {"dirs": 10, "files": 12, "hardlinks": 1, "symlinks": 2, "fifos": 1}


def test_xattrs_are_pax_records_binary_exact(tmp_path):
    tree = build_tree(tmp_path / "tree", special=False)
    dest, _ = do_pack(tree, tmp_path / "out")
    data = dest.read_bytes()
    # no hdrcharset=BINARY record: GNU tar does not know it and warns on every import
    assert b"hdrcharset" not in data
    ms = members(data)
    user = ms["./etc/hostname"].pax_headers["SCHILY.xattr.user.test"]
    assert user.encode("utf-8", "surrogateescape") == USER_XATTR
    for rel in CAPS:
        value = ms["./" + rel].pax_headers["SCHILY.xattr.security.capability"]
        assert value.encode("utf-8", "surrogateescape") == os.getxattr(tree / rel,
                                                                        "security.capability")
    # the record itself holds the raw bytes
    raw_cap = os.getxattr(tree / "usr/bin/newuidmap", "security.capability")
    assert b" SCHILY.xattr.security.capability=" + raw_cap + b"\n" in data
    assert b" SCHILY.xattr.user.test=" + USER_XATTR + b"\n" in data


def test_gnu_tar_restores_capabilities_without_warnings(tmp_path):
    tree = build_tree(tmp_path / "tree", special=False)
    dest, _ = do_pack(tree, tmp_path / "out")
    out = tmp_path / "extracted"
    out.mkdir()
    proc = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf",
                           str(dest), "-C", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for rel, cap in CAPS.items():
        assert os.getxattr(out / rel, "security.capability") == os.getxattr(
            tree / rel, "security.capability")
        got = subprocess.run(["getcap", str(out / rel)], capture_output=True, text=True,
                             check=True).stdout
        for name in cap.removesuffix("+ep").split(","):
            assert name in got
        assert "=ep" in got
    assert os.getxattr(out / "etc/hostname", "user.test") == USER_XATTR
    assert (out / "data/owned").stat().st_uid == 1234
    assert (out / "usr/bin/a").stat().st_ino == (out / "usr/bin/b").stat().st_ino


# -- compressions -----------------------------------------------------------------------------

@pytest.mark.parametrize("compression", sorted(SUFFIXES))
def test_every_compression_lists_completely(tmp_path, compression):
    tree = build_tree(tmp_path / "tree")
    dest, result = do_pack(tree, tmp_path / "out", compression)
    assert dest.name.endswith(SUFFIXES[compression])
    tar = decompress(dest, compression)
    assert hashlib.sha256(tar).hexdigest() == result.tar_sha256
    assert sha256_file(dest) == result.sha256 and dest.stat().st_size == result.size
    if compression == "none":
        assert result.sha256 == result.tar_sha256
    if compression == "zstd":
        proc = subprocess.run(f"zstd -dc '{dest}' | tar -tf -", shell=True, capture_output=True,
                              text=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    else:
        proc = subprocess.run(["tar", "-tf", str(dest)], capture_output=True, text=True,
                              env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    listed = proc.stdout.splitlines()
    with open_tar(tar) as t:
        expected = [m.name + ("/" if m.isdir() else "") for m in t.getmembers()]
    expected[0] = "./"
    assert listed == expected


def test_gzip_is_deterministic(tmp_path):
    tree = build_tree(tmp_path / "tree", special=False)
    first, _ = do_pack(tree, tmp_path / "one", "gzip")
    time.sleep(1.1)
    second = tmp_path / "two" / "other-name.tar.gz"
    second.parent.mkdir()
    pack(tree, second, EPOCH, "gzip", 9)
    header = first.read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08"
    assert header[3] & 0x08 == 0, "no file name in the gzip header"
    assert header[4:8] == b"\0\0\0\0", "gzip mtime is 0"
    assert first.read_bytes() == second.read_bytes()


# -- systemd-import ---------------------------------------------------------------------------

def check_imported(image: Path, tree: Path) -> None:
    assert (image / "etc/hostname").read_bytes() == b"image\n"
    assert (image / "data/owned").stat().st_uid == 1234
    assert os.readlink(image / "etc/abs-link") == "/etc/shadow"
    assert os.readlink(image / "usr/lib/rel-link") == "../../x"
    assert (image / "usr/bin/a").stat().st_ino == (image / "usr/bin/b").stat().st_ino
    assert stat.S_ISFIFO((image / "run/fifo").lstat().st_mode)
    assert not (image / "dev/null").exists()
    for rel in CAPS:
        assert os.getxattr(image / rel, "security.capability") == os.getxattr(
            tree / rel, "security.capability")
    got = subprocess.run(["getcap", str(image / "usr/bin/ping")], capture_output=True, text=True,
                         check=True).stdout
    assert "cap_net_raw=ep" in got
    assert os.getxattr(image / "etc/hostname", "user.test") == USER_XATTR


def tar_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tar:")]


def test_systemd_import_uncompressed(tmp_path):
    tree = build_tree(tmp_path / "tree")
    dest, _ = do_pack(tree, tmp_path / "out")
    images = tmp_path / "machines"
    images.mkdir()
    proc = subprocess.run([SYSTEMD_IMPORT, "tar", f"--image-root={images}", str(dest),
                           "packtest-plain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert tar_warnings(proc.stderr) == []
    check_imported(images / "packtest-plain", tree)


def test_systemd_import_zstd_through_a_pipe(tmp_path):
    tree = build_tree(tmp_path / "tree")
    dest, _ = do_pack(tree, tmp_path / "out", "zstd", threads=2)
    images = tmp_path / "machines"
    images.mkdir()
    proc = subprocess.run(f"zstd -dc '{dest}' | {SYSTEMD_IMPORT} tar --image-root='{images}' - "
                          "packtest-zstd", shell=True, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert tar_warnings(proc.stderr) == []
    check_imported(images / "packtest-zstd", tree)


# -- failure and memory -----------------------------------------------------------------------

@pytest.mark.parametrize("compression", sorted(SUFFIXES))
@pytest.mark.parametrize("exc", [PermissionError, KeyboardInterrupt])
def test_failure_leaves_no_temporary_and_no_dest(tmp_path, monkeypatch, compression, exc):
    tree = build_tree(tmp_path / "tree", special=False, caps=False)
    real = walk_sorted

    def failing(root):
        for i, item in enumerate(real(root)):
            if i == 8:
                raise exc(13, "Permission denied", str(item[1])) if exc is PermissionError else exc()
            yield item

    monkeypatch.setattr(pack_mod, "walk_sorted", failing)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("unrelated\n")
    dest = out / f"image{SUFFIXES[compression]}"
    with pytest.raises(exc):
        pack(tree, dest, EPOCH, compression, LEVELS[compression], threads=2)
    assert sorted(os.listdir(out)) == ["keep"]

    # an existing tarball is left as it was
    dest.write_bytes(b"previous")
    with pytest.raises(exc):
        pack(tree, dest, EPOCH, compression, LEVELS[compression], threads=2)
    assert sorted(os.listdir(out)) == ["image" + SUFFIXES[compression], "keep"]
    assert dest.read_bytes() == b"previous"


def test_failure_on_open_leaves_nothing(tmp_path, monkeypatch):
    tree = build_tree(tmp_path / "tree", special=False, caps=False)
    real_open = open

    def unreadable(path, *args, **kwargs):
        if str(path).endswith("/etc/shadow"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(pack_mod, "open", unreadable, raising=False)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PermissionError):
        pack(tree, out / "image.tar.zst", EPOCH, "zstd", 3, threads=2)
    assert os.listdir(out) == []


MEMORY_SCRIPT = textwrap.dedent("""
    import os, resource, sys
    from pathlib import Path
    from nspawnbuild.pack import pack
    tree, dest, compression, level, threads = sys.argv[1:]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = pack(Path(tree), Path(dest), 1700000000, compression, int(level), threads=int(threads))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) // 1024, result.tar_size)
""")


@pytest.mark.parametrize(("compression", "level", "threads", "limit_mib"),
                         [("none", 0, 1, 64), ("zstd", 12, 2, 192)])
def test_memory_does_not_grow_with_file_size(tmp_path, compression, level, threads, limit_mib):
    """A 300 MiB (sparse) file streams through: peak RSS grows by the compressor's fixed state
    only (zstd level 12: about 100 MiB for 1 worker, about 30 MiB more per extra worker)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    with open(tree / "big", "wb") as fh:
        fh.truncate(300 << 20)
    dest = tmp_path / f"big{SUFFIXES[compression]}"
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tree), str(dest), compression,
                           str(level), str(threads)], capture_output=True, text=True, check=True)
    growth_mib, tar_size = map(int, proc.stdout.split())
    assert tar_size > 300 << 20
    assert growth_mib < limit_mib, f"peak RSS grew by {growth_mib} MiB packing a 300 MiB file"


def test_non_utf8_and_long_names_round_trip(tmp_path):
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    latin1 = os.fsencode(tree / "d") + b"/caf\xe9"
    with open(latin1, "wb") as fh:
        fh.write(b"latin-1 name\n")
    long_dir = tree / ("l" * 90) / ("m" * 90)
    long_dir.mkdir(parents=True)
    (long_dir / ("n" * 120)).write_text("long\n")
    os.symlink("/" + "t" * 150, tree / "d" / "long-link")
    os.setxattr(latin1, "user.v", b"\xfe\xff")
    dest, _ = do_pack(tree, tmp_path / "out")
    assert b"hdrcharset" not in dest.read_bytes()
    out = tmp_path / "extracted"
    out.mkdir()
    proc = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf",
                           str(dest), "-C", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert sorted(os.listdir(os.fsencode(out / "d"))) == [b"caf\xe9", b"long-link"]
    got = os.fsencode(out / "d") + b"/caf\xe9"
    with open(got, "rb") as fh:
        assert fh.read() == b"latin-1 name\n"
    assert os.getxattr(got, "user.v") == b"\xfe\xff"
    assert (out / long_dir.relative_to(tree) / ("n" * 120)).read_text() == "long\n"
    assert os.readlink(out / "d" / "long-link") == "/" + "t" * 150
    assert "./d/caf\udce9" in members(dest.read_bytes())
