"""Symlink-safe writes inside an image: hostile layouts never make the build touch the host.

Each test builds a fake image root in tmp_path/image and a sentinel directory tmp_path/host
standing for the build host's files. Hostile symlinks point at the sentinel by absolute host
path or climb to it with ``..``; after every operation the whole of tmp_path outside the image
must be unchanged (paths, types, contents, modes, link targets).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from nspawnbuild.errors import BuildError
from nspawnbuild.imagefs import make_dirs, remove_in_root, resolve_in_root, write_file
from nspawnbuild.tree import mounts_below, remove_tree

UP = "../" * 24  # far more than enough to reach / from anywhere under tmp_path


@pytest.fixture(autouse=True)
def no_hang():
    """A symlink loop or a FIFO must fail or pass, never block: fail the test after 20 s."""
    def expired(signum, frame):
        raise TimeoutError("operation hung")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def snapshot(base: Path, exclude: Path) -> dict[str, tuple]:
    """Every path below ``base`` except ``exclude``: type, mode, owner, content or target."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if Path(dirpath, d) != exclude)
        for name in [*dirs, *sorted(files)]:
            p = Path(dirpath, name)
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                what: object = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                what = p.read_bytes()
            else:
                what = None
            out[str(p.relative_to(base))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                             st.st_uid, st.st_gid, st.st_ino, what)
    return out


class World:
    """tmp_path/image (the image root) and tmp_path/host (the sentinel standing for the host)."""

    def __init__(self, tmp_path: Path):
        self.base = tmp_path
        self.root = tmp_path / "image"
        self.host = tmp_path / "host"
        for d in ("etc", "usr/lib", "usr/bin", "var/lib", "srv"):
            (self.root / d).mkdir(parents=True)
        (self.root / "etc/hostname").write_text("image\n")
        self.host.mkdir()
        (self.host / "shadow").write_text("root:$6$host-secret:19000::::::\n")
        os.chmod(self.host / "shadow", 0o640)
        (self.host / "sub").mkdir()
        (self.host / "sub/keep").write_text("keep me\n")
        (self.host / "sub/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        (self.host / "motd").write_text("host motd\n")
        # the host path as seen from inside the image, for relative escapes
        self.host_rel = str(self.host).lstrip("/")
        self.before = snapshot(self.base, self.root)

    def link(self, image_path: str, target: str | Path) -> None:
        p = self.root / image_path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)

    def unchanged(self) -> None:
        assert snapshot(self.base, self.root) == self.before

    def inside(self, p: Path) -> None:
        assert p == self.root or p.is_relative_to(self.root), p
        # and no symlink on the way out: the real path is inside too
        assert os.path.realpath(p).startswith(str(self.root))


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


def write_everywhere(w: World, dest: str, data: bytes = b"pwned\n") -> Path:
    target = write_file(w.root, dest, data, mode=0o600)
    w.inside(target)
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    w.unchanged()
    return target


# -- 1 absolute symlink to a host file ----------------------------------------------------------

def test_absolute_symlink_to_host_file(world):
    world.link("/etc/motd", world.host / "shadow")
    target = write_everywhere(world, "/etc/motd")
    assert target == world.root / world.host_rel / "shadow"
    assert resolve_in_root(world.root, "/etc/motd") == target
    assert os.path.islink(world.root / "etc/motd")  # the link itself is kept, like the kernel
    remove_in_root(world.root, "/etc/motd")
    assert not os.path.lexists(world.root / "etc/motd")
    world.unchanged()


def test_absolute_symlink_like_etc_shadow(world):
    world.link("/etc/x", "/etc/shadow")
    target = write_everywhere(world, "/etc/x")
    assert target == world.root / "etc/shadow"


# -- 2 relative symlink escaping with ../../../../ --------------------------------------------------

def test_relative_symlink_escaping(world):
    world.link("/etc/motd", UP + world.host_rel + "/motd")
    assert os.path.realpath(world.root / "etc/motd") == str(world.host / "motd")  # on the host it would
    target = write_everywhere(world, "/etc/motd")
    assert target == world.root / world.host_rel / "motd"
    remove_in_root(world.root, "/etc/motd")
    world.unchanged()


# -- 3 chains of symlinks -----------------------------------------------------------------------

def test_symlink_chain(world):
    world.link("/etc/a", "b")
    world.link("/etc/b", "/usr/lib/c")
    world.link("/usr/lib/c", "../../var/lib/d")
    world.link("/var/lib/d", UP + world.host_rel + "/sub/passwd")
    target = write_everywhere(world, "/etc/a")
    assert target == world.root / world.host_rel / "sub/passwd"
    for p in ("/etc/a", "/etc/b", "/usr/lib/c", "/var/lib/d"):
        assert resolve_in_root(world.root, p) == target
    assert resolve_in_root(world.root, "/etc/a", follow_final=False) == world.root / "etc/a"
    world.unchanged()


# -- 4 symlinked parent directory -------------------------------------------------------------------

def test_symlinked_parent_directory(world):
    etc = world.root / "etc"
    for child in etc.iterdir():
        child.unlink()
    etc.rmdir()
    world.link("/etc", world.host / "sub")  # /etc -> /host-like absolute path
    target = write_everywhere(world, "/etc/passwd")
    assert target == world.root / world.host_rel / "sub/passwd"
    made = make_dirs(world.root, "/etc/systemd/system")
    world.inside(made)
    assert made == world.root / world.host_rel / "sub/systemd/system"
    remove_in_root(world.root, "/etc/keep")
    world.unchanged()


# -- 5 symlink to the sentinel directory by absolute host path ---------------------------------

def test_symlink_to_sentinel_directory(world):
    world.link("/srv/data", world.host)
    write_everywhere(world, "/srv/data/shadow")
    write_everywhere(world, "/srv/data/new/file")
    world.inside(make_dirs(world.root, "/srv/data/sub/deeper"))
    for p in ("/srv/data/sub/keep", "/srv/data/motd", "/srv/data/shadow"):
        remove_in_root(world.root, p)
    world.unchanged()
    assert not (world.root / world.host_rel / "shadow").exists()


# -- 6 symlink loops --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/etc/self", "/etc/ping/x", "/etc/self/x", "/usr/lib/deep/file"])
def test_symlink_loops_raise_build_error(world, path):
    world.link("/etc/self", "self")
    world.link("/etc/ping", "/etc/pong")
    world.link("/etc/pong", "../etc/ping")
    world.link("/usr/lib/deep", "../lib/deep/./")
    with pytest.raises(BuildError, match="too many levels of symbolic links"):
        resolve_in_root(world.root, path)
    with pytest.raises(BuildError):
        write_file(world.root, path, b"x")
    with pytest.raises(BuildError):
        make_dirs(world.root, path + "/dir")
    if path.count("/") > 2:  # the loop is in a parent: even lstat-like removal cannot resolve it
        with pytest.raises(BuildError):
            remove_in_root(world.root, path)
    world.unchanged()


def test_loop_as_final_component_is_removable(world):
    world.link("/etc/self", "self")
    remove_in_root(world.root, "/etc/self")  # not followed: the link itself goes
    assert not os.path.lexists(world.root / "etc/self")
    world.unchanged()


# -- 7 final component a dangling absolute symlink -------------------------------------------

def test_dangling_absolute_symlink_as_destination(world):
    world.link("/etc/resolv.conf", world.host / "newdir" / "resolv.conf")
    target = write_everywhere(world, "/etc/resolv.conf")
    assert target == world.root / world.host_rel / "newdir/resolv.conf"
    assert not (world.host / "newdir").exists()
    world.unchanged()


# -- 8 '..' in the middle of the target ---------------------------------------------------------

@pytest.mark.parametrize("dest", ["/etc/../../../../{host}/shadow", "/usr/lib/../../../../{host}/motd",
                                  "/../../{host}/sub/passwd"])
def test_dotdot_in_the_middle(world, dest):
    dest = dest.format(host=world.host_rel)
    target = write_everywhere(world, dest)
    assert target == world.root / os.path.normpath(dest).lstrip("/")
    world.unchanged()


def test_dotdot_through_a_symlink(world):
    world.link("/usr/lib/up", UP)  # a link to "../../../.." stops at the image root
    target = write_everywhere(world, "/usr/lib/up/" + world.host_rel + "/motd")
    assert target == world.root / world.host_rel / "motd"
    assert resolve_in_root(world.root, "/usr/lib/up/..") == world.root
    world.unchanged()


# -- 9 a directory where a file should be (and the reverse) -----------------------------------

def test_directory_where_file_should_be(world):
    (world.root / "etc/conf.d").mkdir()
    with pytest.raises(BuildError, match="is a directory"):
        write_file(world.root, "/etc/conf.d", b"x")
    world.link("/etc/dirlink", world.host)  # a link to a directory, resolved in the image
    (world.root / world.host_rel).mkdir(parents=True)
    with pytest.raises(BuildError, match="is a directory"):
        write_file(world.root, "/etc/dirlink", b"x")
    with pytest.raises(BuildError, match="non-directory"):
        make_dirs(world.root, "/etc/hostname/sub")
    with pytest.raises(BuildError, match="non-directory"):
        write_file(world.root, "/etc/hostname/sub/file", b"x")
    remove_in_root(world.root, "/etc/conf.d")  # a directory is not removed by remove_in_root
    assert (world.root / "etc/conf.d").is_dir()
    world.unchanged()


# -- 10 a symlink to / itself -----------------------------------------------------------------

def test_symlink_to_slash(world):
    world.link("/etc/root", "/")
    assert resolve_in_root(world.root, "/etc/root") == world.root
    assert resolve_in_root(world.root, "/etc/root/..") == world.root
    with pytest.raises(BuildError, match="is a directory"):
        write_file(world.root, "/etc/root", b"x")
    target = write_everywhere(world, "/etc/root/etc/root/etc/hostname")
    assert target == world.root / "etc/hostname"
    world.inside(make_dirs(world.root, "/etc/root/newdir"))
    assert (world.root / "newdir").is_dir()
    world.unchanged()


# -- 11 /usr/lib -> ../../../../tmp -------------------------------------------------------------------

def test_usr_lib_to_dotdot_tmp(world):
    lib = world.root / "usr/lib"
    lib.rmdir()
    world.link("/usr/lib", "../../../../tmp")
    name = f"nspawnbuild-safety-{uuid.uuid4().hex}"
    target = write_everywhere(world, f"/usr/lib/{name}/file.so")
    assert target == world.root / "tmp" / name / "file.so"
    assert not Path("/tmp", name).exists()
    world.inside(make_dirs(world.root, f"/usr/lib/{name}/x86_64"))
    assert not Path("/tmp", name).exists()
    world.unchanged()


# -- 12 planted temporary names ---------------------------------------------------------------

def test_planted_temporary_names_are_not_opened(world):
    os.mkfifo(world.root / "etc/.motd.nspawnbuild-tmp")  # opening it for writing would block
    write_everywhere(world, "/etc/motd")
    os.link(world.host / "shadow", world.root / "etc/.hosts.nspawnbuild-tmp")  # same filesystem
    write_everywhere(world, "/etc/hosts")
    world.link("/etc/.issue.nspawnbuild-tmp", world.host / "motd")
    write_everywhere(world, "/etc/issue")
    assert sorted(p.name for p in (world.root / "etc").iterdir()) == [
        "hostname", "hosts", "issue", "motd"]
    world.unchanged()


# -- more --------------------------------------------------------------------------------------

def test_owner_and_mode_and_relative_paths(world):
    target = write_file(world.root, "/etc/new/deep/file", b"data", mode=0o640, uid=1234, gid=5678)
    st = target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o640)
    for bad in ("etc/x", "x"):
        with pytest.raises(ValueError):
            resolve_in_root(world.root, bad)
        with pytest.raises(ValueError):
            make_dirs(world.root, bad)
        with pytest.raises(ValueError):
            write_file(world.root, bad, b"x")
    world.unchanged()


def test_remove_in_root_never_follows_the_final_link(world):
    world.link("/etc/gone", world.host / "shadow")
    world.link("/etc/gone-rel", UP + world.host_rel + "/motd")
    world.link("/srv/h", world.host)
    for p in ("/etc/gone", "/etc/gone-rel", "/srv/h", "/srv/h/sub/keep"):
        remove_in_root(world.root, p)
    assert not any(os.path.lexists(world.root / p) for p in ("etc/gone", "etc/gone-rel", "srv/h"))
    world.unchanged()


@pytest.mark.parametrize("path", ["/", "/etc/../..", "/etc/x/../../y", "/usr/lib/../bin/./z"])
def test_resolution_stays_below_root(world, path):
    world.link("/etc/x", world.host)
    world.inside(resolve_in_root(world.root, path))
    world.inside(resolve_in_root(world.root, path, follow_final=False))


# -- remove_tree and mounts ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["work", "w\u00f6rk dir", "tab\there\\back"])
def test_remove_tree_refuses_bind_mount_below(tmp_path, name):
    host = tmp_path / "host"
    host.mkdir()
    (host / "precious").write_text("do not delete\n")
    (host / "dir").mkdir()
    (host / "dir/file").write_text("nor this\n")
    before = snapshot(host, host / "none")
    work = tmp_path / name
    mnt = work / "sub" / "mnt"
    mnt.mkdir(parents=True)
    (work / "other").write_text("work file\n")
    subprocess.run(["mount", "--bind", str(host), str(mnt)], check=True)
    try:
        assert mounts_below(work) == [str(mnt)]
        with pytest.raises(BuildError) as err:
            remove_tree(work)
        assert str(mnt) in str(err.value)
        assert (mnt / "precious").exists() and (work / "other").exists()
        with pytest.raises(BuildError):
            remove_tree(mnt)  # the mount point itself
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert snapshot(host, host / "none") == before
    remove_tree(work)  # unmounted: now it goes
    assert not work.exists()
    assert snapshot(host, host / "none") == before


def test_remove_tree_of_a_symlink_removes_only_the_link(tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "precious").write_text("x\n")
    link = tmp_path / "work"
    link.symlink_to(host)
    remove_tree(link)
    assert not os.path.lexists(link)
    assert (host / "precious").read_text() == "x\n"
    remove_tree(tmp_path / "missing")  # nothing there: nothing to do


def test_resolv_conf_of_the_recipe_stays_host_state_goes(tmp_path: Path) -> None:
    from nspawnbuild.rootfs import drop_resolv_conf, scrub

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    resolv = root / "etc" / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.99\n")  # as a bootstrapper left it
    drop_resolv_conf(root)
    assert not resolv.exists()

    resolv.write_text("# from the recipe\nnameserver 192.0.2.53\n")
    scrub(root, "web")
    assert resolv.read_text() == "# from the recipe\nnameserver 192.0.2.53\n"

    resolv.write_text("")  # nspawn's bind-mount point
    scrub(root, "web")
    assert not resolv.exists()

    host = Path("/etc/resolv.conf")
    if host.is_file() and host.read_bytes().strip():
        resolv.write_bytes(host.read_bytes())
        scrub(root, "web")
        assert not resolv.exists()

    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    drop_resolv_conf(root)
    scrub(root, "web")
    assert resolv.is_symlink()
