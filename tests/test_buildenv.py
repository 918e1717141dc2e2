"""The build's fixed environment: what a build's processes get, whatever the caller's."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nspawnbuild import buildenv, sandbox
from nspawnbuild.steplog import StepLog

#: what the child prints: its umask, environment, host and domain name
PROBE = ["sh", "-c", "umask; echo ---; env | sort; echo ---; uname -n; "
         "cat /proc/sys/kernel/domainname"]


@pytest.fixture
def hostile_caller(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A caller with umask 077 and an environment full of what must not reach a build."""
    for key, value in {"TZ": "Pacific/Kiritimati", "LC_ALL": "C", "LANG": "fr_CH.UTF-8",
                       "LANGUAGE": "fr_CH:fr", "HOME": "/nonexistent/caller",
                       "REPROTEST_CAPTURE_ENVIRONMENT": "i_capture_the_environment",
                       "LD_PRELOAD": "/nonexistent/libfake.so", "TMPDIR": "/nonexistent",
                       "PATH": "/nonexistent/bin:" + os.environ["PATH"],
                       "http_proxy": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(key, value)
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def probe(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[str, dict[str, str], str]:
    with StepLog(tmp_path / "probe.log") as log:
        log.run(PROBE, step="probe", env=env)
    text = (tmp_path / "probe.log").read_text()
    body = text.split("\n", 1)[1]  # the log's header line
    umask, envtext, names = body.split("---\n")
    env_seen = dict(line.split("=", 1) for line in envtext.splitlines())
    return umask.strip(), env_seen, names


@pytest.mark.skipif(os.geteuid() != 0, reason="a UTS namespace needs root, as builds do")
def test_a_build_step_gets_the_fixed_environment_not_the_callers(
        tmp_path: Path, hostile_caller: None) -> None:
    umask, env, names = probe(tmp_path, {"SOURCE_DATE_EPOCH": "1704067200"})
    assert umask == "0022"
    # the whole environment: the fixed one, the proxy, what the caller of run() added; sh adds
    # PWD (and, on some shells, SHLVL and _)
    assert {k: v for k, v in env.items() if k not in ("PWD", "SHLVL", "_")} == {
        **buildenv.FIXED, "http_proxy": "http://127.0.0.1:9", "SOURCE_DATE_EPOCH": "1704067200"}
    assert names.split() == [buildenv.HOSTNAME, buildenv.DOMAINNAME]
    # the host's own name is untouched: the child had a UTS namespace of its own
    assert Path("/proc/sys/kernel/hostname").read_text().strip() == socket.gethostname()


def test_environment_is_fixed_plus_proxies_plus_what_the_caller_adds() -> None:
    caller = {"HOME": "/home/someone", "TZ": "Asia/Tokyo", "https_proxy": "http://127.0.0.1:3128",
              "LC_ALL": "de_DE.UTF-8", "FOO": "bar"}
    env = buildenv.environment({"HOME": "/tmp/dnf-home"}, caller=caller)
    assert env == {**buildenv.FIXED, "https_proxy": "http://127.0.0.1:3128",
                   "HOME": "/tmp/dnf-home"}
    assert env["TZ"] == "UTC" and env["LC_ALL"] == "C.UTF-8" and "FOO" not in env


def test_steps_in_the_image_get_the_fixed_locale_time_zone_and_the_epoch(tmp_path: Path) -> None:
    argv = sandbox.nspawn_argv(tmp_path, "m", ["true"], env={"SOURCE_DATE_EPOCH": "1704067200"},
                               uid_base=0x70000000)
    env = [a.removeprefix("--setenv=") for a in argv if a.startswith("--setenv=")]
    assert env == ["DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8", "LC_ALL=C.UTF-8",
                   "SOURCE_DATE_EPOCH=1704067200", "TZ=UTC"]
