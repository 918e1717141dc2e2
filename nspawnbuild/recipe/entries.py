"""``[[files]]`` and ``[[sources]]``: the checks the schema cannot express, and typed entries.

A ``[[files]]`` src and a ``file://`` source are local inputs: they are read (or checked) at
load time, confined to the directory of the recipe file that names them (through every
symbolic link; never /proc, /sys or /dev; regular files only: see ``nspawnbuild.fetch``), and
``[[files]]`` content is bounded per file and per recipe. Each entry keeps the file that
declared it and its index there, for messages and for paths relative to that file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ..fetch import Refused, check_confined, is_local, local_path, read_confined
from ..schema import SOURCE_MAX_SIZE_DEFAULT, SOURCE_TIMEOUT_DEFAULT
from ..sizes import parse_size
from .model import FileEntry, SourceEntry
from .problems import Problems
from .sourcemap import KeyPath

MAX_FILE_BYTES: Final = 1 << 30
MAX_FILES_TOTAL_BYTES: Final = 1 << 30  # every [[files]] src of a recipe together: read at load time


def load_files(data: Mapping[str, Any], problems: Problems) -> list[FileEntry]:
    """``[[files]]`` entries with their content, each src confined to its recipe's directory.

    An entry whose src cannot be read is reported and left out."""
    sources = problems.sources
    entries: list[FileEntry] = []
    total = 0
    for i, item in enumerate(data.get("files", [])):
        doc_i, local = sources.origins["files"][i]
        declared = sources.files[doc_i].path
        content = _read_src(declared.parent, item["src"], ["files", i, "src"], problems,
                            min(MAX_FILE_BYTES, MAX_FILES_TOTAL_BYTES - total))
        if content is None:
            continue
        body, src = content
        total += len(body)
        mode = item.get("mode")
        entries.append(FileEntry(
            src=src, dest=item["dest"],
            mode=int(mode, 8) if isinstance(mode, str) else mode,
            owner=item.get("owner"), template=bool(item.get("template", False)),
            declared_in=declared, index=local, content=body))
    return entries


def _read_src(root: Path, name: str, key: KeyPath, problems: Problems, limit: int
              ) -> tuple[bytes, Path] | None:
    """The content and real path of a ``[[files]]`` src, or None after reporting why not.

    ``limit`` is what is left of MAX_FILES_TOTAL_BYTES, or MAX_FILE_BYTES when that is less."""
    shown = Path(name) if Path(name).is_absolute() else root / name
    try:
        return read_confined(root, name, limit, f"a file may have at most {MAX_FILE_BYTES} "
                             f"bytes, and the [[files]] of a recipe {MAX_FILES_TOTAL_BYTES} "
                             "together; install large files with [[sources]]")
    except Refused as e:
        problems.at(key, f"source {e}", e.hint)
    except FileNotFoundError:
        problems.at(key, f"source file {shown} does not exist",
                    "src is relative to the recipe file that names it")
    except OSError as e:
        problems.at(key, f"cannot read {shown}: {e.strerror}")
    return None


def load_sources(data: Mapping[str, Any], problems: Problems) -> list[SourceEntry]:
    """``[[sources]]`` entries, with the checks the schema cannot express.

    An entry with a problem is reported and left out."""
    sources = problems.sources
    entries: list[SourceEntry] = []
    for i, item in enumerate(data.get("sources", [])):
        doc_i, local = sources.origins["sources"][i]
        declared = sources.files[doc_i].path
        extract = bool(item.get("extract", False))
        ok = True
        if not extract and "strip_components" in item:
            problems.at(["sources", i, "strip_components"], "is only allowed with extract = true",
                        "strip_components drops leading directories of an archive's members; "
                        "remove it or set extract = true")
            ok = False
        if extract and "mode" in item:
            problems.at(["sources", i, "mode"], "is only allowed without extract",
                        "unpacked files keep the modes in the archive; change them in a [[post]] "
                        "step")
            ok = False
        if not extract and item["dest"].endswith("/"):
            problems.at(["sources", i, "dest"], f"{item['dest']!r} ends with '/', but without "
                        "extract dest is the path of the file itself",
                        "give the full path, e.g. /usr/local/bin/tool, or set extract = true")
            ok = False
        if is_local(item["url"]) and not _local_source_ok(declared.parent, item["url"],
                                                          ["sources", i, "url"], problems):
            ok = False
        max_size = _source_max_size(item, ["sources", i, "max_size"], problems)
        if not ok or max_size is None:
            continue
        mode = item.get("mode", 0o644)
        entries.append(SourceEntry(
            url=item["url"], sha256=item["sha256"].lower(), dest=item["dest"], extract=extract,
            strip_components=int(item.get("strip_components", 0)),
            mode=int(mode, 8) if isinstance(mode, str) else mode,
            declared_in=declared, index=local, max_size=max_size,
            timeout=int(item.get("timeout", SOURCE_TIMEOUT_DEFAULT))))
    return entries


def _local_source_ok(root: Path, url: str, key: KeyPath, problems: Problems) -> bool:
    """Whether a ``file://`` source names a regular file inside ``root`` (reported if not).

    Checked here so that ``validate`` refuses it; the build checks again when it reads it."""
    try:
        check_confined(root, local_path(url))
        return True
    except Refused as e:
        problems.at(key, f"{url}: {e}", e.hint)
    except FileNotFoundError:
        problems.at(key, f"{url}: no such file", "a file:// URL names an absolute path: "
                    "file:///PATH, inside the directory of the recipe")
    except OSError as e:
        problems.at(key, f"{url}: cannot read it: {e.strerror}")
    return False


def _source_max_size(item: Mapping[str, Any], key: KeyPath, problems: Problems) -> int | None:
    """The entry's ``max_size`` in bytes (the default without one), or None after reporting."""
    value = item.get("max_size", SOURCE_MAX_SIZE_DEFAULT)
    size = value if isinstance(value, int) else parse_size(value)
    if size < 1:
        problems.at(key, f"{value!r} is less than one byte", "give the most bytes the file may "
                    "have, e.g. max_size = \"2G\"")
        return None
    return size
