"""Hostile recipes: a recipe is untrusted code, and may read only its own directory.

A corpus of recipes that try to read host files (``/etc/shadow`` stands in as the decoy
``host_sentinels.secret``, whose token is also in the environment as a CI secret would be),
to hang the build (FIFOs, devices, endless downloads) or to make loading it take gigabytes
(templates, ``extends`` chains, huge lists). Each case runs the real CLI on a recipe written
into tmp_path and checks the refusal: exit 2 for bad input (1 for a download past its limit),
a message naming the file, the line and the key, no traceback, no decoy token anywhere in the
output, nothing written. Every test uses ``host_sentinels``, which checks the decoys unchanged.

Downloads come only from loopback HTTP servers on 127.0.0.1 that the tests start. The cases
that need an image (a real build up to the download) are marked integration.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import sentinels
from conftest import BIN, ROOT, Env
from nspawnbuild import cache as cache_mod
from nspawnbuild.errors import BuildError
from nspawnbuild.fetch import DEFAULT_DEADLINE, DEFAULT_MAX_SIZE, Limits, cache_path, fetch
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.schema import SOURCE_MAX_SIZE_DEFAULT, SOURCE_TIMEOUT_DEFAULT
from nspawnbuild.sizes import parse_size

BASE_RECIPE = ROOT / "recipes" / "debian-base.toml"
NO_PROXY = {"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
WRONG = "ab" * 32  # a sha256 no test file has
#: seconds a CLI run may take here before the case counts as a hang
HANG = 60


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy set in the environment must not be asked for 127.0.0.1."""
    for key, value in NO_PROXY.items():
        monkeypatch.setenv(key, value)


# -- running the CLI and checking a refusal ---------------------------------------------------

def recipe_dir(env: Env) -> Path:
    """The directory of the case's recipe: inside tmp_path, apart from the decoys."""
    d = env.tmp / "recipe"
    d.mkdir(exist_ok=True)
    return d


def write(path: Path, body: str, *, base: bool = True) -> Path:
    """A recipe (``[base] distro = "debian"`` first unless ``base`` is false)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(('[base]\ndistro = "debian"\n\n' if base else "") + body)
    return path


def run(env: Env, *args: str, cwd: Path | None = None,
        timeout: float = HANG) -> subprocess.CompletedProcess[str]:
    """The real ``nspawnbuild`` on this test's layout; a run past ``timeout`` is a hang."""
    try:
        return subprocess.run([str(BIN / "nspawnbuild"), *args],
                              cwd=cwd or env.tmp, env=env.environ(**NO_PROXY),
                              capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"nspawnbuild {' '.join(args)} hung (still running after {timeout} s)")


def problem_line(file: Path, key: str | None) -> re.Pattern[str]:
    """One problem line naming ``file``, a line number, and ``key``: ``FILE:LINE: key 'KEY': ``."""
    where = re.escape(str(file)) + r":\d+: "
    return re.compile(r"^error: " + where + (f"key '{re.escape(key)}': " if key else ""),
                      re.MULTILINE)


def nothing_written(env: Env) -> None:
    for d in (env.out, env.work):
        assert not d.exists() or not any(d.iterdir()), f"{d} has {sorted(os.listdir(d))}"


def no_secret(s: sentinels.Sentinels, r: subprocess.CompletedProcess[str]) -> None:
    """Neither the decoy token nor the decoy's digest is in the output."""
    for text in (r.stdout, r.stderr):
        assert s.token not in text, text
        assert sha(s.secret.read_bytes()) not in text, text


def refused(env: Env, s: sentinels.Sentinels, recipe: Path, key: str | None, *texts: str,
            command: str = "validate", file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on ``recipe`` and check the refusal: exit 2, ``file:LINE: key 'KEY'``,
    every text in the message, no traceback, no secret, nothing written."""
    args = [command, str(recipe)]
    r = run(env, *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert problem_line(file or recipe, key).search(r.stderr), r.stderr
    for text in texts:
        assert text in r.stderr, r.stderr
    if command == "validate":
        assert r.stdout == ""
    no_secret(s, r)
    nothing_written(env)
    return r


# -- [[files]] src and templates: confined to the recipe's directory -------------------------

def _files(src: str, template: bool = False) -> str:
    return f'[[files]]\nsrc = "{src}"\ndest = "/etc/x"\n' + ("template = true\n" if template else "")


def _absolute(s: sentinels.Sentinels, d: Path) -> str:
    return str(s.secret)


def _dotdot(s: sentinels.Sentinels, d: Path) -> str:
    return os.path.relpath(s.secret, d)


def _link(s: sentinels.Sentinels, d: Path) -> str:
    (d / "innocent.txt").symlink_to(s.secret)
    return "innocent.txt"


def _relative_link(s: sentinels.Sentinels, d: Path) -> str:
    (d / "innocent.txt").symlink_to(os.path.relpath(s.secret, d))
    return "innocent.txt"


def _dir_link(s: sentinels.Sentinels, d: Path) -> str:
    (d / "conf").symlink_to(s.secret.parent, target_is_directory=True)
    return f"conf/{s.secret.name}"


def _link_chain(s: sentinels.Sentinels, d: Path) -> str:
    (d / "b").symlink_to(s.secret)
    (d / "a").symlink_to("b")
    return "a"


def _inside_then_out(s: sentinels.Sentinels, d: Path) -> str:
    (d / "sub").mkdir()
    return f"sub/../{os.path.relpath(s.secret, d)}"


def _proc_environ(s: sentinels.Sentinels, d: Path) -> str:
    return "/proc/self/environ"


def _proc_root(s: sentinels.Sentinels, d: Path) -> str:
    return f"/proc/self/root{s.secret}"  # the host's / again, through /proc


def _link_to_proc(s: sentinels.Sentinels, d: Path) -> str:
    (d / "env.txt").symlink_to("/proc/self/environ")
    return "env.txt"


def _dev_zero(s: sentinels.Sentinels, d: Path) -> str:
    return "/dev/zero"


def _sys(s: sentinels.Sentinels, d: Path) -> str:
    return "/sys/kernel/uevent_seqnum"


COPY = "copy the file into it"
NO_LINK = "instead of a link to it"
#: case: (make the src, text of the message, text of the hint)
ESCAPES: dict[str, tuple[Callable[[sentinels.Sentinels, Path], str], str, str]] = {
    "absolute": (_absolute, "is outside the recipe's directory", COPY),
    "dotdot": (_dotdot, "leads (through '..') outside the recipe's directory", COPY),
    "symlink": (_link, "is a symbolic link", NO_LINK),
    "relative-symlink": (_relative_link, "is a symbolic link", NO_LINK),
    "directory-symlink": (_dir_link, "goes through one", NO_LINK),
    "symlink-chain": (_link_chain, "is a symbolic link", NO_LINK),
    "inside-then-dotdot": (_inside_then_out, "outside the recipe's directory", COPY),
    "proc-self-environ": (_proc_environ, "is under /proc", COPY),
    "proc-self-root": (_proc_root, "is under /proc", COPY),
    "symlink-to-proc": (_link_to_proc, "under /proc, a host pseudo-filesystem", COPY),
    "dev-zero": (_dev_zero, "is under /dev", COPY),
    "sys": (_sys, "is under /sys", COPY),
}


@pytest.mark.parametrize("command", ["validate", "build"])
@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_files_src_outside_the_recipe_directory_is_refused(
        case: str, command: str, env: Env, host_sentinels: sentinels.Sentinels) -> None:
    make, text, hint = ESCAPES[case]
    d = recipe_dir(env)
    recipe = write(d / "hostile.toml", _files(make(host_sentinels, d)))
    refused(env, host_sentinels, recipe, "files[0].src", text, hint, command=command)


@pytest.mark.parametrize("case", ["absolute", "symlink", "proc-self-environ"])
def test_template_src_outside_the_recipe_directory_is_refused(
        case: str, env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """A template is a [[files]] src too: ``{{ }}`` in the secret must not even be rendered."""
    make, text, hint = ESCAPES[case]
    d = recipe_dir(env)
    refused(env, host_sentinels, write(d / "t.toml", _files(make(host_sentinels, d), True)),
            "files[0].src", text, hint)


def _fifo(d: Path) -> str:
    os.mkfifo(d / "pipe")
    return "pipe"


def _socket(d: Path) -> str:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock"))
    sock.close()
    return "sock"


def _char_device(d: Path) -> str:
    try:  # /dev/zero's numbers, outside /dev: only the file type can refuse it
        os.mknod(d / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("mknod is not allowed here")
    return "zero"


def _directory(d: Path) -> str:
    (d / "dir").mkdir()
    return "dir"


SPECIAL = {"fifo": (_fifo, "is a FIFO (named pipe), not a regular file"),
           "socket": (_socket, "is a socket, not a regular file"),
           "char-device": (_char_device, "is a character device, not a regular file"),
           "directory": (_directory, "is a directory, not a regular file")}


@pytest.mark.parametrize("command", ["validate", "build"])
@pytest.mark.parametrize("case", sorted(SPECIAL))
def test_files_src_that_is_not_a_regular_file_is_refused_without_hanging(
        case: str, command: str, env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """A FIFO in the recipe's own directory: reading it would block for ever (run() fails a
    run that takes longer than HANG seconds); a device node is refused by its type."""
    make, text = SPECIAL[case]
    d = recipe_dir(env)
    refused(env, host_sentinels, write(d / "special.toml", _files(make(d))), "files[0].src",
            text, command=command)


def test_parent_files_resolve_in_the_parents_directory(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """In an extends chain, an entry is confined to the directory of the recipe naming it: a
    parent cannot reach into its child's directory with '..', and the error names the parent."""
    d = recipe_dir(env)
    (d / "motd").write_text("the child's file\n")
    parent = write(d / "lib" / "parent.toml", _files("../motd"))
    child = write(d / "child.toml", 'extends = "lib/parent.toml"\n', base=False)
    refused(env, host_sentinels, child, "files[0].src", "outside the recipe's directory",
            str(d / "lib"), file=parent)


def test_files_inside_the_recipe_directory_are_still_read(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """The control: links and paths that stay inside the directory are fine, as is '..' that
    comes back into it, and an absolute path inside it."""
    d = recipe_dir(env)
    (d / "files").mkdir()
    (d / "files" / "motd").write_text("hello {{ name }}\n")
    (d / "motd-link").symlink_to("files/motd")
    recipe = write(d / "fine.toml", "".join([
        _files("files/motd"), _files("motd-link"), _files("files/../files/motd"),
        _files(str(d / "files" / "motd"), template=True)]))
    r = run(env, "validate", str(recipe))
    assert r.returncode == 0, r.stderr
    loaded = load_recipe(recipe)
    assert [f.content for f in loaded.files] == [b"hello {{ name }}\n"] * 3 + [b"hello fine\n"]


# -- file:// sources --------------------------------------------------------------------------

def _source(url: str, digest: str = WRONG, extra: str = "") -> str:
    return f'[[sources]]\nurl = "{url}"\nsha256 = "{digest}"\ndest = "/opt/x"\n{extra}'


def test_file_source_of_a_host_file_is_refused_and_its_digest_never_printed(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """The secret as a file:// source with a wrong sha256: refused at load time, before any
    digest is computed; neither the content nor the real sha256 shows (no_secret checks)."""
    d = recipe_dir(env)
    recipe = write(d / "src.toml", _source(host_sentinels.secret.as_uri()))
    for command in ("validate", "build"):
        refused(env, host_sentinels, recipe, "sources[0].url", "outside the recipe's directory",
                command=command)


def _src_link(s: sentinels.Sentinels, d: Path) -> str:
    (d / "tool").symlink_to(s.secret)
    return (d / "tool").as_uri()


def _src_fifo(s: sentinels.Sentinels, d: Path) -> str:
    os.mkfifo(d / "tool")
    return (d / "tool").as_uri()


SOURCE_CASES: dict[str, tuple[Callable[[sentinels.Sentinels, Path], str], str]] = {
    "dev-zero": (lambda s, d: "file:///dev/zero", "is under /dev"),
    "proc-self-environ": (lambda s, d: "file:///proc/self/environ", "is under /proc"),
    "dotdot": (lambda s, d: f"file://{d}/../{os.path.relpath(s.secret, d.parent)}",
               "outside the recipe's directory"),
    "percent-encoded-dotdot": (lambda s, d: f"file://{d}/%2e%2e/{os.path.relpath(s.secret, d.parent)}",
                               "outside the recipe's directory"),
    "symlink": (_src_link, "is a symbolic link"),
    "fifo": (_src_fifo, "is a FIFO"),
    "other-host": (lambda s, d: f"file://build-host.invalid{s.secret}", "names the host"),
}


@pytest.mark.parametrize("case", sorted(SOURCE_CASES))
def test_file_source_outside_or_special_is_refused(
        case: str, env: Env, host_sentinels: sentinels.Sentinels) -> None:
    make, text = SOURCE_CASES[case]
    d = recipe_dir(env)
    refused(env, host_sentinels, write(d / "src.toml", _source(make(host_sentinels, d))),
            "sources[0].url", text)


def test_local_digest_mismatch_does_not_print_the_digest(
        tmp_path: Path, host_sentinels: sentinels.Sentinels) -> None:
    """A local file with a wrong sha256 (one the recipe may read): the message says so without
    the actual digest; a download's actual digest is printed (see test_sources)."""
    (tmp_path / "tool").write_bytes(b"local tool\n")
    with pytest.raises(BuildError) as exc:
        fetch((tmp_path / "tool").as_uri(), WRONG, tmp_path / "cache", root=tmp_path)
    text = str(exc.value)
    assert "sha256 mismatch" in text and WRONG in text
    assert sha(b"local tool\n") not in text and "not printed" in text
    assert not cache_path(tmp_path / "cache", sha(b"local tool\n")).exists()
    assert leftovers(tmp_path / "cache") == []


def test_build_time_read_of_a_local_source_is_confined_too(
        tmp_path: Path, host_sentinels: sentinels.Sentinels) -> None:
    """The build checks a file:// source again when it reads it (a link put there after
    ``validate`` is refused), even with the secret's right digest; nothing of it is cached."""
    tool = tmp_path / "tool"
    tool.symlink_to(host_sentinels.secret)
    with pytest.raises(BuildError, match="is a symbolic link") as exc:
        fetch(tool.as_uri(), sha(host_sentinels.secret.read_bytes()), tmp_path / "cache",
              root=tmp_path)
    assert host_sentinels.token not in str(exc.value)
    assert leftovers(tmp_path / "cache") == []


# -- downloads: a size cap and a deadline -----------------------------------------------------

@dataclass
class Hostile:
    """A loopback HTTP server (127.0.0.1 only) whose paths misbehave:

    ``/forever``: 200 and an endless body; ``/trickle``: 200 and a byte every 50 ms for ever;
    ``/liar``: announces 64 GiB; ``/slow-headers``: a status line, then headers a byte at a
    time for ever; ``/ok``: the bytes in ``ok``."""

    port: int = 0
    ok: bytes = b"fine\n"
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def hostile_server() -> Iterator[Hostile]:
    state = Hostile()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with contextlib.suppress(OSError):  # the client gave up: what these paths are for
                self._serve()

        def _serve(self) -> None:
            if self.path == "/slow-headers":
                self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                while not state.stop.wait(0.05):
                    self.wfile.write(b"X")
                    self.wfile.flush()
                return
            self.send_response(200)
            if self.path == "/liar":
                self.send_header("Content-Length", str(64 << 30))
            if self.path == "/ok":
                self.send_header("Content-Length", str(len(state.ok)))
            self.end_headers()
            if self.path == "/ok":
                self.wfile.write(state.ok)
                return
            block = b"\0" * (1 << 16)
            while not state.stop.is_set():
                self.wfile.write(block if self.path != "/trickle" else b".")
                if self.path == "/trickle":
                    self.wfile.flush()
                    state.stop.wait(0.05)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def leftovers(cache: Path, digest: str | None = None) -> list[str]:
    """What a failed download left in the cache: partial files, and cached sources (all of
    them, or the one with ``digest`` in a cache that other tests share). Lock files stay."""
    d = cache / "sources"
    parts = sorted(p.name for p in d.iterdir() if ".part-" in p.name) if d.is_dir() else []
    return parts + [e.key for e in cache_mod.entries(cache)
                    if e.kind == "source" and digest in (None, e.key)]


TIMEOUT = "within its timeout of 1.5 s"
#: case: (server path, limits, text of the message, the setting it says to raise)
LIMIT_CASES = {
    "endless-body": ("forever", Limits(max_size=1 << 20, deadline=60),
                     "sent more than its max_size of 1M (1048576 bytes)", "raise max_size"),
    "announced-too-large": ("liar", Limits(max_size=1 << 20, deadline=60),
                            "announces 68719476736 bytes, more than its max_size", "raise max_size"),
    "trickle": ("trickle", Limits(max_size=1 << 30, deadline=1.5), TIMEOUT, "raise timeout"),
    "slow-headers": ("slow-headers", Limits(max_size=1 << 30, deadline=1.5), TIMEOUT,
                     "raise timeout"),
}


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_download_past_its_limit_stops_and_leaves_nothing(
        case: str, hostile_server: Hostile, tmp_path: Path,
        host_sentinels: sentinels.Sentinels) -> None:
    """An endless or endlessly slow server hits max_size or the deadline: one line naming the
    URL and the setting to raise; the partial download is removed, nothing is cached."""
    path, limits, text, setting = LIMIT_CASES[case]
    started = time.monotonic()
    with pytest.raises(BuildError) as exc:
        fetch(hostile_server.url(path), WRONG, tmp_path, limits=limits)
    took = time.monotonic() - started
    message = str(exc.value)
    assert "\n" not in message, message
    assert text in message and hostile_server.url(path) in message and setting in message
    assert took < 20, f"{case} took {took:.1f} s"
    assert leftovers(tmp_path) == []


def test_download_within_its_limits_is_cached(
        hostile_server: Hostile, tmp_path: Path, host_sentinels: sentinels.Sentinels) -> None:
    """The control: limits that fit let the download through."""
    got = fetch(hostile_server.url("ok"), sha(hostile_server.ok), tmp_path,
                limits=Limits(max_size=len(hostile_server.ok), deadline=30))
    assert got.read_bytes() == hostile_server.ok


def test_source_limits_in_the_recipe(env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """``max_size`` and ``timeout`` per source, with their defaults; bad values are refused."""
    d = recipe_dir(env)
    url = "http://127.0.0.1:9/tool"
    recipe = write(d / "limits.toml", _source(url) + _source(url + "2", extra='max_size = "1.5G"\n'
                                                             'timeout = 90\n')
                   + _source(url + "3", extra="max_size = 4096\n"))
    loaded = load_recipe(recipe)
    assert [(s.max_size, s.timeout) for s in loaded.source_entries] == [
        (DEFAULT_MAX_SIZE, DEFAULT_DEADLINE), (3 << 29, 90), (4096, SOURCE_TIMEOUT_DEFAULT)]
    assert parse_size(SOURCE_MAX_SIZE_DEFAULT) == DEFAULT_MAX_SIZE == 4 << 30
    for extra, key in (('max_size = "0"\n', "max_size"), ('max_size = "2X"\n', "max_size"),
                       ("max_size = -1\n", "max_size"), ("timeout = 0\n", "timeout"),
                       ('timeout = "1h"\n', "timeout"), ("timeout = 1.5\n", "timeout")):
        bad = write(d / "bad-limit.toml", _source(url, extra=extra))
        refused(env, host_sentinels, bad, f"sources[0].{key}")


# -- hostile sizes: templates, extends chains, lists ------------------------------------------

TEMPLATES = {
    "string-times-4e9": ("{{ 'A' * 4000000000 }}", "would make a str of 4000000000 items"),
    "list-times-huge": ("{{ ([1] * 100000000)|length }}", "would make a list of 100000000"),
    "huge-power": ("{{ 2 ** 100000000 }}", "would have more than"),
    "nested-loops-with-output": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
        "renders to more than"),
    "doubling-in-a-loop": (
        "{% set ns = namespace(s='A') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s|length }}", "needs more than"),
    "format-width": ("{{ '%999999999d' % 1 }}", "needs more than"),
    "lone-surrogate": ("{{ '\\ud800' }}", "UnicodeEncodeError"),
}


@pytest.mark.parametrize("case", sorted(TEMPLATES))
def test_template_that_would_take_gigabytes_is_refused(
        case: str, env: Env, host_sentinels: sentinels.Sentinels) -> None:
    source, text = TEMPLATES[case]
    d = recipe_dir(env)
    (d / "t.j2").write_text(source)
    started = time.monotonic()
    refused(env, host_sentinels, write(d / "tpl.toml", _files("t.j2", True)), "files[0].src",
            f"template {d / 't.j2'} ", text)
    assert time.monotonic() - started < 30


def test_template_that_runs_for_ever_is_stopped(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """Nested loops with no output: nothing to count, so the time limit (10 s for a recipe's
    templates together) stops them, in validate and in show."""
    d = recipe_dir(env)
    (d / "t.j2").write_text("{% for i in range(100000) %}{% for j in range(100000) %}"
                            "{% endfor %}{% endfor %}")
    recipe = write(d / "slow.toml", _files("t.j2", True))
    started = time.monotonic()
    refused(env, host_sentinels, recipe, "files[0].src", "did not finish rendering within 10 s")
    assert time.monotonic() - started < 30


def test_list_and_show_do_not_hang_on_hostile_recipes(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """``list`` loads every recipe it finds (here: the current directory's); each hostile one is
    a row with its error, and the command ends; ``show`` refuses as validate does."""
    d = recipe_dir(env)
    (d / "slow.j2").write_text("{% for i in range(100000) %}{% for j in range(100000) %}"
                               "{% endfor %}{% endfor %}")
    (d / "big.j2").write_text("{{ 'A' * 4000000000 }}")
    write(d / "slow.toml", _files("slow.j2", True))
    write(d / "big.toml", _files("big.j2", True))
    write(d / "secret.toml", _files(str(host_sentinels.secret)))
    started = time.monotonic()
    r = run(env, "list", cwd=d)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert "did not finish rendering" in rows["slow"]
    assert "would make a str" in rows["big"]
    assert "outside the recipe's directory" in rows["secret"]
    assert time.monotonic() - started < HANG
    no_secret(host_sentinels, r)
    r = run(env, "show", str(d / "secret.toml"))
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    no_secret(host_sentinels, r)


def test_deep_extends_chain_is_an_error_naming_the_chain(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """1,100 recipes, each extending the one before: a clear error, no RecursionError."""
    d = recipe_dir(env)
    write(d / "r0.toml", "")
    for i in range(1, 1101):
        write(d / f"r{i}.toml", f'extends = "r{i - 1}.toml"\n', base=False)
    leaf = d / "r1100.toml"
    for command in ("validate", "show", "build"):
        r = refused(env, host_sentinels, leaf, "extends", "extends chain is longer than 32",
                    f"{leaf} -> {d / 'r1099.toml'}", command=command)
        assert "RecursionError" not in r.stderr
    ok = run(env, "validate", str(d / "r31.toml"))  # 32 recipes: the most allowed
    assert ok.returncode == 0, ok.stderr


BASE = '[base]\ndistro = "debian"\n'


def _packages(prefix: str, n: int) -> str:
    return "packages = [" + ", ".join(f'"{prefix}{i}"' for i in range(n)) + "]\n"


def test_hundred_thousand_packages_is_a_clear_error(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    d = recipe_dir(env)
    recipe = write(d / "many.toml", _packages("p", 100_000) + BASE, base=False)
    for command in ("validate", "build"):
        refused(env, host_sentinels, recipe, "packages", "has 100000 entries",
                "at most 10000", command=command)


def test_packages_summed_over_a_chain_are_limited_too(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """9,000 packages in a parent and 9,000 in its child: each file fits, the recipe does not
    (and merging them is linear: this takes seconds, not hours)."""
    d = recipe_dir(env)
    write(d / "parent.toml", _packages("p", 9000) + BASE, base=False)
    child = write(d / "child.toml", 'extends = "parent.toml"\n' + _packages("q", 9000), base=False)
    refused(env, host_sentinels, child, "packages", "has 18000 entries", "at most 10000")


def test_ten_thousand_bad_packages_list_fifty_problems(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """Every package name invalid: fifty problems and a count of the rest, quickly."""
    d = recipe_dir(env)
    recipe = write(d / "bad.toml", _packages("bad name ", 10_000) + BASE, base=False)
    started = time.monotonic()
    r = refused(env, host_sentinels, recipe, "packages[0]", "9950 more problems")
    assert len(r.stderr.splitlines()) == 51
    assert time.monotonic() - started < 30


# -- real builds: the limits and the digest rule end to end -----------------------------------

def _build_recipe(env: Env, body: str, name: str) -> Path:
    return write(recipe_dir(env) / f"{name}.toml", f'extends = "{BASE_RECIPE}"\n{body}', base=False)


@pytest.mark.integration
def test_build_stops_an_endless_download_and_keeps_nothing(
        env: Env, hostile_server: Hostile, host_sentinels: sentinels.Sentinels) -> None:
    """A build whose source streams for ever: exit 1 on one line naming the source, its recipe
    and max_size; then one that trickles for ever: the same for timeout. Nothing is cached,
    nothing is published."""
    for path, extra, text in (("forever", 'max_size = "1M"\n', "raise max_size"),
                              ("trickle", "timeout = 3\n", "raise timeout")):
        recipe = _build_recipe(env, _source(hostile_server.url(path), extra=extra), "endless")
        r = env.nspawnbuild("build", str(recipe), **NO_PROXY)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        [line] = [x for x in r.stderr.splitlines() if hostile_server.url(path) in x]
        assert f"sources[0] in {recipe}" in line and text in line, r.stderr
        assert leftovers(env.cache, WRONG) == []
        assert not (env.out / "endless").exists() or not any((env.out / "endless").glob("*.tar*"))


@pytest.mark.integration
def test_build_with_a_wrong_local_digest_does_not_print_it(
        env: Env, host_sentinels: sentinels.Sentinels) -> None:
    """A file:// source inside the recipe's directory with a wrong sha256 fails the build
    without printing the file's real digest."""
    d = recipe_dir(env)
    (d / "tool").write_bytes(b"#!/bin/sh\necho local\n")
    recipe = _build_recipe(env, _source((d / "tool").as_uri()), "local-digest")
    r = env.nspawnbuild("build", str(recipe), **NO_PROXY)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sha256 mismatch" in r.stderr and WRONG in r.stderr
    real = sha(b"#!/bin/sh\necho local\n")
    assert real not in r.stdout + r.stderr
    log = env.out / "local-digest" / "build.log"
    assert not log.exists() or real not in log.read_text()
    assert leftovers(env.cache, WRONG) == [] and leftovers(env.cache, real) == []


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_fedora_package_list_never_follows_an_image_symlink_onto_the_host(
        tmp_path: Path, host_sentinels: sentinels.Sentinels, target: str) -> None:
    """A step replaced the rpm database directory with a symlink to a host directory: the
    host's rpm (run as root to list packages) must not create its database there."""
    from nspawnbuild_plugins.fedora import RPM_DBPATH, Fedora

    root = tmp_path / "image"
    db = root / RPM_DBPATH.lstrip("/")
    db.parent.mkdir(parents=True)
    victim = tmp_path / "host-dir"  # a host directory outside the image
    victim.mkdir()
    db.symlink_to(victim if target == "absolute" else os.path.relpath(victim, db.parent))
    try:
        Fedora({"distro": "fedora"}).list_packages(root)
    except Exception as e:  # an error is fine (there is no database); writing on the host is not
        assert "rpm could not read" in str(e), e
    assert list(victim.iterdir()) == []


# -- key files named by features: confined like [[files]] src ---------------------------------

@pytest.mark.parametrize("feature", ["ssh", "users"])
@pytest.mark.parametrize("where", ["absolute", "dotdot", "proc"])
def test_authorized_keys_files_are_confined(env: Env, host_sentinels: sentinels.Sentinels,
                                            feature: str, where: str) -> None:
    """A host file of public-key lines (a host's own authorized_keys) must not be shipped."""
    outside = host_sentinels.top.parent / f"host-keys-{feature}-{where}"
    outside.write_text(f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDecoyDecoyDecoy {host_sentinels.token}\n")
    d = recipe_dir(env)
    name = {"absolute": str(outside), "dotdot": os.path.relpath(outside, d),
            "proc": "/proc/self/environ"}[where]
    body = (f'[features.ssh]\nauthorized_keys_files = ["{name}"]\n' if feature == "ssh" else
            f'[[features.users.accounts]]\nname = "alice"\nauthorized_keys_files = ["{name}"]\n')
    recipe = write(d / "keys.toml", body)
    r = run(env, "validate", str(recipe))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "authorized_keys_files" in r.stderr, r.stderr
    assert str(recipe) in r.stderr and ("outside" in r.stderr or "/proc" in r.stderr), r.stderr
    no_secret(host_sentinels, r)
    nothing_written(env)
