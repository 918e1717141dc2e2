"""The host's NVIDIA driver for ``driver = "host"`` images: CDI specs read, the driver found
without one, and the settings install writes, over a fake host root (tests/gpufake.py: nodes
made with mknod, stand-in libraries cached by the real ldconfig).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import jsonschema
import pytest
import referencing
import yaml
from gpufake import CDI, LIBDIR, OLD, VERSION, make_host

from nspawnbuild import cdi, gpuhost
from nspawnbuild.errors import BuildError
from nspawnbuild.hostneeds import HostContext, HostSettings, apply_to_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("gcc"),
                                reason="needs root (mknod) and gcc (stand-in libraries)")

SPECS = ("nvidia.yaml", "nvidia-mig.json")
CTL = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]


def schema_validator() -> jsonschema.Draft7Validator:
    schema_dir = CDI / "schema"
    defs = json.loads((schema_dir / "defs.json").read_text())
    registry = referencing.Registry().with_resource(
        "defs.json", referencing.Resource.from_contents(
            defs, default_specification=referencing.jsonschema.DRAFT7))
    return jsonschema.Draft7Validator(json.loads((schema_dir / "schema.json").read_text()),
                                      registry=registry)


@pytest.mark.parametrize("spec", SPECS)
def test_the_spec_fixtures_are_what_the_cdi_schema_accepts(spec: str) -> None:
    text = (CDI / spec).read_text()
    doc = json.loads(text) if spec.endswith(".json") else yaml.safe_load(text)
    schema_validator().validate(doc)
    # and the schema can fail: a device without containerEdits is refused
    broken = dict(doc, devices=[{"name": "0"}])
    assert list(schema_validator().iter_errors(broken))


def test_a_toolkit_spec_gives_the_chosen_gpus_the_common_edits_and_the_hooks_as_steps() -> None:
    spec = cdi.load(CDI / "nvidia.yaml")
    assert spec.version == "0.5.0" and spec.kind == gpuhost.KIND
    e = spec.edits(["GPU-9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"])
    assert [h for h, _ in e.device_nodes] == ["/dev/nvidia1", "/dev/nvidia-modeset"] + CTL[1:] \
        + ["/dev/nvidiactl"]
    assert [m.host_path for m in e.mounts] == [
        f"{LIBDIR}/libcuda.so.{VERSION}", f"{LIBDIR}/libnvidia-ml.so.{VERSION}",
        "/usr/bin/nvidia-smi", f"/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin"]
    assert all(m.read_only and m.container_path == m.host_path for m in e.mounts)
    assert e.symlinks == [(f"{LIBDIR}/libcuda.so", "libcuda.so.1")]
    assert e.ldconfig_dirs == [LIBDIR]
    assert e.env == ["NVIDIA_VISIBLE_DEVICES=void"]
    assert e.skipped_hooks == ["nvidia-ctk hook chmod --mode 755 --path /dev/dri"]
    both = spec.edits(["all"])
    assert [h for h, _ in both.device_nodes][:2] == ["/dev/nvidia0", "/dev/nvidia1"]
    assert [h for h, _ in spec.edits(["0", "1"]).device_nodes][:4] == [
        "/dev/nvidia0", "/dev/dri/card0", "/dev/dri/renderD128", "/dev/nvidia1"]


def test_a_mig_device_brings_its_capability_nodes_and_newer_hooks_are_read() -> None:
    spec = cdi.load(CDI / "nvidia-mig.json")
    e = spec.edits(["0:0"])
    assert [h for h, _ in e.device_nodes] == ["/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap12",
                                              "/dev/nvidia-caps/nvidia-cap13"] + CTL
    assert spec.edits(["MIG-7a6b5c4d-3e2f-5a1b-9c8d-7e6f5a4b3c2d"]).device_nodes == e.device_nodes
    # both spellings of --link (a separate argument, and --link=...)
    assert e.symlinks == [(f"{LIBDIR}/libcuda.so", "libcuda.so.1"),
                          (f"{LIBDIR}/libnvidia-ml.so", "libnvidia-ml.so.1")]
    assert e.skipped_hooks == ["nvidia-cdi-hook enable-cuda-compat --host-driver-version=550.163.01"]
    assert [m for m in e.mounts if m.host_path == gpuhost.PERSISTENCED_SOCKET][0].read_only


def test_a_device_the_spec_lacks_is_refused_naming_what_it_has() -> None:
    with pytest.raises(BuildError, match=r"no device 'nvidia.com/gpu=7' \(the spec has: 0, 1, "
                       r"GPU-4b3c.*all\)"):
        cdi.load(CDI / "nvidia.yaml").edits(["7"])


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(cdiVersion="0.4.0"), "CDI spec version 0.4.0 is not one nspawnbuild reads"),
    (lambda d: d.update(cdiVersion="2.0.0"), "CDI spec version 2.0.0"),
    (lambda d: d.update(cdiVersion=5), "cdiVersion 5 is not a version"),
    (lambda d: d.update(devices="0"), "'devices' is not a list"),
    (lambda d: d["containerEdits"]["mounts"][0].update(hostPath="usr/lib/x"),
     "'mounts\\[\\].hostPath' 'usr/lib/x' is not an absolute path"),
    (lambda d: d["containerEdits"]["mounts"][0].update(containerPath="/usr/../etc/shadow"),
     "is not an absolute path without '..'"),
    (lambda d: d["devices"][0]["containerEdits"]["deviceNodes"][0].update(path="/dev/a\nb"),
     "is not a one-line string"),
    (lambda d: d["containerEdits"].update(env=["JUSTANAME"]), "is not NAME=VALUE"),
])
def test_a_damaged_spec_is_a_clear_error(tmp_path: Path, change: object, message: str) -> None:
    doc = yaml.safe_load((CDI / "nvidia.yaml").read_text())
    change(doc)  # type: ignore[operator]
    path = tmp_path / "nvidia.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(BuildError, match=message):
        cdi.load(path)


def test_not_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nvidia.yaml"
    path.write_text("cdiVersion: [unclosed\n")
    with pytest.raises(BuildError, match=r"nvidia.yaml: not valid YAML"):
        cdi.load(path)


def test_with_the_hosts_spec_install_gets_these_exact_settings(tmp_path: Path) -> None:
    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    found = gpuhost.find(root, ["1"])
    assert found.version == VERSION and "nvidia.yaml (cdiVersion 0.5.0)" in found.source
    out = gpuhost.settings(found)
    assert [f"{s.key}={s.value}" for s in out.nspawn] == [
        "Bind=/dev/nvidia1", "Bind=/dev/nvidia-modeset", "Bind=/dev/nvidia-uvm",
        "Bind=/dev/nvidia-uvm-tools", "Bind=/dev/nvidiactl",
        f"BindReadOnly={LIBDIR}/libcuda.so.{VERSION}",
        f"BindReadOnly={LIBDIR}/libnvidia-ml.so.{VERSION}",
        "BindReadOnly=/usr/bin/nvidia-smi",
        f"BindReadOnly=/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin"]
    unit = [f"{s.key}={s.value}" for s in out.unit]
    assert unit[:5] == ["DeviceAllow=/dev/nvidia1 rw", "DeviceAllow=/dev/nvidia-modeset rw",
                        "DeviceAllow=/dev/nvidia-uvm rw", "DeviceAllow=/dev/nvidia-uvm-tools rw",
                        "DeviceAllow=/dev/nvidiactl rw"]
    assert unit[5].startswith("ExecStartPre=/bin/sh -c 'want=550.163.01; have=$$(cat "
                              "/sys/module/nvidia/version")
    assert out.files == {
        gpuhost.LDCONFIG_CONF: "# Written by nspawnbuild install: where the host's GPU driver "
                               f"libraries are bound\n{LIBDIR}\n",
        gpuhost.TMPFILES_CONF: "# Written by nspawnbuild install: the links the GPU driver's "
                               f"CDI hooks make\nL {LIBDIR}/libcuda.so - - - - libcuda.so.1\n",
        # for every service of the container, not only its init (Environment= would be that)
        gpuhost.ENVIRONMENT_CONF: "# Written by nspawnbuild install: the GPU driver's CDI "
                                  "environment\n[Manager]\n"
                                  'DefaultEnvironment="NVIDIA_VISIBLE_DEVICES=void"\n'}
    assert out.notes == [
        f"GPU: bound the NVIDIA driver {VERSION} from the host's CDI spec "
        f"{root}/etc/cdi/nvidia.yaml (cdiVersion 0.5.0)",
        "GPU: hook not run (nspawn runs no OCI hooks): nvidia-ctk hook chmod --mode 755 "
        "--path /dev/dri"]


def test_without_a_spec_the_driver_is_found_as_the_toolkit_finds_it(tmp_path: Path) -> None:
    root = make_host(tmp_path / "host")
    found = gpuhost.find(root, "all")
    assert "linker cache" in found.source
    e = found.edits
    assert [h for h, _ in e.device_nodes] == ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl",
                                              "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                                              "/dev/nvidia-modeset"]
    assert sorted(m.host_path for m in e.mounts) == sorted([
        f"{LIBDIR}/libcuda.so.{VERSION}", f"{LIBDIR}/libnvidia-ml.so.{VERSION}",
        "/usr/bin/nvidia-smi", f"/lib/firmware/nvidia/{VERSION}",
        gpuhost.PERSISTENCED_SOCKET])
    # the old driver's library and an unrelated one are left alone
    assert not [m for m in e.mounts if OLD in m.host_path or "unrelated" in m.host_path]
    assert sorted(e.symlinks) == [(f"{LIBDIR}/libcuda.so", "libcuda.so.1"),
                                  (f"{LIBDIR}/libcuda.so.1", f"libcuda.so.{VERSION}"),
                                  (f"{LIBDIR}/libnvidia-ml.so.1", f"libnvidia-ml.so.{VERSION}")]
    assert e.ldconfig_dirs == [LIBDIR]
    assert [h for h, _ in gpuhost.find(root, ["1"]).edits.device_nodes][0] == "/dev/nvidia1"


@pytest.mark.parametrize("setup,devices,message", [
    (lambda r: (r / "sys/module/nvidia/version").unlink(), ["0"],
     "no NVIDIA kernel module is loaded on this host"),
    (lambda r: None, ["3"], "this host has no GPU 3: .*/dev/nvidia3 is not a character device"),
    (lambda r: None, ["GPU-4b3c9d2e-1f0a-4e8b-9c7d-6a5b4c3d2e1f"],
     "choosing GPUs by UUID or MIG device needs the host's CDI spec"),
    (lambda r: (r / "etc/ld.so.cache").unlink(), ["0"], "no linker cache at"),
    (lambda r: (r / "dev/nvidiactl").unlink(), ["0"], "/dev/nvidiactl is missing"),
    (lambda r: (r / "sys/module/nvidia/version").write_text("560.1.2\n"), ["0"],
     "lists no NVIDIA library of driver 560.1.2"),
])
def test_a_host_without_what_the_image_needs_is_a_clear_error(
        tmp_path: Path, setup: object, devices: list[str], message: str) -> None:
    root = make_host(tmp_path / "host")
    setup(root)  # type: ignore[operator]
    with pytest.raises(BuildError, match=message):
        gpuhost.find(root, devices)


def test_a_spec_naming_a_missing_file_says_to_regenerate_it(tmp_path: Path) -> None:
    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    (root / "usr/bin/nvidia-smi").unlink()  # the driver was upgraded, the spec not
    with pytest.raises(BuildError, match=r"usr/bin/nvidia-smi is missing although the host's "
                       r"CDI spec .* lists it: regenerate the spec"):
        gpuhost.find(root, ["0"])


def test_a_later_spec_wins_and_a_stale_ones_files_stay_out(tmp_path: Path) -> None:
    """/var/run/cdi after /etc/cdi, as CDI reads them: the device comes from the later spec,
    and only that spec's common edits are used, so the earlier one's files are not bound."""
    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    (root / "var/run/cdi").mkdir(parents=True)
    doc = json.loads((CDI / "nvidia-mig.json").read_text())
    (root / "var/run/cdi/nvidia.json").write_text(json.dumps(doc))
    found = gpuhost.find(root, ["0"])
    assert "var/run/cdi/nvidia.json (cdiVersion 0.8.0)" in found.source
    assert "etc/cdi/nvidia.yaml" not in found.source
    assert f"/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin" not in \
        [m.host_path for m in found.edits.mounts]  # only the /etc spec lists it
    # a device only the earlier spec has still comes from it, with its common edits
    both = gpuhost.find(root, ["0", "GPU-9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"])
    assert "etc/cdi/nvidia.yaml" in both.source and "var/run/cdi/nvidia.json" in both.source


def test_another_vendors_spec_is_passed_over_whatever_its_version(tmp_path: Path) -> None:
    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    (root / "etc/cdi/vendor.json").write_text(json.dumps(
        {"cdiVersion": "0.3.0", "kind": "vendor.com/fpga", "devices": "not even a list"}))
    assert "nvidia.yaml" in gpuhost.find(root, ["0"]).source


def test_a_stale_spec_naming_another_drivers_library_is_refused(tmp_path: Path) -> None:
    """After a driver upgrade the old libraries often stay on disk: the spec's files exist,
    but they are the old driver's, which the new module cannot serve."""
    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    (root / "sys/module/nvidia/version").write_text("560.35.03\n")
    with pytest.raises(BuildError, match=r"libcuda.so.550.163.01, another driver's file than "
                       r"the loaded module's 560.35.03: the spec is stale"):
        gpuhost.find(root, ["0"])


def test_by_path_links_with_colons_become_tmpfiles_lines(tmp_path: Path) -> None:
    """The toolkit links /dev/dri/by-path/pci-0000:52:00.0-card to its card: ':' is fine in a
    tmpfiles line (only Bind= lines separate fields with it)."""
    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    out = gpuhost.settings(gpuhost.find(root, ["0"]))
    assert "L /dev/dri/by-path/pci-0000:52:00.0-card - - - - ../card0\n" in \
        out.files[gpuhost.TMPFILES_CONF]
    assert "Bind=/dev/dri/renderD128" in [f"{s.key}={s.value}" for s in out.nspawn]


@pytest.mark.parametrize("path", ["/usr/lib/a:b.so", "/usr/lib/50%.so", "/usr/lib/a b.so",
                                  "/usr/lib/a\\x2d.so"])
def test_a_driver_path_bind_lines_cannot_hold_is_refused(tmp_path: Path, path: str) -> None:
    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    doc = yaml.safe_load((root / "etc/cdi/nvidia.yaml").read_text())
    doc["containerEdits"]["mounts"].append({"hostPath": path, "containerPath": path})
    target = root / path.lstrip("/")
    target.write_bytes(b"")
    (root / "etc/cdi/nvidia.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(BuildError, match="a .nspawn Bind= line cannot hold"):
        gpuhost.settings(gpuhost.find(root, ["0"]))


def test_an_unknown_hook_flag_is_reported_not_half_done(tmp_path: Path) -> None:
    doc = yaml.safe_load((CDI / "nvidia.yaml").read_text())
    doc["containerEdits"]["hooks"][0]["args"] += ["--csv-filename", "/etc/nvidia/l4t.csv"]
    path = tmp_path / "nvidia.json"
    path.write_text(json.dumps(doc))
    spec = cdi.load(path)
    assert spec is not None
    e = spec.edits(["1"])
    assert e.symlinks == [] and any("--csv-filename" in h for h in e.skipped_hooks)


@pytest.mark.parametrize("needs", [
    "all", ["0"], {"driver": "host"}, {"driver": "image", "devices": ["0"]},
    {"driver": "host", "devices": ["0"] * 2}, {"driver": "host", "devices": [str(i) for i in
                                                                             range(65)]},
    {"driver": "host", "devices": ["0; rm -rf /"]}, {"driver": "host", "devices": [0]},
    {"driver": "host", "devices": ["0"], "check": "no"},
])
def test_a_hostile_manifest_entry_is_a_clear_error(tmp_path: Path, needs: object) -> None:
    from nspawnbuild.plugins import get_registry

    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    nvidia = get_registry().features["gpu-nvidia"]
    with pytest.raises(BuildError, match="host_needs.gpu-nvidia is not what a build writes"):
        nvidia.host_settings(needs, HostContext(root, "gpubox"))


def test_a_read_only_image_is_refused_with_the_host_driver(tmp_path: Path) -> None:
    from nspawnbuild.plugins import get_registry

    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    nvidia = get_registry().features["gpu-nvidia"]
    with pytest.raises(BuildError, match=r"runs read-only \(ReadOnly=yes"):
        nvidia.host_settings({"driver": "host", "devices": ["0"]},
                             HostContext(root, "gpubox", "[Files]\nReadOnly=yes\n"))


def test_an_unknown_feature_in_host_needs_is_a_clear_error(tmp_path: Path) -> None:
    from nspawnbuild.hostsetup import settings_for

    with pytest.raises(BuildError, match="feature 'gpu-quantum' at install, which no installed plugin"):
        settings_for({"host_needs": {"gpu-quantum": {}}}, HostContext(tmp_path, "x"))
    with pytest.raises(BuildError, match="'host_needs' is not a table"):
        settings_for({"host_needs": ["gpu-nvidia"]}, HostContext(tmp_path, "x"))


# -- AMD (ROCm) ------------------------------------------------------------------------------

def test_amd_nodes_give_the_images_groups_the_hosts_ids(tmp_path: Path) -> None:
    root = make_host(tmp_path / "host", render_gid=992)
    nodes = ["/dev/kfd", *gpuhost.render_nodes(root)]
    assert nodes == ["/dev/kfd", "/dev/dri/renderD128", "/dev/dri/renderD129"]
    out = gpuhost.amd_settings(HostContext(root, "rocm"), nodes, private_users=False)
    assert out.group_ids == {"render": 992}
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/group").write_text("root:x:0:\nvideo:x:44:ollama\nrender:x:105:ollama\n")
    done = apply_to_tree(tree, out)
    assert (tree / "etc/group").read_text() == \
        "root:x:0:\nvideo:x:44:ollama\nrender:x:992:ollama\n"
    assert done == ["group render in the image: id 105 -> 992 (the host's)"]


def test_amd_with_private_users_needs_nodes_open_to_all(tmp_path: Path) -> None:
    root = make_host(tmp_path / "host", render_mode=0o660)
    with pytest.raises(BuildError, match=r"/dev/kfd is mode 660, group 992, and the image runs "
                       "with private users"):
        gpuhost.amd_settings(HostContext(root, "rocm"), ["/dev/kfd"], private_users=True)
    open_root = make_host(tmp_path / "open", render_mode=0o666)
    out = gpuhost.amd_settings(HostContext(open_root, "rocm"), ["/dev/kfd"], private_users=True)
    assert out.group_ids == {} and out.notes == []


@pytest.mark.parametrize("setup,message", [
    (lambda r: (r / "dev/kfd").unlink(), r"this host has no /dev/kfd .*modprobe amdgpu"),
    (lambda r: (r / "etc/group").write_text("root:x:0:\nkfd:x:992:\n"),
     "belongs to group kfd on this host, not to render or video"),
])
def test_amd_host_problems_are_clear_errors(tmp_path: Path, setup: object, message: str) -> None:
    root = make_host(tmp_path / "host")
    setup(root)  # type: ignore[operator]
    with pytest.raises(BuildError, match=message):
        gpuhost.amd_settings(HostContext(root, "rocm"), ["/dev/kfd"], private_users=False)


def test_a_group_id_the_image_gives_another_group_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/group").write_text("render:x:105:\nsgx:x:992:\n")
    with pytest.raises(BuildError, match="the image's group 'sgx' has id 992"):
        apply_to_tree(tree, HostSettings(group_ids={"render": 992}))


def test_files_for_the_tree_are_written_inside_it_never_through_a_symlink(tmp_path: Path) -> None:
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    (tree / "etc").mkdir(parents=True)
    outside.mkdir()
    (tree / "etc/ld.so.conf.d").symlink_to(outside)  # absolute: resolved inside the tree
    apply_to_tree(tree, HostSettings(files={gpuhost.LDCONFIG_CONF: "/usr/lib\n"}))
    assert list(outside.iterdir()) == []
    name = Path(gpuhost.LDCONFIG_CONF).name
    assert (tree / str(outside).lstrip("/") / name).read_text() == "/usr/lib\n"


@pytest.mark.parametrize("module,status", [(VERSION, 0), ("560.35.03", 1), (None, 1)])
def test_the_start_check_runs_as_systemd_would_run_it(tmp_path: Path, module: str | None,
                                                      status: int) -> None:
    """The drop-in's ExecStartPre=, unescaped as systemd does ($$ -> $, %i -> the machine),
    run by sh: the host's module version equal to the one installed for, or a clear refusal."""
    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    out = gpuhost.settings(gpuhost.find(root, ["0"]))
    [line] = [s.value for s in out.unit if s.key == "ExecStartPre"]
    version = tmp_path / "version"
    if module:
        version.write_text(module + "\n")
    command = line.replace("$$", "$").replace("%i", "gpubox").replace(gpuhost.VERSION_FILE,
                                                                    str(version))
    argv = shlex.split(command)
    assert argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3
    run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert run.returncode == status, run.stderr
    if status and module:
        assert f"container gpubox was installed for NVIDIA driver {VERSION} but the host " \
               f"kernel module is now {module}; run nspawnbuild install again" in run.stderr
    elif status:  # not an upgrade: the module is not loaded (yet), and install would not help
        assert "container gpubox needs the NVIDIA kernel module, which is not loaded" \
            in run.stderr


def test_a_device_node_outside_dev_is_refused(tmp_path: Path) -> None:
    """DeviceAllow= names nodes by a /dev path (or a class): a spec's node elsewhere would be
    bound but never allowed, so install refuses it instead of writing a setting systemd drops."""
    root = make_host(tmp_path / "host", spec="nvidia.yaml")
    doc = yaml.safe_load((root / "etc/cdi/nvidia.yaml").read_text())
    doc["devices"][0]["containerEdits"]["deviceNodes"][0]["hostPath"] = "/run/gpu/nvidia0"
    os.makedirs(root / "run/gpu")
    os.mknod(root / "run/gpu/nvidia0", 0o666 | stat.S_IFCHR, os.makedev(195, 0))
    (root / "etc/cdi/nvidia.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(BuildError, match="names device node /run/gpu/nvidia0, outside /dev"):
        gpuhost.settings(gpuhost.find(root, ["0"]))


def test_amd_finds_the_hosts_group_in_usr_lib_group_too(tmp_path: Path) -> None:
    """Image-based hosts keep their system groups in /usr/lib/group, not /etc/group."""
    root = make_host(tmp_path / "host", render_gid=993)
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "usr/lib/group").write_text("render:x:993:\n")
    out = gpuhost.amd_settings(HostContext(root, "rocm"), ["/dev/kfd"], private_users=False)
    assert out.group_ids == {"render": 993}
