"""The build, stage by stage: plain functions that :mod:`nspawnbuild.tasks` wires to doit.

::

    recipe ──resolve──> plan/*.json ──bootstrap──> cache/bootstrap/KEY (shared, read-only)
                                                       │
                         rootfs: overlay on the entry, features, files, post-steps, scrub
                                                       │
                         pack: tarball + audit     configure: .nspawn + drop-in
                                                       │
                         manifest: NAME.spdx.json, manifest.json, SHA256SUMS, audit verdict,
                                   publish out/NAME

Each stage takes the run's :class:`~nspawnbuild.options.Options` and either the loaded
:class:`~nspawnbuild.recipe.model.Recipe` (bootstrap and rootfs run its distro and features)
or only the recipe's name: pack, configure and manifest read what they need from the plan file
``resolve`` wrote and from the record the stage before them left, so that each does exactly
what the recorded plan says. None of them knows doit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import audit, cache, emulation, lockfile, pkgcache, sbom, signing
from .atomic import read_json, replacing, write_bytes, write_json
from .digests import digest, sha256_file
from .errors import BuildError, NspawnbuildError
from .feature import AnyFeature
from .host import machine_arch
from .hostnet import host_files
from .imagefs import parse_owner, write_file
from .lock import exclusive, exclusive_unless, hold_shared, release_shared
from .namespaces import require_private_mount_namespace
from .netconf import NetSpec
from .options import Options
from .overlay import ImageTree, umount
from .pack import SUFFIXES
from .pack import pack as pack_tree
from .paths import Layout, dropin_name, nspawn_name
from .plan import Plan, make_plan
from .publish import publish
from .recipe.model import Recipe
from .render import render_dropin, render_nspawn
from .rootfs import RootfsContext, drop_resolv_conf, scrub
from .sandbox import Sandbox
from .settings import Setting
from .steplog import StepLog
from .tree import copy_tree, mounts_below, remove_tree

#: the stages in the order they run
STAGES = ("resolve", "bootstrap", "rootfs", "pack", "configure", "manifest")

AnyRecipe = Recipe[AnyFeature]
#: what the rootfs stage reads from the finished tree: its packages, the archive's state
TreeRecord = tuple[list[dict[str, Any]], list[dict[str, Any]]]


# -- files the stages write -------------------------------------------------------------------

def private_dir(path: Path) -> None:
    """``path`` exists, belongs to root and only root may enter it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, 0o700)


def _say(message: str) -> None:
    """A note the user must see while doit captures the action's output."""
    print(message, file=sys.__stderr__)


# -- resolve ----------------------------------------------------------------------------------

def check_host(recipe: AnyRecipe, *, notes: bool = True) -> emulation.Runner:
    """How this host runs the image's programs, or :class:`~nspawnbuild.emulation.EmulatorMissing`
    (exit 2) saying what to install: an image of another architecture needs an emulator
    registered with binfmt_misc, and without one the build would fail deep inside the
    bootstrap with an exec-format error."""
    runner = emulation.check(recipe.distro.machine, machine_arch())
    for note in runner.notes if notes else ():
        _say(f"note: {recipe.name}: {note}")
    return runner


def recipe_lock(options: Options, recipe: AnyRecipe) -> lockfile.Lock | None:
    """The lock a build of ``recipe`` follows: ``--lock FILE``, else NAME.lock.json beside
    the recipe when there is one; none for ``nspawnbuild lock``'s own build. Exit 2 when it
    is not a lock file or was made for another distro, release or architecture."""
    if not options.use_lock:
        return None
    path = options.lock or lockfile.path_for(recipe.path, recipe.name)
    if options.lock is None and not path.is_file():
        return None
    lock = lockfile.read(path)
    distro = recipe.distro
    lockfile.check_base(lock, {"distro": distro.name, "release": distro.release,
                               "arch": distro.arch})
    return lock


def plan(recipe: AnyRecipe, lock: lockfile.Lock | None = None) -> Plan:
    """The plan of ``recipe``: the stage specs that key every later stage.

    Made only for a build (``nspawnbuild build`` and ``doit build`` both come here, before
    any task runs), so the build host is checked here (:func:`check_host`). The manifest
    records the image's machine name (``uname -m``) next to ``[base] arch``: install compares
    it with the host it installs on.
    """
    check_host(recipe)
    if lock is not None:
        recipe.distro.pins = lock.pins()  # before the plan: a distro's pins key its bootstrap
    made = make_plan(recipe)
    made.manifest["machine"] = recipe.distro.machine
    if lock is not None:  # the rootfs stage compares the image with it
        made.rootfs["lock"] = {**lock.record(), "packages": lock.packages}
        made.manifest["lock"] = lock.record()
    return made


def signing_key(options: Options, recipe: AnyRecipe) -> signing.SigningKey | None:
    """The key that signs ``recipe``'s set, found and tried (:func:`signing.resolve`), or
    None: ``--no-sign``, else ``--sign``/``NSPAWNBUILD_SIGN_KEY``, else ``[output] sign``.

    Made for a build before any task runs (like :func:`plan`), so a key that cannot sign is
    exit 2 with nothing written. A key file a recipe names must be inside the recipe's
    directory, as every file a recipe reads; ``--sign`` and the variable may name any."""
    req = options.signing
    if req.disabled:
        return None
    if req.key:
        return signing.resolve(req.key, signing.Origin(Path(req.origin)), base=req.base,
                               homedir=req.gnupghome, passphrase_file=req.passphrase_file)
    spec = recipe.output.sign
    if not spec:
        return None
    at = recipe.sources.problem("output.sign", "")
    return signing.resolve(spec, signing.Origin(at.file or recipe.path, "output.sign", at.line),
                           base=recipe.output.sign_dir or recipe.path.parent,
                           homedir=req.gnupghome, passphrase_file=req.passphrase_file,
                           confined=True)


def resolve(options: Options, name: str, documents: dict[str, Any]) -> None:
    """Write the plan documents of recipe ``name``, one file per stage."""
    for stage, doc in documents.items():
        write_json(options.layout.plan_file(name, stage), doc)


# -- bootstrap: the base layer and the package layer, both in the cache -------------------------
#
# Two read-only layers under every image, each a content-addressed cache entry (a ``root``
# tree, its recorded contents, and ``info.json`` written last): the base (cache/bootstrap/KEY:
# the distro's bootstrap with its base packages alone, shared by every recipe on that base),
# and the package layer (cache/layers/KEY: an overlay upper layer holding what the package
# manager changed when it installed the recipe's and its features' packages on that base).
# A cold build makes both the same way a warm one finds them, so the image cannot depend on
# which it was.

def _entry_lock(entry: Path) -> Path:
    return entry.with_suffix(".lock")


def cache_entry_exists(layout: Layout, key: str, layer_key: str | None = None) -> bool:
    """Whether the base entry ``key`` (and the package layer ``layer_key``) are complete (an
    entry's info.json is written last)."""
    return (layout.bootstrap_entry(key) / "info.json").is_file() and \
        (layer_key is None or (layout.layer_entry(layer_key) / "info.json").is_file())


def bootstrap(options: Options, recipe: AnyRecipe, key: str, layer_key: str | None = None) -> None:
    """The base and the package layer in the content-addressed cache, unless already there."""
    layout = options.layout
    use = pkgcache.Use()
    with StepLog(layout.log(recipe.name, "bootstrap")) as log:
        if (layout.bootstrap_entry(key) / "info.json").is_file():
            # builds using it hold it shared: do not wait for them
            log.note(f"base {key[:16]} is in the cache (an earlier build made it): nothing "
                     "to bootstrap")
        else:
            use = use.add(make_entry(options, recipe, key, log))
        if layer_key is not None:
            if (layout.layer_entry(layer_key) / "info.json").is_file():
                log.note(f"package layer {layer_key[:16]} is in the cache: nothing to install")
            else:
                base = use_entry(options, recipe, key, log)
                use = use.add(make_layer(options, recipe, key, base, layer_key, log))
        log.note(use.line())
    pkgcache.write_use(layout.cache_use(recipe.name), use)


def _new_entry(entry: Path, make: Callable[[Path], dict[str, Any]], log: StepLog, what: str) -> None:
    """Make the cache entry ``entry`` under its exclusive lock: ``make(tmp)`` fills
    ``tmp/root`` and returns what info.json records beside the contents digest; the entry
    appears complete or not at all. While another build makes it, the log says so."""
    complete = (entry / "info.json").is_file

    def waiting(holder: str) -> None:
        who = ("another build of this run" if holder == str(os.getpid())  # -j: threads
               else f"process {holder}")
        log.say(f"waiting for {who}, which is making the {what} {entry.name[:16]} "
                f"(its lock {_entry_lock(entry)})")

    with exclusive_unless(_entry_lock(entry), complete, waiting=waiting) as mine:
        if not mine or complete():  # another build made it meanwhile
            return
        for stale in entry.parent.glob(f".{entry.name}.tmp-*"):  # left by a killed build
            remove_tree(stale)
        remove_tree(entry)  # a half-removed entry (no info.json)
        tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
        private_dir(entry.parent)  # entries hold setuid files: no other user may reach them
        tmp.mkdir()
        try:
            info = make(tmp)
            contents = cache.write_contents(tmp)
            write_json(tmp / "info.json", {**info, "contents": contents})
            os.replace(tmp, entry)
        except BaseException:
            remove_tree(tmp)
            raise


def make_entry(options: Options, recipe: AnyRecipe, key: str, log: StepLog) -> pkgcache.Use:
    """Bootstrap the base entry ``key`` (under its exclusive lock) and record its contents."""
    layout = options.layout
    spec = read_json(layout.plan_file(recipe.name, "bootstrap"))
    use = pkgcache.Use()

    def make(tmp: Path) -> dict[str, Any]:
        nonlocal use
        distro = recipe.distro
        log.note(f"bootstrapping {distro.name} {distro.release} {distro.arch} with "
                 f"{spec['bootstrapper'][0]} {spec['bootstrapper'][1]}: the base, "
                 f"{len(spec['packages'])} packages beyond the essential set")
        use = distro.bootstrap(tmp / "root", spec["packages"], spec["epoch"], log,
                               cache=layout.cache) or pkgcache.Use()
        return {"key": key, "spec": spec}

    _new_entry(layout.bootstrap_entry(key), make, log, "base")
    return use


def make_layer(options: Options, recipe: AnyRecipe, key: str, base_contents: str,
               layer_key: str, log: StepLog) -> pkgcache.Use:
    """Install the package layer ``layer_key`` on the base ``key`` (held shared by the
    caller): an overlay on the base, the distro's package manager in the sandbox, and the
    overlay's upper layer kept as the entry's tree."""
    layout = options.layout
    spec = read_json(layout.plan_file(recipe.name, "layer"))
    use = pkgcache.Use()

    def make(tmp: Path) -> dict[str, Any]:
        nonlocal use
        require_private_mount_namespace()
        # the upper layer is made in the work directory (overlayfs wants a local file system
        # there: a cache on FUSE cannot hold it), then moved, or copied, into the entry
        build = layout.work_dir(recipe.name) / ".layer-build"
        umount(build / "merged")
        remove_tree(build)
        private_dir(build)
        tree = ImageTree(layout.bootstrap_entry(key) / "root", build / "layer", build / "merged")
        tree.create()
        packages = spec["packages"]
        log.note(f"package layer on base {key[:16]}: {len(packages)} packages: "
                 + " ".join(packages))
        try:
            if packages:
                tree.mount()
                try:
                    # named for the layer, not the recipe: recipes with one package set share
                    # it, and a maintainer script may write the container's name into a file
                    with Sandbox(tree, f"layer-{layer_key[:12]}") as sandbox:
                        use = recipe.distro.install_layer(tree.merged, packages, spec["epoch"],
                                                          log, layout.cache, sandbox)
                finally:
                    tree.umount()
            if os.stat(build).st_dev == os.stat(tmp).st_dev:
                os.replace(tree.upper, tmp / "root")
            else:
                copy_tree(tree.upper, tmp / "root")
        finally:
            tree.umount()
            remove_tree(build)
        return {"key": layer_key, "spec": spec, "base": {"key": key, "contents": base_contents}}

    _new_entry(layout.layer_entry(layer_key), make, log, "package layer")
    return use


def use_entry(options: Options, recipe: AnyRecipe, key: str, log: StepLog,
              layer_key: str | None = None) -> str:
    """Hold the cache entry ``key`` (the base, or with ``layer_key`` the package layer on that
    base) shared for the rest of the build and check its contents.

    A damaged entry (a truncated file, anything changed since it was made) is dropped and made
    again, with a note; returns the entry's contents digest.
    """
    layout = options.layout
    entry = layout.bootstrap_entry(key) if layer_key is None else layout.layer_entry(layer_key)
    kind = "bootstrap cache entry" if layer_key is None else "package layer cache entry"
    what = f"{kind} {entry.name}"
    def problems() -> list[str]:
        """What is wrong with the entry as it is now (empty when it can be used)."""
        info = entry / "info.json"
        expected = read_json(info).get("contents")
        found = cache.verify_contents(entry, expected) if expected else ["no contents digest"]
        if layer_key is not None and not found:
            # a layer holds the package database as made on its base: on a base made again
            # (damaged, or pruned before its layers) it would describe other files
            base = read_json(layout.bootstrap_entry(key) / "info.json").get("contents")
            if read_json(info).get("base", {}).get("contents") != base:
                found = ["made on another copy of its base"]
        return found

    for _attempt in range(2):
        hold_shared(_entry_lock(entry), what=what)
        info = entry / "info.json"
        if info.is_file():
            found = problems()
            if not found:
                cache.touch(info)  # last use, for `nspawnbuild cache prune --older-than`
                return str(read_json(info)["contents"])
            message = (f"note: {kind} {entry.name[:16]} is damaged ({'; '.join(found)}); "
                       "dropped it, making it again")
            log.note(message)
            _say(message)
        release_shared(_entry_lock(entry))
        with exclusive(_entry_lock(entry), wait=True, what=what):
            if (entry / "info.json").is_file() and problems():
                remove_tree(entry)
        if layer_key is None:
            make_entry(options, recipe, key, log)
        else:
            base = read_json(layout.bootstrap_entry(key) / "info.json")["contents"]
            make_layer(options, recipe, key, base, layer_key, log)
    raise BuildError(f"{what} is damaged again right after it was made; check the disk under "
                     f"{entry.parent}")


# -- rootfs -----------------------------------------------------------------------------------

def image_tree(layout: Layout, name: str, key: str, layer_key: str, *,
               new: bool = False) -> ImageTree:
    """The overlay of recipe ``name``: the base, the package layer, its own layer on top."""
    work = layout.work_dir(name)
    return ImageTree(layout.bootstrap_entry(key) / "root", work / ("layer.new" if new else "layer"),
                     layout.rootfs(name), above=(layout.layer_entry(layer_key) / "root",))


def rootfs_current(layout: Layout, name: str, key: str, layer_key: str) -> bool:
    """The image's layer exists and sits on the very cache entries' contents it was made on."""
    work = layout.work_dir(name)
    try:
        built = read_json(work / "rootfs.json")
        info = read_json(layout.bootstrap_entry(key) / "info.json")
        layer = read_json(layout.layer_entry(layer_key) / "info.json")
    except (OSError, ValueError, KeyError):
        return False
    return bool((work / "layer" / "upper").is_dir() and built["bootstrap"]["key"] == key
                and built["bootstrap"]["contents"] == info.get("contents")
                and built.get("layer", {}).get("key") == layer_key
                and built["layer"].get("contents") == layer.get("contents"))


def configure_features(ctx: RootfsContext, features: tuple[AnyFeature, ...]) -> None:
    """Each enabled feature changes the bootstrapped tree, in run order."""
    for feature in features:
        feature.configure(ctx)


def install_files(root: Path, recipe: AnyRecipe, log: StepLog) -> None:
    """The recipe's ``[[files]]``, written into the image (symlink-safe, atomic)."""
    for f in recipe.files:
        uid, gid = parse_owner(root, f.owner)
        log.note(f"file {f.dest} from {f.src}")
        write_file(root, f.dest, f.content, mode=f.mode if f.mode is not None else 0o644,
                   uid=uid, gid=gid)


def run_post_steps(recipe: AnyRecipe, sandbox: Sandbox, log: StepLog) -> None:
    """The recipe's ``[[post]]`` steps, each a shell script run in the sandbox."""
    for i, step in enumerate(recipe.post, start=1):
        label = f"post-step {i}" + (f" ({step.name})" if step.name else "")
        script = step.run.strip()
        first = script.splitlines()[0] if script else ""
        sandbox.run(log, [step.shell, "-e", "-c", step.run], step=label, network=step.network,
                    env={"SOURCE_DATE_EPOCH": str(recipe.epoch)},
                    shown_command=first + (" ..." if "\n" in script else ""))


def finalize_features(ctx: RootfsContext, features: tuple[AnyFeature, ...]) -> None:
    """Each enabled feature checks or changes the tree after the post-steps, in run order."""
    for feature in features:
        feature.finalize(ctx)


def finish_tree(root: Path, recipe: AnyRecipe) -> TreeRecord:
    """Scrub host state, drop the package manager's caches; return the installed packages
    and the archive's state (both read before the caches go: a distro reads package digests
    and Release files from its archive lists)."""
    scrub(root, recipe.name)
    packages = [p.as_dict() for p in recipe.distro.list_packages(root)]
    archive = recipe.distro.archive_state(root)
    recipe.distro.clean(root)
    return packages, archive


def make_tree(root: Path, recipe: AnyRecipe, ctx: RootfsContext, sandbox: Sandbox,
              log: StepLog) -> TreeRecord:
    """The rootfs stage's work on the mounted overlay ``root``, in its fixed order: features,
    files, post-steps, features' finalize, scrub; returns the installed packages and the
    archive's state (:func:`finish_tree`)."""
    drop_resolv_conf(root)
    configure_features(ctx, recipe.features)
    install_files(root, recipe, log)
    run_post_steps(recipe, sandbox, log)
    finalize_features(ctx, recipe.features)
    return finish_tree(root, recipe)


def _discard(tree: ImageTree) -> None:
    tree.umount()
    remove_tree(tree.layer)


def keep_failed(tree: ImageTree, kept: Path, log: StepLog) -> str:
    """Copy a failed tree aside for a look inside (a copy: it shares nothing with the cache);
    return the lines that say how."""
    remove_tree(kept)
    copy_tree(tree.merged, kept)
    _discard(tree)
    message = (f"  the tree as the failing step left it is kept (--keep-rootfs): {kept}\n"
               "  look inside without changing it: systemd-nspawn --register=no --keep-unit "
               f"--volatile=overlay -D {kept}\n"
               "  (the next good build or nspawnbuild clean removes it)")
    log.note(message.strip())
    return message


def rootfs(options: Options, recipe: AnyRecipe) -> None:
    """On an overlay of the cached base and package layer: features, files, post-steps,
    scrub, list packages."""
    layout = options.layout
    name = recipe.name
    spec = read_json(layout.plan_file(name, "rootfs"))
    key, layer_key = spec["bootstrap_key"], spec["layer_key"]
    work = layout.work_dir(name)
    require_private_mount_namespace()
    private_dir(work)  # the layer holds the image's setuid files: no other user may reach them
    with StepLog(layout.log(name, "rootfs")) as log:
        contents = use_entry(options, recipe, key, log)
        layer_contents = use_entry(options, recipe, key, log, layer_key)
        tree = image_tree(layout, name, key, layer_key, new=True)
        umount(tree.merged)
        remove_tree(tree.layer)
        tree.create()
        log.note(f"overlay on base {key[:16]} and package layer {layer_key[:16]} (read-only) "
                 f"at {tree.merged}, changes in {tree.upper}")
        tree.mount()
        try:
            with Sandbox(tree, name) as sandbox:
                if sandbox.stale:
                    note = (f"note: removed {len(sandbox.stale)} cgroups a killed earlier build "
                            f"of {name} left: " + ", ".join(sandbox.stale))
                    log.note(note)
                    _say(note)
                ctx = RootfsContext(tree.merged, recipe, recipe.distro, log, layout.cache,
                                    sandbox=sandbox)
                packages, archive = make_tree(tree.merged, recipe, ctx, sandbox, log)
                if spec.get("lock"):  # exit 1 naming each package, nothing published
                    lockfile.compare(spec["lock"]["packages"], packages, spec["lock"]["file"])
            tree.umount()
            remove_tree(work / "layer")
            os.replace(tree.layer, work / "layer")
            remove_tree(work / "rootfs.failed")  # a kept failure is stale once the step works
        except NspawnbuildError as e:
            if not options.keep_rootfs:
                _discard(tree)
                raise
            kept = keep_failed(tree, work / "rootfs.failed", log)
            raise BuildError(f"{e}\n{kept}") from None
        except BaseException:
            _discard(tree)
            raise
        write_json(work / "rootfs.json", {"spec": digest(spec), "packages": packages,
                                          "purl_type": recipe.distro.purl_type,
                                          "archive": archive,
                                          "bootstrap": {"key": key, "contents": contents},
                                          "layer": {"key": layer_key,
                                                    "contents": layer_contents}})


# -- pack -------------------------------------------------------------------------------------

def _check_entries_unchanged(layout: Layout, name: str, record: dict[str, Any]) -> None:
    """The cache entries under the image (base, package layer) are still the ones its rootfs
    was made on."""
    for kind, built in (("bootstrap", record["bootstrap"]), ("package layer", record["layer"])):
        entry = (layout.bootstrap_entry(built["key"]) if kind == "bootstrap"
                 else layout.layer_entry(built["key"]))
        hold_shared(_entry_lock(entry), what=f"{kind} cache entry {built['key']}")
        info = entry / "info.json"
        if not info.is_file() or read_json(info).get("contents") != built["contents"] \
                or cache.verify_contents(entry, built["contents"]):
            raise BuildError(f"the {kind} cache entry {built['key'][:16]} under this image "
                             f"changed or was pruned since its rootfs was made; rebuild with: "
                             f"nspawnbuild clean {name} && nspawnbuild build {name}")


def pack(options: Options, name: str) -> None:
    """Pack the finished layers (mounted read-only) into the tarball, auditing every entry."""
    layout = options.layout
    spec = read_json(layout.plan_file(name, "pack"))
    work = layout.work_dir(name)
    record = read_json(work / "rootfs.json")
    dest = layout.tarball(name, spec["compression"])
    dest.parent.mkdir(parents=True, exist_ok=True)  # the staging directory
    for stale in dest.parent.glob(".*.tmp-*"):  # left by a killed build
        stale.unlink()
    require_private_mount_namespace()
    _check_entries_unchanged(layout, name, record)
    tree = image_tree(layout, name, record["bootstrap"]["key"], record["layer"]["key"])
    umount(tree.merged)
    if mounts_below(tree.merged):
        raise BuildError(f"something is mounted below {tree.merged}; unmount it and rebuild")
    tree.mount_read_only()
    try:
        auditor = audit.Auditor(machine=name)
        result = pack_tree(tree.merged, dest, spec["epoch"], spec["compression"], spec["level"],
                           inspect=auditor.add)
    finally:
        tree.umount()
    for compression in SUFFIXES:  # a tarball of another compression is now stale
        other = layout.tarball(name, compression)
        if other != dest:
            other.unlink(missing_ok=True)
    write_json(work / "pack.json", {"file": dest.name, **result.as_dict(),
                                    "audit": [[f.check, f.path, f.detail] for f in auditor.result()]})


# -- configure --------------------------------------------------------------------------------

def configure(options: Options, name: str) -> None:
    """Render the .nspawn file and the unit drop-in from the config spec."""
    layout = options.layout
    spec = read_json(layout.plan_file(name, "config"))
    common = {"name": spec["name"], "digest": spec["digest"], "version": spec["version"]}
    nspawn = render_nspawn([Setting(*s) for s in spec["nspawn"]], **common)
    dropin = render_dropin([Setting(*s) for s in spec["unit"]], **common)
    write_bytes(layout.nspawn_file(name), nspawn.encode())
    write_bytes(layout.dropin(name), dropin.encode())


# -- manifest ---------------------------------------------------------------------------------

def audit_artifacts(name: str, packed: dict[str, Any], nspawn: Path, dropin: Path,
                    allow: list[str]) -> list[audit.Finding]:
    """The audit's verdict on the packed tree and the rendered settings; raises when a finding
    is not allowed, returns the allowed ones (the manifest lists them)."""
    # the packer audited every entry as it wrote it; the caller's digest check ties that to the
    # tarball that is published
    findings = [audit.Finding(*f) for f in packed["audit"]]
    findings += audit.settings_findings(nspawn.read_text(), dropin.read_text(),
                                        nspawn_name(name), dropin_name(name))
    failing, allowed = audit.split(findings, allow)
    if failing:
        raise BuildError(f"the audit of {packed['file']} and its settings found secrets, host "
                         "state or risky settings; nothing "
                         "was published:\n" + "\n".join(f"  {f}" for f in failing)
                         + "\n  fix the recipe, or accept a finding with [audit] allow = "
                         "[\"CHECK:PATH\"]")
    return allowed


def manifest_document(spec: dict[str, Any], rootfs_record: dict[str, Any],
                      packed: dict[str, Any], digests: dict[str, str],
                      allowed: list[audit.Finding]) -> dict[str, Any]:
    """manifest.json: what was built, from what, with which tool, and the artifacts' digests."""
    name = spec["name"]
    return {
        "format": 1,
        **{k: spec[k] for k in ("name", "description", "recipe_digest", "source_date_epoch",
                                "target_systemd", "base", "machine", "bootstrapper")},
        "tool": {"name": "nspawnbuild", "version": spec["nspawnbuild"]},
        **({"state": spec["state"]} if spec.get("state") else {}),
        **({"lock": spec["lock"]} if spec.get("lock") else {}),
        **({"network": spec["network"]} if spec.get("network") else {}),
        **({"host_needs": spec["host_needs"]} if spec.get("host_needs") else {}),
        "packages": rootfs_record["packages"],
        "tree": {"bytes": packed["tree_bytes"], **packed["counts"]},
        "audit": {"checks": list(audit.CHECKS), "allowed": [str(f) for f in allowed]},
        "artifacts": {
            "tarball": {"file": packed["file"], "sha256": packed["sha256"],
                        "size": packed["size"], **spec["compression"]},
            "tar": {"sha256": packed["tar_sha256"], "size": packed["tar_size"]},
            "nspawn": {"file": nspawn_name(name), "sha256": digests[nspawn_name(name)]},
            "dropin": {"file": dropin_name(name), "sha256": digests[dropin_name(name)]},
        },
    }


def sbom_inputs(spec: dict[str, Any], rootfs_record: dict[str, Any],
                packed: dict[str, Any]) -> dict[str, Any]:
    """What an SBOM of the build is made from, in either format: the recorded packages and
    the tarball."""
    base = spec["base"]
    return dict(name=spec["name"], description=spec.get("description") or "",
                distro=base["distro"], release=str(base["release"]), arch=base["arch"],
                epoch=spec["source_date_epoch"], tool_version=spec["nspawnbuild"],
                purl_type=rootfs_record.get("purl_type", "generic"),
                packages=rootfs_record["packages"],
                tarball={"file": packed["file"], "sha256": packed["sha256"]})


def sbom_document(spec: dict[str, Any], rootfs_record: dict[str, Any],
                  packed: dict[str, Any]) -> dict[str, Any]:
    """The SBOM of the build (:mod:`nspawnbuild.sbom`): the recorded packages and the tarball."""
    return sbom.document(**sbom_inputs(spec, rootfs_record, packed))


def host_network_files(spec: dict[str, Any]) -> dict[str, str]:
    """The host's half of the machine's network (:mod:`nspawnbuild.hostnet`), from the
    network the manifest records; none without one."""
    if not spec.get("network"):
        return {}
    return host_files(spec["name"], NetSpec.from_table(spec["network"]))


def sums_text(digests: dict[str, str]) -> bytes:
    """SHA256SUMS in ``sha256sum``'s format, sorted by file."""
    return "".join(f"{h}  {f}\n" for f, h in sorted(digests.items())).encode()


def sign_sums(stage: Path, key: signing.SigningKey | None) -> Path | None:
    """``SHA256SUMS.gpg`` of the staged SHA256SUMS, made by ``key`` (None: no signature, and
    a stale one is removed). It is not listed in SHA256SUMS (it signs that file, as the sets
    systemd publishes do) and changes no other file, so every digest stays the same whether
    and by whom the set is signed."""
    signature = stage / signing.SIGNATURE
    if key is None:
        signature.unlink(missing_ok=True)
        return None
    with replacing(signature) as tmp:
        signing.sign(key, stage / "SHA256SUMS", tmp)
    return signature


def manifest(options: Options, name: str, key: signing.SigningKey | None = None) -> None:
    """Write manifest.json and SHA256SUMS (and SHA256SUMS.gpg with ``key``), then publish the
    whole set into out/NAME at once."""
    layout = options.layout
    spec = read_json(layout.plan_file(name, "manifest"))
    work = layout.work_dir(name)
    stage = layout.stage_dir(name)
    rootfs_record = read_json(work / "rootfs.json")
    packed = read_json(work / "pack.json")
    nspawn, dropin = layout.nspawn_file(name), layout.dropin(name)
    artifacts = {packed["file"]: stage / packed["file"], nspawn_name(name): nspawn,
                 dropin_name(name): dropin}
    digests = {rel: sha256_file(path) for rel, path in artifacts.items()}
    if digests[packed["file"]] != packed["sha256"]:
        raise BuildError(f"{stage / packed['file']} changed since it was packed; rebuild it "
                         f"with: nspawnbuild build {name}")
    allowed = audit_artifacts(name, packed, nspawn, dropin, spec["audit_allow"])
    for rel, text in host_network_files(spec).items():
        write_bytes(stage / rel, text.encode())
        artifacts[rel], digests[rel] = stage / rel, sha256_file(stage / rel)
    spdx = sbom.file_name(name)
    write_bytes(stage / spdx, sbom.render(sbom_document(spec, rootfs_record, packed)))
    artifacts[spdx] = stage / spdx
    digests[spdx] = sha256_file(stage / spdx)
    cdx = None
    if "cyclonedx" in spec.get("sbom", ()):  # [output] sbom; the SPDX one is always written
        from . import cyclonedx  # its library takes 0.15 s to import: only builds that ask pay

        cdx = cyclonedx.file_name(name)
        write_bytes(stage / cdx, cyclonedx.render(**sbom_inputs(spec, rootfs_record, packed)))
        artifacts[cdx] = stage / cdx
        digests[cdx] = sha256_file(stage / cdx)
    document = manifest_document(spec, rootfs_record, packed, digests, allowed)
    document["artifacts"]["sbom"] = {"file": spdx, "sha256": digests[spdx], "format": "spdx-2.3"}
    if cdx:
        document["artifacts"]["sbom_cyclonedx"] = {"file": cdx, "sha256": digests[cdx],
                                                   "format": cyclonedx.FORMAT}
    write_json(stage / "manifest.json", document)
    artifacts["manifest.json"] = stage / "manifest.json"
    digests["manifest.json"] = sha256_file(stage / "manifest.json")
    write_bytes(stage / "SHA256SUMS", sums_text(digests))
    artifacts["SHA256SUMS"] = stage / "SHA256SUMS"
    signature = sign_sums(stage, key)
    if signature is not None:
        artifacts[signing.SIGNATURE] = signature
    publish(artifacts, layout.out_dir(name))
