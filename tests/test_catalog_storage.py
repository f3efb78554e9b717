import os
import threading
import time
from pathlib import Path

import pystac
import pytest

from aux_assets.catalog import open_catalog
from aux_assets.catalog.base import CatalogError
from aux_assets.catalog.stac_api import StacApiCatalog
from aux_assets.catalog.static import LocalCatalog
from aux_assets.storage import open_storage
from aux_assets.storage.base import StorageError, sweep_leftovers
from aux_assets.storage.local import LocalStorage
from aux_assets.storage.s3 import S3Storage
from aux_assets.utils.names import UnsafeNameError, check_collection_id, check_item_id
from aux_assets.utils.urls import file_path


def _item(item_id: str, start: str = "2026-01-05T00:00:00Z", end: str = "2026-01-06T00:00:00Z"):
    return pystac.Item.from_dict(
        {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": item_id,
            "geometry": None,
            "properties": {"datetime": None, "start_datetime": start, "end_datetime": end},
            "assets": {"f": {"href": f"file:///data/{item_id}.EOF"}},
            "links": [],
        }
    )


def test_local_catalog_is_a_valid_static_stac_catalog(tmp_path):
    catalog = LocalCatalog(tmp_path / "cat")
    catalog.ensure_collection("s1-aux")
    catalog.upsert("s1-aux", [_item("A"), _item("B", end="9999-12-31T23:59:59Z")])
    catalog.upsert("s1-aux", [_item("A")])  # upsert again: no duplicate link
    root = pystac.Catalog.from_file(str(tmp_path / "cat" / "catalog.json"))
    (collection,) = list(root.get_children())
    assert collection.id == "s1-aux"
    assert sorted(i.id for i in collection.get_items()) == ["A", "B"]
    interval = collection.extent.temporal.intervals[0]
    assert interval[0].isoformat().startswith("2026-01-05")
    assert interval[1].year == 9999
    assert not list((tmp_path / "cat").rglob("*.tmp"))


def test_get_items_is_one_batched_lookup(tmp_path):
    catalog = LocalCatalog(tmp_path)
    catalog.upsert("s2-aux", [_item("A"), _item("C")])
    found = catalog.get_items("s2-aux", ["A", "B", "C", "A"])
    assert sorted(found) == ["A", "C"] and catalog.lookups == 1
    assert found["A"].assets["f"].href == "file:///data/A.EOF"
    assert catalog.get_items("nothing-here", ["A"]) == {}


def test_concurrent_upserts_keep_every_link(tmp_path):
    catalog = LocalCatalog(tmp_path)

    def write(prefix: str) -> None:
        for i in range(20):
            LocalCatalog(tmp_path).upsert("s3-aux", [_item(f"{prefix}{i}")])

    threads = [threading.Thread(target=write, args=(p,)) for p in "XYZ"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    collection = pystac.Collection.from_file(str(tmp_path / "s3-aux" / "collection.json"))
    assert len(list(collection.get_items())) == 60
    assert len(catalog.get_items("s3-aux", [f"X{i}" for i in range(20)])) == 20


@pytest.mark.parametrize("bad", ["../x", "a/b", "a:b", "a\x00b", "..", "", "a'b", "x y"])
def test_unsafe_item_ids_are_refused(tmp_path, bad):
    with pytest.raises(UnsafeNameError):
        check_item_id(bad)
    with pytest.raises(UnsafeNameError):
        LocalCatalog(tmp_path).upsert("s1-aux", [_item("ok"), _item_with_id(bad)])
    assert not (tmp_path / "s1-aux").exists()


def _item_with_id(item_id: str) -> pystac.Item:
    item = _item("placeholder")
    item.id = item_id
    return item


def test_collection_ids_are_checked():
    assert check_collection_id("s1-aux") == "s1-aux"
    for bad in ["../c", "c/d", "-x", "a b"]:
        with pytest.raises(UnsafeNameError):
            check_collection_id(bad)


def test_local_storage_commits_atomically(tmp_path):
    storage = LocalStorage(tmp_path / "store")
    part = storage.part_path("s1-aux/ITEM/ITEM.EOF")
    assert part.name.endswith(".part") and part.name.startswith(".ITEM.EOF.")
    assert part != storage.part_path("s1-aux/ITEM/ITEM.EOF")  # two runs never share a part
    part.write_bytes(b"data")
    href = storage.commit(part, "s1-aux/ITEM/ITEM.EOF")
    assert file_path(href).read_bytes() == b"data" and not part.exists()
    assert storage.exists(href) and not storage.exists(storage.href("s1-aux/ITEM/missing"))
    assert not storage.exists("s3://bucket/s1-aux/ITEM/ITEM.EOF")
    tree = storage.scratch_dir("s1-aux/ITEM/X.SAFE.zip")
    (tree / "X.SAFE").mkdir(parents=True)
    (tree / "X.SAFE" / "manifest.safe").write_text("m")
    hrefs = storage.commit_tree(tree, "s1-aux/ITEM")
    assert list(hrefs) == ["X.SAFE/manifest.safe"] and not tree.exists()
    assert file_path(hrefs["X.SAFE/manifest.safe"]).read_text() == "m"
    with pytest.raises(UnsafeNameError):
        storage.part_path("s1-aux/../../etc/passwd")


def test_open_storage_and_catalog_urls(tmp_path):
    assert isinstance(open_storage(None, tmp_path, {}, tmp_path), LocalStorage)
    storage = open_storage((tmp_path / "s").as_uri(), tmp_path, {}, tmp_path)
    assert isinstance(storage, LocalStorage) and storage.root == tmp_path / "s"
    with pytest.raises(StorageError, match="use s3://bucket/prefix or file:///path"):
        open_storage("gs://bucket", tmp_path, {}, tmp_path)
    assert isinstance(open_catalog(None, tmp_path), LocalCatalog)
    assert isinstance(open_catalog("http://127.0.0.1:1/stac", tmp_path), StacApiCatalog)
    with pytest.raises(CatalogError, match="use http"):
        open_catalog("ftp://host/cat", tmp_path)


DAY = 24 * 3600


def _age(path: Path, seconds: float) -> Path:
    """Set the mtime of ``path`` (and of everything below it) ``seconds`` in the past."""
    when = time.time() - seconds
    for p in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else [])]:
        os.utime(p, (when, when), follow_symlinks=False)
    return path


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_sweep_removes_only_our_dead_leftovers(tmp_path):
    storage = LocalStorage(tmp_path / "store")
    key = "s1-aux/ITEM/ITEM.EOF"
    old_part = storage.part_path(key)
    old_part.write_bytes(b"half")
    _age(old_part, DAY + 60)
    young_part = storage.part_path(key)
    young_part.write_bytes(b"live")  # a concurrent run writes it now
    old_work = storage.scratch_dir("s1-aux/ITEM/X.SAFE.zip")
    (old_work / "X.SAFE").mkdir(parents=True)
    (old_work / "X.SAFE" / "manifest.safe").write_text("m")
    _age(old_work, DAY + 60)
    live_work = storage.scratch_dir("s1-aux/ITEM/Y.SAFE.zip")
    (live_work / "Y.SAFE").mkdir(parents=True)
    _age(live_work, DAY + 60)
    (live_work / "Y.SAFE" / "new.xml").write_text("just extracted")  # newest inside is young
    folder = tmp_path / "store" / "s1-aux" / "ITEM"
    kept = {
        "ITEM.EOF": "a final name",
        ".ITEM.EOF.part": "no run id",
        "ITEM.EOF.0123456789ab.part": "not hidden",
        ".ITEM.EOF.0123456789AB.part": "not our id",
        ".ITEM.EOF.0123456789ab.part.bak": "another suffix",
        ".0123456789ab.part": "no name",
    }
    for name in kept:
        (folder / name).write_text(kept[name])
        _age(folder / name, DAY + 60)
    assert storage.sweep([key, "s1-aux/ITEM/other.EOF"]) == 2  # one scan of the folder
    assert not old_part.exists() and not old_work.exists()
    assert young_part.exists() and live_work.exists()
    assert all((folder / name).exists() for name in kept)


def test_sweep_never_follows_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.bin"
    victim.write_bytes(b"keep me")
    (outside / "dir").mkdir()
    (outside / "dir" / "inner.bin").write_bytes(b"keep me too")
    (outside / "ITEM").mkdir()
    (outside / "ITEM" / ".X.EOF.0123456789ab.part").write_bytes(b"outside the root")
    _age(outside, 2 * DAY)
    before = _tree(outside)
    storage = LocalStorage(tmp_path / "store")
    folder = tmp_path / "store" / "s1-aux" / "ITEM"
    folder.mkdir(parents=True)
    (folder / ".A.EOF.0123456789ab.part").symlink_to(victim)
    (folder / ".B.SAFE.zip.0123456789ab.work").symlink_to(outside / "dir")
    for link in folder.iterdir():
        _age(link, 2 * DAY)  # the links themselves are old too
    work = folder / ".C.SAFE.zip.0123456789ab.work"
    work.mkdir()
    (work / "link").symlink_to(outside / "dir")  # removed with its folder, target kept
    _age(work, 2 * DAY)
    (tmp_path / "store" / "linked").symlink_to(outside)  # a collection folder that points out
    assert storage.sweep(["s1-aux/ITEM/A.EOF", "linked/ITEM/X.EOF"]) == 1
    assert not work.exists()
    assert (folder / ".A.EOF.0123456789ab.part").is_symlink()
    assert (folder / ".B.SAFE.zip.0123456789ab.work").is_symlink()
    assert _tree(outside) == before and victim.read_bytes() == b"keep me"


def test_sweep_is_harmless_where_there_is_nothing(tmp_path):
    assert sweep_leftovers(tmp_path / "missing") == 0
    assert LocalStorage(tmp_path / "store").sweep(["s1-aux/NEW/NEW.EOF"]) == 0
    assert not (tmp_path / "store").exists()  # the sweep creates nothing


def test_s3_storage_sweeps_its_spool_folder(tmp_path):
    storage = S3Storage(
        "aux-bucket",
        endpoint="http://127.0.0.1:1",
        access_key_id="k",
        secret_access_key="s",
        spool_dir=tmp_path / "spool",
    )
    dead = storage.part_path("s1-aux/ITEM/ITEM.EOF")
    dead.write_bytes(b"half")
    _age(dead, DAY + 60)
    live = storage.part_path("s2-aux/OTHER/OTHER.EOF")
    live.write_bytes(b"live")
    work = storage.scratch_dir("s1-aux/ITEM/X.SAFE.zip")
    work.mkdir()
    _age(work, DAY + 60)
    assert dead.parent == live.parent == tmp_path / "spool"
    assert storage.sweep([]) == 2
    assert not dead.exists() and not work.exists() and live.exists()


def test_an_id_too_long_for_its_temporary_item_file_is_refused_before_any_write(tmp_path):
    """``.<id>.json.<8 hex>.tmp`` adds 19 bytes to the id: 236 bytes fit, 237 are refused
    (not ``[Errno 36] File name too long`` half-way through the upsert)."""
    catalog = LocalCatalog(tmp_path / "cat")
    catalog.upsert("s1-aux", [_item("X" * 236)])
    with pytest.raises(UnsafeNameError) as err:
        catalog.upsert("s1-aux", [_item("Y"), _item("X" * 237)])
    assert "is 237 bytes long in UTF-8" in str(err.value)
    assert "temporary names made from it add 19 bytes" in str(err.value)
    assert list(catalog.get_items("s1-aux", ["Y", "X" * 236])) == ["X" * 236]
