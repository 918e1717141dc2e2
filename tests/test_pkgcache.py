"""The package cache: files kept by digest, offered as copies, what came from it counted."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nspawnbuild import pkgcache


def deb(d: Path, name: str, data: bytes) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)
    return d / name


def test_files_are_kept_by_digest_and_offered_as_copies(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    kept = pkgcache.take_in(cache, [deb(tmp_path / "dl", "a_1_amd64.deb", b"A"),
                                    deb(tmp_path / "dl", "b_2_amd64.deb", b"BB")])
    sha_a = hashlib.sha256(b"A").hexdigest()
    assert kept == {"a_1_amd64.deb": (sha_a, 1),
                    "b_2_amd64.deb": (hashlib.sha256(b"BB").hexdigest(), 2)}
    assert (cache / "packages" / sha_a / "a_1_amd64.deb").read_bytes() == b"A"
    assert (cache / "packages").stat().st_mode & 0o777 == 0o700
    offered = pkgcache.offer(cache, tmp_path / "archives", ".deb")
    assert offered == {name: sha for name, (sha, _size) in kept.items()}
    copy = tmp_path / "archives" / "a_1_amd64.deb"
    copy.write_bytes(b"changed in the build")  # a copy: the cached file is not touched
    assert (cache / "packages" / sha_a / "a_1_amd64.deb").read_bytes() == b"A"
    assert pkgcache.offer(cache, tmp_path / "rpms", ".rpm") == {}  # one kind at a time


def test_what_came_from_the_cache_is_counted_not_assumed(tmp_path: Path) -> None:
    offered = {"a_1_amd64.deb": "aa", "b_2_amd64.deb": "bb", "unused_1_all.deb": "cc"}
    kept = {"a_1_amd64.deb": ("aa", 10),  # offered and used as it was
            "b_2_amd64.deb": ("b2", 20),  # offered, but apt fetched another file (no match)
            "c_3_amd64.deb": ("cc3", 30),  # never cached
            "unused_1_all.deb": ("cc", 5)}
    use = pkgcache.count(["a_1_amd64.deb", "b_2_amd64.deb", "c_3_amd64.deb", "gone_1_all.deb"],
                         offered, kept)
    assert (use.from_cache, use.downloaded, use.downloaded_bytes) == (1, 2, 50)
    assert use.names == ["b_2_amd64.deb", "c_3_amd64.deb"]
    assert "1 packages from the cache, 2 downloaded (50 bytes)" in use.line()
    total = use.add(pkgcache.Use(3, 1, 7))
    assert total.as_dict() == {"from_cache": 4, "downloaded": 3, "downloaded_bytes": 57}


def test_the_count_file_reads_back_and_a_missing_one_is_nothing(tmp_path: Path) -> None:
    pkgcache.write_use(tmp_path / "use.json", pkgcache.Use(2, 3, 4))
    assert pkgcache.read_use(tmp_path / "use.json").as_dict() == \
        {"from_cache": 2, "downloaded": 3, "downloaded_bytes": 4}
    assert pkgcache.read_use(tmp_path / "none.json").as_dict() == \
        {"from_cache": 0, "downloaded": 0, "downloaded_bytes": 0}


def test_only_files_the_consumer_accepts_are_offered_and_links_are_not_followed(
        tmp_path: Path) -> None:
    """apt takes any file of the right size as downloaded: another build's file under a
    package's name (newer, so it would be picked first) is passed over for the one whose
    digest the consumer's index gives, and a link where the copy goes is replaced, never
    written through."""
    cache = tmp_path / "cache"
    genuine = pkgcache.take_in(cache, [deb(tmp_path / "a", "less_1_amd64.deb", b"GOOD")])
    planted = pkgcache.take_in(cache, [deb(tmp_path / "b", "less_1_amd64.deb", b"EVIL")])
    good, evil = genuine["less_1_amd64.deb"][0], planted["less_1_amd64.deb"][0]
    os.utime(cache / "packages" / good, (1, 1))  # the planted one is the most recently used
    archives = tmp_path / "archives"
    archives.mkdir()
    victim = tmp_path / "host-file"
    victim.write_bytes(b"host")
    (archives / "less_1_amd64.deb").symlink_to(victim)
    offered = pkgcache.offer(cache, archives, ".deb", accept=lambda name, sha: sha == good)
    assert offered == {"less_1_amd64.deb": good}
    assert (archives / "less_1_amd64.deb").read_bytes() == b"GOOD"
    assert not (archives / "less_1_amd64.deb").is_symlink() and victim.read_bytes() == b"host"
    assert pkgcache.offer(cache, tmp_path / "none", ".deb", accept=lambda n, s: False) == {}
    assert evil != good
