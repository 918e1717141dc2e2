"""Signing a published set and checking it, with the real gpg (throwaway keys, no network).

Key resolution (a key file or a key of a keyring, and every way it can fail: exit 2, the key,
where it was looked up, how to fix it), the options and variables that name it, the recipe's
``[output] sign`` (not in the recipe's digest), and ``nspawnbuild verify`` on hand-made sets:
a directory, and the same set served on a loopback HTTP server.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_hostile_install import NAME, make_artifact

from conftest import BIN, ROOT
from nspawnbuild import signing
from nspawnbuild.cli import main
from nspawnbuild.errors import RecipeError
from nspawnbuild.options import SIGN_KEY_VARIABLE, SIGN_PASSPHRASE_VARIABLE, Options
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild.signing import SIGNATURE, Origin, classify, resolve, sign, verify_signature
from nspawnbuild.verify import base_url, default_keyring

CLI = Origin(Path("--sign"))


def gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["gpg", "--homedir", str(home), "--batch", *args], input=stdin,
                          capture_output=True, check=True)
    return done.stdout


@dataclass(frozen=True)
class Key:
    """A throwaway key: its keyring, fingerprint, exported secret key and public keyring."""

    home: Path
    fingerprint: str
    secret: Path
    public: Path


def make_key(top: Path, name: str, passphrase: str = "") -> Key:
    home = top / f"{name}-home"
    home.mkdir(mode=0o700)
    uid = f"{name} <{name}@example.invalid>"
    gpg(home, "--passphrase", passphrase, "--pinentry-mode", "loopback", "--quick-gen-key", uid,
        "ed25519", "sign", "never")
    fpr = next(line.split(":")[9] for line in gpg(home, "--with-colons", "--list-secret-keys")
               .decode().splitlines() if line.startswith("fpr:"))
    secret, public = top / f"{name}.asc", top / f"{name}.pub.gpg"
    secret.write_bytes(gpg(home, "--pinentry-mode", "loopback", "--passphrase", passphrase,
                           "--armor", "--export-secret-keys", fpr))
    public.write_bytes(gpg(home, "--export", fpr))
    return Key(home, fpr, secret, public)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Key]]:
    top = tmp_path_factory.mktemp("keys")
    made = {"a": make_key(top, "alice"), "b": make_key(top, "bob"),
            "p": make_key(top, "pat", passphrase="s3cret")}
    (top / "pat.pass").write_text("s3cret\n")
    yield made
    for k in made.values():
        subprocess.run(["gpgconf", "--homedir", str(k.home), "--kill", "all"], check=False)


def signed_set(tmp: Path, key: Key) -> Path:
    """A hand-made artifact directory with SHA256SUMS.gpg made by ``key``'s secret key file."""
    art = make_artifact(tmp / "set")
    found = resolve(str(key.secret), CLI, base=tmp, homedir=None)
    sign(found, art / "SHA256SUMS", art / SIGNATURE)
    return art


# -- which key a value names ------------------------------------------------------------------

def test_an_existing_file_is_a_key_file_and_anything_else_a_key_id(tmp_path: Path) -> None:
    (tmp_path / "k.asc").write_text("x")
    assert classify("k.asc", tmp_path) == tmp_path / "k.asc"
    assert classify(str(tmp_path / "k.asc"), Path("/")) == tmp_path / "k.asc"
    assert classify("images@example.invalid", tmp_path) is None
    assert classify("0123456789ABCDEF0123456789ABCDEF01234567", tmp_path) is None
    assert classify("Images Team <images@example.invalid>", tmp_path) is None
    for typo in ("missing.asc", "keys/ci", "ci.key", "./k.gpg"):
        with pytest.raises(ValueError, match="no key file"):
            classify(typo, tmp_path)
    with pytest.raises(ValueError, match="not a regular file"):
        classify(str(tmp_path), Path("/"))


def test_a_key_file_and_a_key_of_a_keyring_resolve_to_the_same_fingerprint(
        keys: dict[str, Key], tmp_path: Path) -> None:
    a = keys["a"]
    by_file = resolve(str(a.secret), CLI, base=tmp_path, homedir=None)
    assert (by_file.fingerprint, by_file.file, by_file.homedir) == (a.fingerprint, a.secret, None)
    for spec in (a.fingerprint, "alice@example.invalid", a.fingerprint[-16:]):
        by_id = resolve(spec, CLI, base=tmp_path, homedir=a.home)
        assert (by_id.fingerprint, by_id.file, by_id.homedir) == (a.fingerprint, None, a.home)
        assert by_id.user_id == "alice <alice@example.invalid>"
    assert by_file.state() == by_id.state()  # how it is named does not re-sign


def problem(e: pytest.ExceptionInfo[RecipeError]) -> str:
    assert e.value.exit_code == 2
    return str(e.value)


def test_a_key_that_is_not_there_says_which_where_and_how(keys: dict[str, Key],
                                                          tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as e:
        resolve("nobody@example.invalid", CLI, base=tmp_path, homedir=keys["a"].home)
    text = problem(e)
    assert "--sign: signing key 'nobody@example.invalid': no secret key in the keyring " \
           f"{keys['a'].home}" in text
    assert "--list-secret-keys" in text and "gpg --import" in text and "export-secret-keys" in text
    with pytest.raises(RecipeError) as e:
        resolve("nobody@example.invalid", CLI, base=tmp_path, homedir=tmp_path / "no-such")
    assert "does not exist" in problem(e) and "GNUPGHOME" in problem(e)
    assert not (tmp_path / "no-such").exists()  # gpg was not let create it
    with pytest.raises(RecipeError) as e:
        resolve("ci-key.asc", Origin(Path(SIGN_KEY_VARIABLE)), base=tmp_path, homedir=None)
    assert problem(e).startswith(f"{SIGN_KEY_VARIABLE}: signing key 'ci-key.asc': no key file "
                                 f"{tmp_path / 'ci-key.asc'}")


def test_a_public_key_or_garbage_is_no_signing_key(keys: dict[str, Key], tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as e:
        resolve(str(keys["a"].public), CLI, base=tmp_path, homedir=None)
    assert "no secret key in the key file" in problem(e)
    assert "a secret key, not a public one" in problem(e)
    (tmp_path / "junk.asc").write_text("not a key\n")
    with pytest.raises(RecipeError) as e:
        resolve(str(tmp_path / "junk.asc"), CLI, base=tmp_path, homedir=None)
    assert "cannot import" in problem(e)


def test_a_user_id_that_matches_two_keys_is_ambiguous(keys: dict[str, Key],
                                                       tmp_path: Path) -> None:
    home = tmp_path / "both"
    home.mkdir(mode=0o700)
    for k in (keys["a"], keys["b"]):
        gpg(home, "--import", str(k.secret))
    try:
        with pytest.raises(RecipeError) as e:
            resolve("example.invalid", CLI, base=tmp_path, homedir=home)
        assert "2 secret keys" in problem(e) and "fingerprint" in problem(e)
        assert resolve(keys["b"].fingerprint, CLI, base=tmp_path,
                       homedir=home).fingerprint == keys["b"].fingerprint
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def test_a_key_with_a_passphrase_needs_the_passphrase_file(keys: dict[str, Key],
                                                          tmp_path: Path) -> None:
    p = keys["p"]
    with pytest.raises(RecipeError) as e:
        resolve(str(p.secret), CLI, base=tmp_path, homedir=None)
    assert "cannot sign" in problem(e) and "--sign-passphrase-file FILE" in problem(e)
    assert SIGN_PASSPHRASE_VARIABLE in problem(e)
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    with pytest.raises(RecipeError) as e:
        resolve(str(p.secret), CLI, base=tmp_path, homedir=None, passphrase_file=wrong)
    assert "wrong passphrase" in problem(e)
    right = p.secret.parent / "pat.pass"
    found = resolve(str(p.secret), CLI, base=tmp_path, homedir=None, passphrase_file=right)
    art = make_artifact(tmp_path / "set")
    sign(found, art / "SHA256SUMS", art / SIGNATURE)
    sums = (art / "SHA256SUMS").read_bytes()
    assert verify_signature(sums, (art / SIGNATURE).read_bytes(), p.public.read_bytes()).good


def test_the_private_gnupghome_is_0700_outside_out_and_gone_afterwards(
        keys: dict[str, Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Path, int]] = []
    real = signing.private_gnupghome

    @contextlib.contextmanager
    def spy() -> Iterator[Path]:
        with real() as home:
            seen.append((home, home.stat().st_mode & 0o777))
            yield home

    monkeypatch.setattr(signing, "private_gnupghome", spy)
    art = signed_set(tmp_path, keys["a"])
    assert len(seen) == 2  # the trial when the key is found, the signature itself
    for home, mode in seen:
        assert mode == 0o700 and not home.is_relative_to(tmp_path) and not home.exists()
    assert (art / SIGNATURE).stat().st_size > 0


def test_private_gnupghome_removes_itself_and_its_agent(keys: dict[str, Key]) -> None:
    with signing.private_gnupghome() as home:
        assert home.stat().st_mode & 0o777 == 0o700
        gpg(home, "--import", str(keys["a"].secret))
        gpg(home, "--pinentry-mode", "loopback", "--detach-sign", "--output", "-",
            stdin=b"x")  # starts a gpg-agent for this home
    assert not home.exists()
    agents = subprocess.run(["pgrep", "-af", f"gpg-agent.*{home}"], capture_output=True,
                            text=True).stdout
    assert not agents.strip(), agents


# -- what signs a run: options, variables, the recipe -----------------------------------------

def test_sign_comes_from_the_option_then_the_variable_then_the_recipe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {SIGN_KEY_VARIABLE: "ci.asc", SIGN_PASSPHRASE_VARIABLE: "pass",
           "GNUPGHOME": str(tmp_path / "g")}
    s = Options.from_environment(env).signing
    assert (s.key, s.origin, s.disabled) == ("ci.asc", SIGN_KEY_VARIABLE, False)
    assert s.passphrase_file == tmp_path / "pass" and s.gnupghome == tmp_path / "g"
    assert s.base == tmp_path
    s = Options.from_environment(env, sign="KEYID", sign_passphrase_file="p2").signing
    assert (s.key, s.origin, s.passphrase_file) == ("KEYID", "--sign", tmp_path / "p2")
    assert Options.from_environment(env, sign="K", sign_origin="sign=").signing.origin == \
        "sign="  # doit build recipe=NAME sign=KEY
    s = Options.from_environment(env, sign="KEYID", no_sign=True).signing
    assert (s.key, s.disabled) == (None, True)
    s = Options.from_environment({SIGN_KEY_VARIABLE: "", "HOME": str(tmp_path)}).signing
    assert s.key is None and s.passphrase_file is None  # an empty variable is no variable
    assert Options.from_environment({"GNUPGHOME": ""}).signing.gnupghome == \
        Path.home() / ".gnupg"


def test_build_parses_sign_options() -> None:
    from nspawnbuild.cli import make_parser

    args = make_parser().parse_args(["build", "--sign", "K", "--sign-passphrase-file", "F",
                                     "--no-sign", "x"])
    assert (args.sign, args.sign_passphrase_file, args.no_sign) == ("K", "F", True)


def write_recipe(path: Path, sign: str | None) -> Path:
    path.write_text(f'extends = "{ROOT / "recipes" / "debian-base.toml"}"\nname = "signed"\n'
                    + ("" if sign is None else f'[output]\nsign = "{sign}"\n'))
    return path


def test_the_recipes_sign_key_is_not_part_of_what_the_image_is(tmp_path: Path) -> None:
    plain = load_recipe(write_recipe(tmp_path / "plain.toml", None))
    signed = load_recipe(write_recipe(tmp_path / "signed.toml", "images@example.invalid"))
    assert signed.output.sign == "images@example.invalid"
    assert signed.output.sign_dir == tmp_path
    assert signed.digest() == plain.digest()
    assert signed.output.as_dict() == plain.output.as_dict()
    assert signed.data["output"]["sign"] == "images@example.invalid"  # `show` still shows it


def test_a_recipes_key_file_must_be_beside_it(keys: dict[str, Key], tmp_path: Path) -> None:
    from nspawnbuild import pipeline

    recipe = load_recipe(write_recipe(tmp_path / "r.toml", str(keys["a"].secret)))
    options = Options.from_environment({"GNUPGHOME": str(tmp_path / "none")})
    with pytest.raises(RecipeError) as e:
        pipeline.signing_key(options, recipe)
    text = problem(e)
    assert text.startswith(f"{tmp_path / 'r.toml'}:4: key 'output.sign': signing key file:")
    assert "outside" in text and "--sign FILE" in text
    shutil.copy(keys["a"].secret, tmp_path / "mine.asc")
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", "mine.asc"))
    assert pipeline.signing_key(options, recipe).fingerprint == keys["a"].fingerprint  # type: ignore[union-attr]
    # --no-sign wins over the recipe, --sign too
    assert pipeline.signing_key(Options.from_environment({}, no_sign=True), recipe) is None


def test_build_with_a_key_that_cannot_sign_exits_2_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GNUPGHOME", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir(mode=0o700)
    out, work = tmp_path / "o", tmp_path / "w"
    with pytest.raises(SystemExit) as done:
        main(["build", "--out", str(out), "--work-dir", str(work), "--cache-dir",
              str(tmp_path / "c"), "--sign", "nobody@example.invalid",
              str(ROOT / "recipes" / "debian-base.toml")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --sign: signing key 'nobody@example.invalid': no secret key in "
                          f"the keyring {tmp_path / 'empty'}"), err
    assert "Traceback" not in err
    assert not out.exists() and not work.exists()
    subprocess.run(["gpgconf", "--homedir", str(tmp_path / "empty"), "--kill", "all"], check=False)


# -- verify -----------------------------------------------------------------------------------

def run_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nspawnbuild"), "verify", *args], capture_output=True,
                          text=True, timeout=300)


def test_verify_a_directory_good_tampered_other_key_unsigned(keys: dict[str, Key],
                                                             tmp_path: Path) -> None:
    art = signed_set(tmp_path, keys["a"])
    pub = str(keys["a"].public)
    r = run_verify(str(art), "--keyring", pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"signature  good: SHA256SUMS signed by {keys['a'].fingerprint}" in r.stdout
    assert f"OK         {NAME}.nspawn" in r.stdout and "all 4 files match" in r.stdout

    r = run_verify(str(art), "--keyring", str(keys["b"].public))
    assert r.returncode == 1 and "not in the keyring" in r.stdout, r.stdout + r.stderr
    assert "verification failed: the signature" in r.stderr

    for tamper, expect in (("sums", "BAD signature"), ("nspawn", f"MISMATCH   {NAME}.nspawn"),
                           ("tarball", f"MISMATCH   {NAME}.tar.zst"),
                           ("missing", f"MISSING    {NAME}.nspawn")):
        copy = tmp_path / tamper
        shutil.copytree(art, copy)
        if tamper == "sums":
            (copy / "SHA256SUMS").write_text((copy / "SHA256SUMS").read_text() + "\n")
        elif tamper == "nspawn":
            (copy / f"{NAME}.nspawn").write_text("[Exec]\nPrivateUsers=no\n")
        elif tamper == "tarball":
            with open(copy / f"{NAME}.tar.zst", "ab") as fh:
                fh.write(b"\0")
        else:
            (copy / f"{NAME}.nspawn").unlink()
        r = run_verify(str(copy), "--keyring", pub)
        assert r.returncode == 1, (tamper, r.stdout, r.stderr)
        assert expect in r.stdout, (tamper, r.stdout)
        assert "Traceback" not in r.stderr

    (art / SIGNATURE).unlink()
    r = run_verify(str(art), "--keyring", pub)
    assert r.returncode == 2 and "the set is not signed (sign it with build --sign KEY)" in r.stderr
    r = run_verify(str(tmp_path / "nothing"), "--keyring", pub)
    assert r.returncode == 2 and "no such directory" in r.stderr
    r = run_verify(str(tmp_path / "tarball"), "--keyring", str(keys["a"].secret))
    assert r.returncode == 2 and "armored" in r.stderr and "gpg --dearmor" in r.stderr


def test_the_default_keyring_is_the_one_importd_uses(tmp_path: Path) -> None:
    etc_pgp, etc, usr = tmp_path / "etc.pgp", tmp_path / "etc.gpg", tmp_path / "usr.gpg"
    with pytest.raises(RecipeError):
        default_keyring((etc_pgp, etc, usr))
    usr.write_bytes(b"x")
    assert default_keyring((etc_pgp, etc, usr)) == usr
    etc.write_bytes(b"x")  # /etc's replaces the vendor's, as in systemd 252's pull-common.c
    assert default_keyring((etc_pgp, etc, usr)) == etc


def test_base_url_of_a_directory_or_a_file_in_it() -> None:
    assert base_url("http://127.0.0.1:8/a/NAME/") == "http://127.0.0.1:8/a/NAME/"
    assert base_url("http://127.0.0.1:8/a/NAME") == "http://127.0.0.1:8/a/NAME/"
    assert base_url("http://127.0.0.1:8/a/NAME/NAME.tar.xz") == "http://127.0.0.1:8/a/NAME/"
    assert base_url("https://h.invalid/x/SHA256SUMS") == "https://h.invalid/x/"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """tmp_path/www on a loopback HTTP server: (the directory, its URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_verify_a_url(keys: dict[str, Key], tmp_path: Path, served: tuple[Path, str]) -> None:
    www, url = served
    art = signed_set(tmp_path, keys["a"])
    shutil.copytree(art, www / "good")
    pub = str(keys["a"].public)
    for target in (f"{url}/good/", f"{url}/good", f"{url}/good/{NAME}.tar.zst"):
        r = run_verify(target, "--keyring", pub)
        assert r.returncode == 0, (target, r.stdout, r.stderr)
        assert "all 4 files match" in r.stdout
    r = run_verify(f"file://{www / 'good'}", "--keyring", pub)
    assert r.returncode == 0, r.stdout + r.stderr

    shutil.copytree(art, www / "bad")
    (www / "bad" / f"{NAME}.nspawn").write_text("[Exec]\nPrivateUsers=no\n")
    r = run_verify(f"{url}/bad/", "--keyring", pub)
    assert r.returncode == 1 and f"MISMATCH   {NAME}.nspawn" in r.stdout, r.stdout + r.stderr

    shutil.copytree(art, www / "gone")
    (www / "gone" / "manifest.json").unlink()
    r = run_verify(f"{url}/gone/", "--keyring", pub)
    assert r.returncode == 1 and "MISSING    manifest.json: cannot download" in r.stdout
    assert "HTTP 404" in r.stdout

    shutil.copytree(art, www / "unsigned")
    (www / "unsigned" / SIGNATURE).unlink()
    r = run_verify(f"{url}/unsigned/", "--keyring", pub)
    assert r.returncode == 2 and "the set is not signed" in r.stderr, r.stderr
    r = run_verify(f"{url}/nothing/", "--keyring", pub)
    assert r.returncode == 2 and "no SHA256SUMS there" in r.stderr, r.stderr

    shutil.copytree(art, www / "huge")
    (www / "huge" / "SHA256SUMS").write_bytes(b"0" * ((1 << 20) + 1))
    r = run_verify(f"{url}/huge/", "--keyring", pub)
    assert r.returncode == 1 and "larger than 1048576 bytes" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
