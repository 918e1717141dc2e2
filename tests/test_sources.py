"""``[[sources]]``: downloads pinned by sha256, cached by digest, copied or unpacked in the image.

Every download in these tests comes from a loopback HTTP server (127.0.0.1) the test starts;
nothing else is reached. Unit tests cover ``nspawnbuild.fetch`` (cache, pre-seeding, digest
and network failures), ``rootfs.copy_file``, the recipe keys and the feature's methods; the
integration test builds a real image with a plain file and an unpacked tarball.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT, Env, artifact_digests, tar_stream, tarball_of
from nspawnbuild.errors import BuildError, RecipeError
from nspawnbuild.fetch import cache_path, fetch
from nspawnbuild.imagefs import copy_file
from nspawnbuild.plan import make_plan
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.sandbox import nspawn_argv
from nspawnbuild_plugins.sources import GUEST_PATH, extract_command

BASE_RECIPE = ROOT / "recipes" / "debian-base.toml"
NO_PROXY = {"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- a loopback HTTP server -------------------------------------------------------------------

@dataclass
class Server:
    """Serves ``files`` (name -> bytes) at http://127.0.0.1:PORT/NAME and counts requests."""

    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    delay: float = 0.0  # seconds before answering (to overlap two downloads)
    truncate: bool = False  # announce the full length, send half, close

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.requests.append(self.path)
            time.sleep(state.delay)
            body = state.files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2] if state.truncate else body)
            if state.truncate:
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy set in the environment must not be asked for 127.0.0.1."""
    for key, value in NO_PROXY.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL whose port is bound but not listening: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/tool"


def leftovers(cache: Path) -> list[str]:
    """Partial downloads left in the cache (there must never be any)."""
    d = cache / "sources"
    return sorted(p.name for p in d.iterdir() if ".part-" in p.name) if d.is_dir() else []


# -- fetch: download and cache ----------------------------------------------------------------

def test_download_is_cached_by_digest(server: Server, tmp_path: Path) -> None:
    data = b"tool\n" * 1000
    server.files["tool"] = data
    path = fetch(server.url("tool"), sha(data), tmp_path)
    assert path == tmp_path / "sources" / sha(data) == cache_path(tmp_path, sha(data))
    assert path.read_bytes() == data
    assert server.requests == ["/tool"]
    assert leftovers(tmp_path) == []


def test_second_fetch_makes_no_request(server: Server, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # several chunks
    server.files["big"] = data
    first = fetch(server.url("big"), sha(data), tmp_path)
    second = fetch(server.url("big"), sha(data), tmp_path)
    assert first == second and second.read_bytes() == data
    assert server.requests == ["/big"]


def test_upper_case_digest_is_the_same_entry(server: Server, tmp_path: Path) -> None:
    server.files["tool"] = b"x"
    path = fetch(server.url("tool"), sha(b"x").upper(), tmp_path)
    assert path.name == sha(b"x")


def test_file_url(tmp_path: Path) -> None:
    src = tmp_path / "local.bin"
    src.write_bytes(b"local")
    path = fetch(src.as_uri(), sha(b"local"), tmp_path / "cache", root=tmp_path)
    assert path.read_bytes() == b"local"


def test_file_url_needs_the_recipes_directory(tmp_path: Path) -> None:
    """A file:// source is read only inside the directory of its recipe: none given, none read."""
    src = tmp_path / "local.bin"
    src.write_bytes(b"local")
    with pytest.raises(BuildError, match="read only inside the directory of the recipe"):
        fetch(src.as_uri(), sha(b"local"), tmp_path / "cache")
    with pytest.raises(BuildError, match="outside the recipe's directory"):
        fetch(src.as_uri(), sha(b"local"), tmp_path / "cache", root=tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []


def test_two_fetches_of_one_file_download_it_once(server: Server, tmp_path: Path) -> None:
    data = b"shared"
    server.files["tool"] = data
    server.delay = 0.5
    results: list[Path | BaseException] = []

    def run() -> None:
        try:
            results.append(fetch(server.url("tool"), sha(data), tmp_path))
        except BaseException as e:  # noqa: BLE001 (reported by the assertion below)
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [cache_path(tmp_path, sha(data))] * 2
    assert server.requests == ["/tool"]


# -- fetch: pre-seeding -----------------------------------------------------------------------

def test_preseeded_file_is_used_without_a_request(refused_url: str, tmp_path: Path) -> None:
    data = b"copied here by hand"
    seeded = cache_path(tmp_path, sha(data))
    seeded.parent.mkdir(parents=True)
    seeded.write_bytes(data)
    assert fetch(refused_url, sha(data), tmp_path) == seeded  # no network needed at all
    assert seeded.read_bytes() == data


def test_preseeded_file_with_wrong_content_is_replaced(server: Server, tmp_path: Path) -> None:
    """Documented choice: a cached file whose digest is wrong is removed and downloaded again."""
    data = b"the right content"
    seeded = cache_path(tmp_path, sha(data))
    seeded.parent.mkdir(parents=True)
    seeded.write_bytes(b"the right cont")  # a truncated copy
    server.files["tool"] = data
    assert fetch(server.url("tool"), sha(data), tmp_path).read_bytes() == data
    assert server.requests == ["/tool"]


def test_preseeded_wrong_file_and_no_network_says_so(refused_url: str, tmp_path: Path) -> None:
    seeded = cache_path(tmp_path, sha(b"right"))
    seeded.parent.mkdir(parents=True)
    seeded.write_bytes(b"wrong")
    with pytest.raises(BuildError) as exc:
        fetch(refused_url, sha(b"right"), tmp_path)
    text = str(exc.value)
    assert f"a file at {seeded} had sha256 {sha(b'wrong')}" in text
    assert not seeded.exists()


def test_a_directory_in_the_cache_is_an_error(server: Server, tmp_path: Path) -> None:
    cache_path(tmp_path, sha(b"x")).mkdir(parents=True)
    with pytest.raises(BuildError, match="not a regular file"):
        fetch(server.url("x"), sha(b"x"), tmp_path)
    assert server.requests == []


# -- fetch: failures --------------------------------------------------------------------------

def test_wrong_digest_names_both_and_caches_nothing(server: Server, tmp_path: Path) -> None:
    server.files["tool"] = b"what the server has"
    expected = sha(b"what the recipe expects")
    with pytest.raises(BuildError) as exc:
        fetch(server.url("tool"), expected, tmp_path)
    text = str(exc.value)
    assert server.url("tool") in text
    assert f"expected: {expected}" in text
    assert f"actual:   {sha(b'what the server has')}" in text
    assert "put its sha256 in the recipe" in text
    assert not cache_path(tmp_path, expected).exists()
    assert not cache_path(tmp_path, sha(b"what the server has")).exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("problem", ["404", "refused", "truncated"])
def test_network_failure_names_url_and_preseed_path(problem: str, server: Server,
                                                    refused_url: str, tmp_path: Path) -> None:
    digest = sha(b"0123456789")
    url = refused_url if problem == "refused" else server.url("tool")
    if problem == "truncated":
        server.files["tool"] = b"0123456789"
        server.truncate = True
    with pytest.raises(BuildError) as exc:
        fetch(url, digest, tmp_path)
    text = str(exc.value)
    assert f"cannot download {url}: " in text
    assert {"404": "HTTP 404", "refused": "Connection refused",
            "truncated": "ended after 5 of 10 bytes"}[problem] in text
    assert f"copy it to {cache_path(tmp_path, digest)}" in text
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert not cache_path(tmp_path, digest).exists()
    assert leftovers(tmp_path) == []


def test_unusable_cache_is_a_build_error(server: Server, tmp_path: Path) -> None:
    (tmp_path / "sources").write_text("a file where the directory should be")
    with pytest.raises(BuildError, match="cannot keep the download of .* in the cache"):
        fetch(server.url("tool"), sha(b"x"), tmp_path)


def test_stale_partial_download_is_cleaned(server: Server, tmp_path: Path) -> None:
    data = b"fresh"
    stale = tmp_path / "sources" / f".{sha(data)}.part-99999"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    server.files["tool"] = data
    fetch(server.url("tool"), sha(data), tmp_path)
    assert leftovers(tmp_path) == []


# -- copying into the image and unpacking there -----------------------------------------------

def test_copy_file_is_symlink_safe_and_sets_mode(tmp_path: Path) -> None:
    root = tmp_path / "image"
    (root / "usr/local").mkdir(parents=True)
    host_bin = tmp_path / "host-bin"
    host_bin.mkdir()
    (root / "usr/local/bin").symlink_to(host_bin)  # absolute: means /HOST-BIN inside the image
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 << 20))
    target = copy_file(root, "/usr/local/bin/tool", src, mode=0o755, uid=0, gid=0)
    assert list(host_bin.iterdir()) == []
    assert target == root / str(host_bin).lstrip("/") / "tool"
    assert target.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert [p.name for p in target.parent.iterdir()] == ["tool"]  # no temporary left


def test_bind_paths_with_colons_are_escaped(tmp_path: Path) -> None:
    argv = nspawn_argv(tmp_path, "m", ["true"], binds_ro=[(Path("/c:a\\che/f"), GUEST_PATH)])
    assert f"--bind-ro=/c\\:a\\\\che/f:{GUEST_PATH}" in argv


# -- recipes and the feature -------------------------------------------------------------------

DIGEST = "ab" * 32


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_sources_append_under_extends_and_keep_their_origin(tmp_path: Path) -> None:
    parent = write(tmp_path / "parent.toml", f"""
[base]
distro = "debian"

[[sources]]
url = "https://example.invalid/a"
sha256 = "{DIGEST.upper()}"
dest = "/usr/local/bin/a"
mode = "0755"
""")
    child = write(tmp_path / "child.toml", f"""
extends = "parent.toml"

[[sources]]
url = "https://example.invalid/a"
sha256 = "{DIGEST.upper()}"
dest = "/usr/local/bin/a"
mode = "0755"

[[sources]]
url = "https://example.invalid/b.tar.xz"
sha256 = "{DIGEST}"
dest = "/opt/b"
extract = true
strip_components = 2
""")
    recipe = load_recipe(child)
    assert [(s.declared_in, s.index) for s in recipe.source_entries] == [(parent, 0), (child, 0),
                                                                           (child, 1)]
    a, _, b = recipe.source_entries
    assert (a.sha256, a.mode, a.extract) == (DIGEST, 0o755, False)
    assert (b.extract, b.strip_components, b.mode) == (True, 2, 0o644)
    assert extract_command(b) == ["/bin/sh", "-e", "-c", 'mkdir -p -- "$1" && shift && exec tar "$@"',
                                  "sh", "/opt/b", "-xf", GUEST_PATH, "-C", "/opt/b",
                                  "--no-same-owner", "--strip-components=2"]


def test_error_in_a_childs_source_names_the_child(tmp_path: Path) -> None:
    write(tmp_path / "parent.toml", f"""
[base]
distro = "debian"

[[sources]]
url = "https://example.invalid/a"
sha256 = "{DIGEST}"
dest = "/a"
""")
    child = write(tmp_path / "child.toml", """extends = "parent.toml"

[[sources]]
url = "https://example.invalid/b"
sha256 = "nope"
dest = "/b"
""")
    with pytest.raises(RecipeError) as exc:
        load_recipe(child)
    [problem] = exc.value.problems
    assert (problem.file, problem.key, problem.line) == (child, "sources[0].sha256", 5)


def test_sources_shape_the_rootfs_spec(tmp_path: Path) -> None:
    body = '[base]\ndistro = "debian"\n'
    plain = make_plan(load_recipe(write(tmp_path / "plain.toml", body)))
    assert not [d for d in plain.rootfs["plugin_data"] if "sources" in d]
    source = f'\n[[sources]]\nurl = "https://example.invalid/t"\nsha256 = "{DIGEST}"\ndest = "/t"\n'
    one = make_plan(load_recipe(write(tmp_path / "plain.toml", body + source)))
    [data] = [d for d in one.rootfs["plugin_data"] if "sources" in d]
    assert data == {"sources": [{"url": "https://example.invalid/t", "sha256": DIGEST,
                                 "dest": "/t", "extract": False, "mode": 0o644}]}
    other = make_plan(load_recipe(write(tmp_path / "plain.toml",
                                        body + source.replace(DIGEST, "cd" * 32))))
    assert other.rootfs != one.rootfs
    assert other.bootstrap == one.bootstrap == plain.bootstrap


# -- a real build -----------------------------------------------------------------------------

def make_tarball(members: dict[str, tuple[bytes, int]]) -> bytes:
    """A .tar.gz with a top directory, members owned by an unprivileged user."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, 1234, 1234
            info.uname = info.gname = "someone"
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image_files(tarball: Path, prefixes: tuple[str, ...]) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with tar_stream(tarball) as tar:
        found = {}
        for m in tar:
            if m.name.startswith(prefixes):
                f = tar.extractfile(m) if m.isfile() else None
                found[m.name] = (m, f.read() if f else b"")
        return found


@pytest.mark.integration
def test_build_installs_sources_and_refuses_a_wrong_digest(env: Env, server: Server) -> None:
    token = uuid.uuid4().hex.encode()  # content unique to this run: nothing cached before
    tool = b"#!/bin/sh\necho hello from tool " + token + b"\n"
    archive = make_tarball({"tool-1.2/bin/run": (b"#!/bin/sh\necho run " + token + b"\n", 0o755),
                            "tool-1.2/share/doc.txt": (b"docs " + token + b"\n", 0o644)})
    server.files.update({"tool": tool, "tool-1.2.tar.gz": archive})
    name = "with-sources"
    recipe = env.tmp / f"{name}.toml"
    body = f"""extends = "{BASE_RECIPE}"

[[sources]]
url = "{server.url('tool')}"
sha256 = "{sha(tool)}"
dest = "/usr/local/bin/tool"
mode = "0755"

[[sources]]
url = "{server.url('tool-1.2.tar.gz')}"
sha256 = "{sha(archive)}"
dest = "/opt/tool"
extract = true
strip_components = 1
"""
    recipe.write_text(body)
    r = env.nspawnbuild("build", str(recipe), **NO_PROXY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(server.requests) == ["/tool", "/tool-1.2.tar.gz"]

    out = env.out / name
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == name
    assert manifest["artifacts"]["tarball"]["sha256"] == hashlib.sha256(
        (tarball_of(out)).read_bytes()).hexdigest()

    files = image_files(tarball_of(out), ("./usr/local/bin/tool", "./opt/tool",
                                                 f".{GUEST_PATH}"))
    info, data = files["./usr/local/bin/tool"]
    assert data == tool and stat.S_IMODE(info.mode) == 0o755 and (info.uid, info.gid) == (0, 0)
    info, data = files["./opt/tool/bin/run"]
    assert data == b"#!/bin/sh\necho run " + token + b"\n"
    assert stat.S_IMODE(info.mode) == 0o755 and (info.uid, info.gid) == (0, 0)
    assert files["./opt/tool/share/doc.txt"][1] == b"docs " + token + b"\n"
    assert not [n for n in files if "tool-1.2" in n or n.startswith(f".{GUEST_PATH}")]

    # a wrong digest: exit 1, both digests named, no traceback, the last good build untouched
    before = artifact_digests(out)
    wrong = sha(b"not the archive")
    recipe.write_text(body.replace(sha(archive), wrong))
    r = env.nspawnbuild("build", str(recipe), **NO_PROXY)
    assert r.returncode == 1, r.stdout + r.stderr
    assert wrong in r.stderr and sha(archive) in r.stderr, r.stderr
    assert server.url("tool-1.2.tar.gz") in r.stderr and f"{recipe}" in r.stderr
    assert "Traceback" not in r.stderr
    assert artifact_digests(out) == before
    assert not cache_path(env.cache, wrong).exists()
    assert not (env.work / "recipes" / name / "layer.new").exists()
