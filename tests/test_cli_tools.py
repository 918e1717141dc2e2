"""show, schema, clean and install: the everyday commands around a build."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
from test_integration_build import NAME, built  # noqa: F401  (fixture)

from conftest import BIN, ROOT, Env


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nspawnbuild"), *args], cwd=cwd, capture_output=True,
                          text=True)


def test_show_prints_the_resolved_recipe_as_toml() -> None:
    r = run("show", "postgres")
    assert r.returncode == 0, r.stderr
    doc = tomllib.loads(r.stdout)
    assert doc["name"] == "postgres" and doc["base"]["distro"] == "debian"  # from debian-base
    assert doc["packages"] == ["ca-certificates", "less", "procps", "iproute2", "postgresql"]
    assert "extends" not in doc


def test_committed_schema_is_current_and_the_examples_match_it(tmp_path: Path) -> None:
    r = run("schema", "--output", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    committed = (ROOT / "schema" / "recipe.schema.json").read_text()
    assert (tmp_path / "s.json").read_text() == committed, \
        "schema/recipe.schema.json is stale: run `nspawnbuild schema --output schema/recipe.schema.json`"
    schema = json.loads(committed)
    for recipe in (ROOT / "recipes").glob("*.toml"):
        text = recipe.read_text()
        assert text.startswith("#:schema ../schema/recipe.schema.json\n"), recipe
        jsonschema.Draft202012Validator(schema).validate(tomllib.loads(text))
    bad = {"base": {"distro": "debain"}, "pakages": []}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(bad))


def test_clean_removes_one_recipes_trees(tmp_path: Path) -> None:
    for d in ("out/a", "out/b", ".nspawnbuild/recipes/a", ".nspawnbuild/recipes/b"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "a.toml").write_text('[base]\ndistro = "debian"\n')
    r = run("clean", str(tmp_path / "a.toml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "out/a").exists() and not (tmp_path / ".nspawnbuild/recipes/a").exists()
    assert (tmp_path / "out/b").exists() and (tmp_path / ".nspawnbuild/recipes/b").exists()


@pytest.mark.integration
def test_install_into_a_root(built: Env, tmp_path: Path) -> None:  # noqa: F811
    art = built.out / NAME
    root = tmp_path / "host"
    r = run("install", str(art), "--root", str(root), "--enable")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "var/lib/machines" / NAME / "usr/lib/systemd/systemd").is_file()
    assert (root / "etc/systemd/nspawn" / f"{NAME}.nspawn").read_text() == \
        (art / f"{NAME}.nspawn").read_text()
    assert (root / "etc/systemd/system" / f"systemd-nspawn@{NAME}.service.d"
            / "50-nspawnbuild.conf").is_file()
    assert (root / "etc/systemd/system/machines.target.wants" /
            f"systemd-nspawn@{NAME}.service").is_symlink()

    again = run("install", str(art), "--root", str(root))
    assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr
    assert run("install", str(art), "--root", str(root), "--force").returncode == 0
    other = run("install", str(art), "--root", str(root), "--name", "web1")
    assert other.returncode == 0 and (root / "var/lib/machines/web1/etc").is_dir()
    assert (root / "etc/systemd/nspawn/web1.nspawn").is_file()


@pytest.mark.integration
def test_install_refuses_damaged_artifacts(built: Env, tmp_path: Path) -> None:  # noqa: F811
    art = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(built.out / NAME), str(art)], check=True)
    with open(art / f"{NAME}.nspawn", "a") as fh:
        fh.write("Bind=/\n")
    r = run("install", str(art), "--root", str(tmp_path / "host"))
    assert r.returncode == 1 and "does not match SHA256SUMS" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "host" / "var/lib/machines" / NAME).exists()
    r = run("install", str(tmp_path), "--root", str(tmp_path / "host"))
    assert r.returncode == 2 and "no SHA256SUMS here" in r.stderr


@pytest.mark.integration
def test_parallel_build_of_two_recipes_reports_json(env: Env) -> None:
    from test_integration_build import write_recipe

    a = write_recipe(env.tmp / "para-a.toml", '[[post]]\nrun = "echo a > /etc/which"\n')
    b = write_recipe(env.tmp / "para-b.toml", '[[post]]\nrun = "echo b > /etc/which"\n')
    r = env.nspawnbuild("build", str(a), str(b), "-j", "2", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    summaries = json.loads(r.stdout)  # nothing but the JSON on stdout
    assert [s["name"] for s in summaries] == ["para-a", "para-b"]
    for s in summaries:
        files = {f["file"]: f for f in s["files"]}
        assert files[s["tarball"]]["sha256"] and files["manifest.json"]["size"] > 0
        assert s["tarball"].endswith(".tar.gz") and s["pull_min_systemd"] is None
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=s["dir"],
                               capture_output=True)
        assert check.returncode == 0


@pytest.mark.integration
def test_inspect_and_diff(built: Env, env: Env) -> None:  # noqa: F811
    from test_integration_build import write_recipe

    art = built.out / NAME
    r = run("inspect", str(art), "--top", "3")
    assert r.returncode == 0, r.stderr
    assert "largest packages (top 3):" in r.stdout and "█" in r.stdout
    assert "\n  /usr " in r.stdout and "PrivateUsers=pick" in r.stdout

    same = run("diff", str(art), str(art), "--exit-code")
    assert same.returncode == 0 and same.stdout.count("(same)") == 3, same.stdout

    variant = write_recipe(env.tmp / "variant.toml", f'name = "{NAME}"\n[[post]]\n'
                           'run = "echo hi > /etc/motd-extra"\n[nspawn.Exec]\nLimitNOFILE = 4096\n')
    assert env.nspawnbuild("build", str(variant)).returncode == 0
    d = run("diff", str(art), str(env.out / NAME), "--exit-code")
    assert d.returncode == 1, d.stdout
    assert "\n  /etc " in d.stdout and "+1" in d.stdout
    assert "  + LimitNOFILE=4096" in d.stdout
    assert "packages:\n  (same)" in d.stdout


@pytest.mark.integration
def test_out_dir_serves_machinectl_pull_tar(env: Env, tmp_path: Path) -> None:
    """out/NAME/ as it is, on a loopback web server, pulled by the real systemd-pull."""
    import functools
    import http.server
    import shutil
    import threading

    from test_integration_build import write_recipe

    recipe = write_recipe(env.tmp / "pulled.toml", 'name = "pulled"\n[output]\n'
                          'compression = "xz"\nlevel = 0\n')  # systemd 252 cannot pull zstd
    r = env.nspawnbuild("build", str(recipe), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    served = tmp_path / "served"
    shutil.copytree(env.out / "pulled", served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/pulled.tar.xz"
    try:
        root = tmp_path / "machines"
        root.mkdir()
        pull = subprocess.run(["/lib/systemd/systemd-pull", "tar", "--verify=checksum",
                               f"--image-root={root}", url, "pulled"],
                              capture_output=True, text=True, timeout=300)
        assert pull.returncode == 0, pull.stderr
        assert (root / "pulled/usr/lib/systemd/systemd").is_file()
        assert (root / "pulled.nspawn").read_text() == (served / "pulled.nspawn").read_text()

        with open(served / "pulled.nspawn", "a") as fh:  # tampered: the pull must refuse it
            fh.write("[Files]\nBind=/\n")
        other = tmp_path / "machines2"
        other.mkdir()
        bad = subprocess.run(["/lib/systemd/systemd-pull", "tar", "--verify=checksum",
                              f"--image-root={other}", url, "pulled"],
                             capture_output=True, text=True, timeout=300)
        assert bad.returncode != 0 and not (other / "pulled.nspawn").exists()
    finally:
        server.shutdown()


@pytest.mark.integration
def test_shell_runs_a_command_in_the_built_image(built: Env, tmp_path: Path) -> None:  # noqa: F811
    art = built.out / NAME
    r = subprocess.run([str(BIN / "nspawnbuild"), "shell", "--work-dir", str(tmp_path / "w"),
                        str(art), "--", "sh", "-c", "cat /etc/hostname; exit 7"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 7, r.stderr
    assert r.stdout == f"{NAME}\n"
    assert not (Path("/run/systemd/nspawn") / f"{NAME}.nspawn").exists()
    assert list((tmp_path / "w" / "run").iterdir()) == []  # the scratch image is gone
