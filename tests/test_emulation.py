"""Building and installing an image of another architecture: the host check against a fake
binfmt_misc directory (each way it can be missing, native, good), the messages that say what
to install, where build and install call it, and the machine name the manifest records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_hostile_install import make_artifact, write_sums

from nspawnbuild import emulation, install
from nspawnbuild.commands.build import check_hosts
from nspawnbuild.emulation import EmulatorMissing, Handler, check, elf_header
from nspawnbuild.errors import RecipeError
from nspawnbuild.recipe.load import load_recipe
from nspawnbuild_plugins.alpine import Alpine
from nspawnbuild_plugins.debian import Debian

# as bookworm's qemu-user-static registers them (cat /proc/sys/fs/binfmt_misc/qemu-aarch64)
AARCH64_MAGIC = "7f454c460201010000000000000000000200b700"
AARCH64_MASK = "ffffffffffffff00fffffffffffffffffeffffff"
ARM_MAGIC = "7f454c4601010100000000000000000002002800"
ARM_MASK = "ffffffffffffff00fffffffffffffffffeffffff"
RISCV64_MAGIC = "7f454c460201010000000000000000000200f300"


def handler_text(magic: str, mask: str = AARCH64_MASK, *, enabled: bool = True,
                 flags: str = "PF", interpreter: str = "/usr/libexec/qemu-binfmt/x-binfmt-P") -> str:
    return (("enabled" if enabled else "disabled") + f"\ninterpreter {interpreter}\n"
            f"flags: {flags}\noffset 0\nmagic {magic}\nmask {mask}\n")


def binfmt(tmp_path: Path, handlers: dict[str, str], status: str = "enabled") -> Path:
    """A directory shaped like /proc/sys/fs/binfmt_misc with ``handlers`` (name: text)."""
    d = tmp_path / "binfmt_misc"
    d.mkdir()
    (d / "status").write_text(status + "\n")
    (d / "register").write_text("")
    for name, text in handlers.items():
        (d / name).write_text(text)
    return d


@pytest.fixture
def interpreter(tmp_path: Path) -> str:
    path = tmp_path / "qemu-aarch64-static"
    path.write_bytes(b"\x7fELF")
    return str(path)


# -- the check --------------------------------------------------------------------------------


def test_binfmt_misc_not_mounted_says_how_to_mount_it_and_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(EmulatorMissing) as e:
        check("aarch64", "x86_64", binfmt_dir=tmp_path / "absent")
    text = str(e.value)
    assert e.value.exit_code == 2
    assert "to build an image for aarch64 on this x86_64 host" in text
    assert f"binfmt_misc is not mounted at {tmp_path / 'absent'}" in text
    assert "mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc" in text
    assert "apt-get install qemu-user-static binfmt-support" in text
    assert "update-binfmts --enable qemu-aarch64" in text


def test_binfmt_misc_switched_off_says_how_to_switch_it_on(tmp_path: Path,
                                                           interpreter: str) -> None:
    d = binfmt(tmp_path, {"qemu-aarch64": handler_text(AARCH64_MAGIC, interpreter=interpreter)},
               status="disabled")
    with pytest.raises(EmulatorMissing, match=r"binfmt_misc is disabled on this host; turn it on "
                                              rf"with: echo 1 > {d}/status"):
        check("aarch64", "x86_64", binfmt_dir=d)


def test_no_handler_for_the_machine_names_the_packages_and_the_handler(tmp_path: Path,
                                                                       interpreter: str) -> None:
    # an arm handler is there, but it does not serve aarch64 (another ELF machine)
    d = binfmt(tmp_path, {"qemu-arm": handler_text(ARM_MAGIC, ARM_MASK, interpreter=interpreter)})
    with pytest.raises(EmulatorMissing) as e:
        check("aarch64", "x86_64", binfmt_dir=d)
    assert ("no binfmt_misc handler for aarch64 is registered; install qemu-user with: "
            "apt-get install qemu-user-static binfmt-support; then: "
            "update-binfmts --enable qemu-aarch64") in str(e.value)


def test_a_disabled_handler_says_how_to_enable_it(tmp_path: Path, interpreter: str) -> None:
    d = binfmt(tmp_path, {"qemu-aarch64": handler_text(AARCH64_MAGIC, enabled=False,
                                                       interpreter=interpreter)})
    with pytest.raises(EmulatorMissing) as e:
        check("aarch64", "x86_64", binfmt_dir=d)
    assert ("its binfmt_misc handler qemu-aarch64 is disabled; enable it with: "
            "update-binfmts --enable qemu-aarch64") in str(e.value)


def test_a_handler_without_the_f_flag_is_refused_and_the_fix_named(tmp_path: Path,
                                                                   interpreter: str) -> None:
    d = binfmt(tmp_path, {"qemu-aarch64": handler_text(AARCH64_MAGIC, flags="P",
                                                       interpreter="/usr/bin/qemu-aarch64")})
    with pytest.raises(EmulatorMissing) as e:
        check("aarch64", "x86_64", binfmt_dir=d)
    text = str(e.value)
    assert "handler qemu-aarch64 is registered without the F flag (flags: P)" in text
    assert "look for its interpreter /usr/bin/qemu-aarch64 inside the image" in text
    assert "apt-get install qemu-user-static binfmt-support" in text
    assert ("update-binfmts --disable qemu-aarch64 && update-binfmts --enable qemu-aarch64"
            in text)


def test_an_f_handler_whose_interpreter_is_gone_still_runs_but_says_so(tmp_path: Path) -> None:
    """With F the kernel opened the interpreter when the handler was registered and keeps it
    (a container sharing the host's kernel sees the handler, not the host's file): a note,
    not a refusal."""
    gone = str(tmp_path / "removed" / "qemu-aarch64")
    d = binfmt(tmp_path, {"qemu-aarch64": handler_text(AARCH64_MAGIC, interpreter=gone)})
    runner = check("aarch64", "x86_64", binfmt_dir=d)
    assert runner.handler == "qemu-aarch64" and not runner.native
    assert len(runner.notes) == 1
    assert f"the interpreter {gone} of binfmt_misc handler qemu-aarch64 does not exist" \
        in runner.notes[0]
    assert "apt-get install --reinstall qemu-user-static" in runner.notes[0]


def test_a_good_handler_is_found_by_its_magic_whatever_its_name(tmp_path: Path,
                                                                interpreter: str) -> None:
    d = binfmt(tmp_path, {
        "aarch64-by-another-tool": handler_text(AARCH64_MAGIC, interpreter=interpreter),
        "qemu-riscv64": handler_text(RISCV64_MAGIC, interpreter=interpreter),
        "python3.11": "enabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\n"
                      "magic a70d0d0a\n",
    })
    runner = check("aarch64", "x86_64", binfmt_dir=d)
    assert (runner.handler, runner.interpreter, runner.notes) == \
        ("aarch64-by-another-tool", interpreter, ())
    assert "run under emulation: binfmt_misc handler aarch64-by-another-tool" in runner.describe()
    assert check("riscv64", "x86_64", binfmt_dir=d).handler == "qemu-riscv64"


def test_a_good_handler_wins_over_a_broken_one_for_the_same_machine(tmp_path: Path,
                                                                    interpreter: str) -> None:
    d = binfmt(tmp_path, {
        "a-old": handler_text(ARM_MAGIC, ARM_MASK, flags="", interpreter=interpreter),
        "qemu-arm": handler_text(ARM_MAGIC, ARM_MASK, interpreter=interpreter),
    })
    for machine in ("armv7l", "armv6l", "armv5tel"):  # Debian's armhf/armel, Alpine's armhf
        assert check(machine, "x86_64", binfmt_dir=d).handler == "qemu-arm"


def test_native_machines_need_no_binfmt_misc_at_all(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    for machine, host in (("x86_64", "x86_64"), ("i686", "x86_64"), ("aarch64", "aarch64"),
                          ("riscv64", "riscv64")):
        runner = check(machine, host, binfmt_dir=absent)
        assert runner.native and runner.handler is None, (machine, host)
        assert "run natively" in runner.describe()
    # conservative: 32-bit ARM on an aarch64 host needs a handler like any other machine
    with pytest.raises(EmulatorMissing, match="not mounted"):
        check("armv7l", "aarch64", binfmt_dir=absent)
    with pytest.raises(EmulatorMissing, match="update-binfmts --enable qemu-x86_64"):
        check("x86_64", "aarch64", binfmt_dir=absent)


def test_an_unknown_machine_is_matched_by_qemus_name(tmp_path: Path, interpreter: str) -> None:
    d = binfmt(tmp_path, {"qemu-sparc64": handler_text("7f454c46020201", "ffffffffffffff",
                                                       interpreter=interpreter)})
    assert check("sparc64", "x86_64", binfmt_dir=d).handler == "qemu-sparc64"
    with pytest.raises(EmulatorMissing, match="update-binfmts --enable qemu-alpha"):
        check("alpha", "x86_64", binfmt_dir=d)


@pytest.mark.parametrize("machine", ["../../etc/passwd", "AARCH64", "", "x" * 40, "arm 64"])
def test_a_machine_name_that_could_name_another_path_is_refused(tmp_path: Path,
                                                                machine: str) -> None:
    with pytest.raises(EmulatorMissing, match="is not a machine name"):
        check(machine, "x86_64", binfmt_dir=tmp_path)


def test_the_elf_header_matches_this_hosts_own_programs() -> None:
    """The header a handler is matched against is the one real programs carry: this host's
    /bin/true (its e_type is EXEC or DYN, which qemu's masks treat alike)."""
    import platform

    machine = platform.machine()
    header = elf_header(machine)
    if header is None:
        pytest.skip(f"no ELF identity known for {machine}")
    real = Path("/bin/true").read_bytes()[:20]
    assert header[:16] == real[:16] and header[18:20] == real[18:20]
    aarch64 = Handler.parse("qemu-aarch64", handler_text(AARCH64_MAGIC))
    assert aarch64.matches(elf_header("aarch64") or b"")
    assert not aarch64.matches(header) and not aarch64.matches(elf_header("riscv64") or b"")


def test_distros_give_the_kernels_machine_names() -> None:
    assert {a: Debian({"arch": a, "release": "trixie"}).machine
            for a in ("amd64", "arm64", "armhf", "i386", "ppc64el", "riscv64")} == {
        "amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l", "i386": "i686",
        "ppc64el": "ppc64le", "riscv64": "riscv64"}
    assert Alpine({"arch": "armhf"}).machine == "armv6l"
    assert Alpine({"arch": "aarch64"}).machine == "aarch64"


# -- where build calls it ---------------------------------------------------------------------


def s390x_recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "s390.toml"
    recipe.write_text('name = "s390"\n[base]\ndistro = "debian"\narch = "s390x"\n')
    return recipe


def test_build_refuses_before_any_work_when_no_emulator_is_registered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(emulation, "BINFMT_DIR", binfmt(tmp_path, {}))
    recipe = load_recipe(str(s390x_recipe(tmp_path)))
    with pytest.raises(SystemExit) as e:
        check_hosts([recipe])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: to build an image for s390x on this ")
    assert "update-binfmts --enable qemu-s390x" in err and "(recipe s390)" in err
    from nspawnbuild import pipeline

    with pytest.raises(EmulatorMissing):  # doit build comes through the plan
        pipeline.plan(recipe)


def test_the_plan_records_the_machine_for_the_manifest(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from nspawnbuild import pipeline

    monkeypatch.setattr(emulation, "BINFMT_DIR", binfmt(tmp_path, {
        "qemu-s390x": handler_text("7f454c4602020100000000000000000000020016",
                                   "ffffffffffffff00fffffffffffffffffffeffff",
                                   interpreter="/bin/true")}))
    made = pipeline.plan(load_recipe(str(s390x_recipe(tmp_path))))
    assert made.manifest["machine"] == "s390x" and made.manifest["base"]["arch"] == "s390x"


# -- install ----------------------------------------------------------------------------------


def artifact_for(tmp_path: Path, machine: str | None) -> Path:
    art = make_artifact(tmp_path / "art")
    manifest = json.loads((art / "manifest.json").read_text())
    if machine is not None:
        manifest["machine"] = machine
    (art / "manifest.json").write_text(json.dumps(manifest))
    write_sums(art, [line.split("  ", 1)[1] for line in
                     (art / "SHA256SUMS").read_text().splitlines()])
    return art


def test_install_on_this_host_refuses_an_image_it_cannot_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulation, "BINFMT_DIR", binfmt(tmp_path, {}))

    def no_import(*args: object, **kwargs: object) -> None:
        raise AssertionError("install went on to import the image")

    monkeypatch.setattr(install, "import_tarball", no_import)
    monkeypatch.setattr(install, "_put", no_import)
    art = artifact_for(tmp_path, "s390x")
    with pytest.raises(RecipeError) as e:
        install.install(art, name=None, root=Path("/"), force=False, enable=False, start=False)
    text = str(e.value)
    assert e.value.exit_code == 2
    assert f"{art / 'manifest.json'}: key 'machine': to run an image for s390x on this " in text
    assert "apt-get install qemu-user-static binfmt-support" in text
    assert "update-binfmts --enable qemu-s390x" in text
    assert "nothing was installed" in text and "--root DIR" in text


def test_install_checks_only_this_hosts_root_and_manifests_that_name_the_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulation, "BINFMT_DIR", tmp_path / "absent")
    foreign = install.Artifact(tmp_path, {"machine": "s390x"})
    install.check_runs_here(foreign, tmp_path / "board")  # another host's tree: its CPU
    install.check_runs_here(install.Artifact(tmp_path, {}), Path("/"))  # an older manifest
    native = install.Artifact(tmp_path, {"machine": install.machine_arch()})
    install.check_runs_here(native, Path("/"))  # this host's own: no binfmt_misc needed
    with pytest.raises(RecipeError, match="binfmt_misc is not mounted"):
        install.check_runs_here(foreign, Path("/"))
    with pytest.raises(RecipeError, match="key 'machine': is not a string"):
        install.check_runs_here(install.Artifact(tmp_path, {"machine": ["aarch64"]}), Path("/"))
    with pytest.raises(RecipeError, match="is not a machine name"):
        install.check_runs_here(install.Artifact(tmp_path, {"machine": "../x"}), Path("/"))
