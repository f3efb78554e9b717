"""Versioned storage: a re-published product never changes bytes a catalog entry points at.

Real parts: HTTP downloads on 127.0.0.1, the real ``Stager`` and ``LocalCatalog``, local files and
a real S3 server (SeaweedFS). A catalog that refuses writes is the local catalog with its
``upsert`` failing (the one injected fault). Every check reads the stored bytes back (files, or
S3 objects with obstore) and compares them with what the catalog announces.
"""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import obstore
import pystac
import pytest
from obstore.store import S3Store

from aux_assets.catalog.base import CatalogError
from aux_assets.catalog.static import LocalCatalog
from aux_assets.staging.stager import ItemOutcome, Stager, StageTask
from aux_assets.storage.base import Storage, StorageError
from aux_assets.storage.local import LocalStorage
from aux_assets.storage.s3 import S3Storage
from aux_assets.utils.checksums import Checksum
from aux_assets.utils.retry import RetryPolicy
from aux_assets.utils.urls import file_path
from tests.fixtures.seaweedfs import S3Server
from tests.helpers.items import asset_item
from tests.helpers.servers import file_handler, serve

FAST = RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.01)
COLLECTION = "s1-aux"


class RefusingCatalog(LocalCatalog):
    """The local catalog, refusing every write while ``refuse`` is set (naming no item) or the
    writes of a batch holding an id in ``refuse_ids``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.refuse = False
        self.refuse_ids: set[str] = set()
        self.batches: list[list[str]] = []
        self.after_upsert: Callable[[], None] | None = None  # another run's write, say

    def upsert(self, collection_id: str, items: Sequence[pystac.Item]) -> None:
        ids = [item.id for item in items]
        self.batches.append(ids)
        if self.refuse or self.refuse_ids & set(ids):
            raise CatalogError("HTTP 500 from the catalog: write refused")
        super().upsert(collection_id, items)
        if self.after_upsert is not None:
            after, self.after_upsert = self.after_upsert, None
            after()


@dataclass
class World:
    src: Path
    url: str
    log: list[dict[str, Any]]
    catalog: RefusingCatalog
    storage: Storage
    read: Any  # href -> bytes or None, read without the code under test
    listing: Any  # () -> sorted keys of every visible stored object
    outcomes: list[ItemOutcome] = field(default_factory=list)

    def publish(self, name: str, data: bytes) -> str:
        (self.src / name).write_bytes(data)
        return f"{self.url}/files/{name}"

    def gets(self) -> int:
        return sum(r["path"].startswith("/files/") for r in self.log)

    def stage(self, item: pystac.Item, *, unpack: bool = False, keep: bool = False) -> ItemOutcome:
        stager = Stager(self.catalog, self.storage, retry=FAST, keep_superseded=keep)
        (outcome,) = stager.stage([StageTask(item, COLLECTION, "auxip", unpack=unpack)])
        return outcome

    def registered(self, item_id: str) -> pystac.Item | None:
        return self.catalog.get_items(COLLECTION, [item_id]).get(item_id)

    def assert_consistent(self) -> None:
        """Every registered asset's bytes exist and match its ``file:size`` and checksum."""
        for item in self.catalog.get_items(COLLECTION, ["ORB", "SAFE", "NEI"]).values():
            for asset in item.assets.values():
                data = self.read(asset.href)
                assert data is not None, f"{asset.href} is registered but missing"
                assert len(data) == asset.extra_fields["file:size"]
                checksum = Checksum.parse(asset.extra_fields["file:checksum"])
                assert hashlib.new(checksum.algorithm, data).hexdigest() == checksum.hexdigest


def _item(item_id: str, key: str, href: str, data: bytes) -> pystac.Item:
    asset = {
        "href": href,
        "type": "application/octet-stream",
        "file:size": len(data),
        "file:checksum": hashlib.md5(data).hexdigest(),
    }
    return asset_item(item_id, {key: asset}, dated=True)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _local(tmp_path: Path) -> tuple[Storage, Any, Any]:
    root = tmp_path / "storage"

    def read(href: str) -> bytes | None:
        path = file_path(href)
        return path.read_bytes() if path is not None and path.is_file() else None

    def listing() -> list[str]:
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )

    return LocalStorage(root), read, listing


def _s3(tmp_path: Path, server: S3Server) -> tuple[Storage, Any, Any]:
    bucket = f"aux-{uuid.uuid4().hex[:12]}"
    server.create_bucket(bucket)
    config = {
        "endpoint": server.endpoint,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "region": "us-east-1",
    }
    store = S3Store(bucket, config=config, client_options={"allow_http": True})  # type: ignore[arg-type]

    def read(href: str) -> bytes | None:
        prefix = f"s3://{bucket}/"
        assert href.startswith(prefix), href
        try:
            return bytes(obstore.get(store, href.removeprefix(prefix)).bytes())
        except FileNotFoundError:
            return None

    def listing() -> list[str]:
        paths = [m["path"].removeprefix("aux/") for b in obstore.list(store, "aux") for m in b]
        return sorted(paths)

    storage = S3Storage(
        bucket,
        "aux",
        endpoint=server.endpoint,
        region="us-east-1",
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        spool_dir=tmp_path / "spool",
    )
    return storage, read, listing


@pytest.fixture(params=["local", "s3"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    if request.param == "local":
        storage, read, listing = _local(tmp_path)
    else:
        storage, read, listing = _s3(tmp_path, request.getfixturevalue("s3_server"))
    src = tmp_path / "src"
    src.mkdir()
    with serve(file_handler(src)) as (url, log):
        catalog = RefusingCatalog(tmp_path / "catalog")
        yield World(src, url, log, catalog, storage, read, listing)


def _generation(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()[:16]


def test_a_republished_file_gets_a_new_key_and_the_old_one_goes_once_registered(
    world: World,
) -> None:
    v1, v2 = b"1" * 1200, b"2" * 1400
    assert world.stage(_item("ORB", "ORB.EOF", world.publish("ORB.EOF", v1), v1)).status == "staged"
    first = world.registered("ORB")
    assert first is not None
    old_href = first.assets["ORB.EOF"].href
    assert world.listing() == [f"{COLLECTION}/ORB/{_generation(v1)}/ORB.EOF"]

    outcome = world.stage(_item("ORB", "ORB.EOF", world.publish("ORB.EOF", v2), v2))
    assert outcome.status == "staged", outcome.reason
    assert outcome.superseded == [f"{COLLECTION}/ORB/{_generation(v1)}"]
    now = world.registered("ORB")
    assert now is not None and now.assets["ORB.EOF"].href != old_href
    assert now.assets["ORB.EOF"].extra_fields["file:size"] == 1400
    assert world.read(now.assets["ORB.EOF"].href) == v2
    assert world.read(old_href) is None  # removed only after the new version was registered
    assert world.listing() == [f"{COLLECTION}/ORB/{_generation(v2)}/ORB.EOF"]
    world.assert_consistent()


def test_a_republication_whose_registration_fails_changes_nothing_the_catalog_points_at(
    world: World,
) -> None:
    v1, v2 = b"1" * 1200, b"2" * 1400
    world.stage(_item("ORB", "ORB.EOF", world.publish("ORB.EOF", v1), v1))
    old_href = world.registered("ORB").assets["ORB.EOF"].href  # type: ignore[union-attr]

    world.catalog.refuse = True
    republished = _item("ORB", "ORB.EOF", world.publish("ORB.EOF", v2), v2)
    failed = world.stage(republished)
    assert failed.status == "failed" and "write refused" in (failed.reason or "")
    kept = world.registered("ORB")
    assert kept is not None and kept.assets["ORB.EOF"].href == old_href
    assert kept.assets["ORB.EOF"].extra_fields["file:size"] == 1200
    assert world.read(old_href) == v1  # the catalog's entry still holds its own bytes
    world.assert_consistent()

    # The re-run re-hashes the verified, unregistered v2 and registers it: no download.
    world.catalog.refuse = False
    gets = world.gets()
    again = world.stage(republished)
    assert again.status == "staged" and again.bytes_transferred == 0
    assert world.gets() == gets
    assert world.read(world.registered("ORB").assets["ORB.EOF"].href) == v2  # type: ignore[union-attr]
    assert world.read(old_href) is None
    world.assert_consistent()


def test_a_stored_file_that_does_not_match_its_key_is_downloaded_again(tmp_path: Path) -> None:
    data = b"o" * 500
    storage, read, _ = _local(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "ORB.EOF").write_bytes(data)
    with serve(file_handler(src)) as (url, log):
        world = World(src, url, log, RefusingCatalog(tmp_path / "catalog"), storage, read, list)
        bad = tmp_path / "storage" / COLLECTION / "ORB" / _generation(data) / "ORB.EOF"
        bad.parent.mkdir(parents=True)
        bad.write_bytes(b"x" * 500)  # bit rot, or a hand edit, under the name of the real bytes
        outcome = world.stage(_item("ORB", "ORB.EOF", f"{url}/files/ORB.EOF", data))
        assert outcome.status == "staged" and outcome.bytes_transferred == 500
        assert bad.read_bytes() == data
        world.assert_consistent()


def test_a_republished_unpacked_product_keeps_none_of_the_old_members(world: World) -> None:
    v1 = _zip({"X.SAFE/manifest.safe": b"<m1/>", "X.SAFE/data/old_only.xml": b"o" * 900})
    v2 = _zip({"X.SAFE/manifest.safe": b"<m2/>", "X.SAFE/data/new.xml": b"n" * 1000})
    world.stage(_item("SAFE", "X.SAFE.zip", world.publish("X.SAFE.zip", v1), v1), unpack=True)
    assert f"{COLLECTION}/SAFE/{_generation(v1)}/X.SAFE/data/old_only.xml" in world.listing()

    outcome = world.stage(
        _item("SAFE", "X.SAFE.zip", world.publish("X.SAFE.zip", v2), v2), unpack=True
    )
    assert outcome.status == "staged", outcome.reason
    assert world.listing() == [
        f"{COLLECTION}/SAFE/{_generation(v2)}/X.SAFE/data/new.xml",
        f"{COLLECTION}/SAFE/{_generation(v2)}/X.SAFE/manifest.safe",
    ]
    world.assert_consistent()


def test_superseded_files_are_kept_when_asked(world: World) -> None:
    v1, v2 = b"1" * 100, b"2" * 200
    world.stage(_item("ORB", "ORB.EOF", world.publish("ORB.EOF", v1), v1))
    outcome = world.stage(_item("ORB", "ORB.EOF", world.publish("ORB.EOF", v2), v2), keep=True)
    assert outcome.status == "staged" and outcome.superseded == []
    assert world.listing() == sorted(f"{COLLECTION}/ORB/{_generation(v)}/ORB.EOF" for v in (v1, v2))
    world.assert_consistent()


def test_a_batch_the_catalog_refuses_is_retried_item_by_item(world: World) -> None:
    good, bad = b"g" * 300, b"b" * 300
    world.catalog.refuse_ids = {"BAD"}
    stager = Stager(world.catalog, world.storage, retry=FAST)
    outcomes = stager.stage(
        [
            StageTask(_item(i, f"{i}.EOF", world.publish(f"{i}.EOF", d), d), COLLECTION, "auxip")
            for i, d in (("BAD", bad), ("ORB", good))
        ]
    )
    assert [(o.item_id, o.status) for o in outcomes] == [("BAD", "failed"), ("ORB", "staged")]
    assert "catalog registration: HTTP 500" in (outcomes[0].reason or "")
    assert world.catalog.batches == [["BAD", "ORB"], ["BAD"], ["ORB"]]
    assert world.registered("ORB") is not None and world.registered("BAD") is None
    world.assert_consistent()


def test_only_what_lies_in_the_items_own_folder_is_removed(world: World) -> None:
    """A previous entry pointing at the collection's folder and at a neighbour's file (a hand
    edit, another tool) loses only its own old generation."""
    v1, v2, other = b"1" * 100, b"2" * 200, b"n" * 50
    world.stage(_item("NEI", "NEI.EOF", world.publish("NEI.EOF", other), other))
    world.stage(_item("ORB", "ORB.EOF", world.publish("ORB.EOF", v1), v1))
    edited = world.registered("ORB")
    neighbour = world.registered("NEI")
    assert edited is not None and neighbour is not None
    edited.add_asset("folder", pystac.Asset(world.storage.href(COLLECTION)))
    edited.add_asset("neighbour", neighbour.assets["NEI.EOF"].clone())
    world.catalog.upsert(COLLECTION, [edited])

    outcome = world.stage(_item("ORB", "ORB.EOF", world.publish("ORB.EOF", v2), v2))
    assert outcome.status == "staged" and outcome.superseded == [
        f"{COLLECTION}/ORB/{_generation(v1)}"
    ]
    assert world.listing() == sorted(
        [
            f"{COLLECTION}/NEI/{_generation(other)}/NEI.EOF",
            f"{COLLECTION}/ORB/{_generation(v2)}/ORB.EOF",
        ]
    )
    world.assert_consistent()


def test_a_version_another_run_registered_meanwhile_is_not_removed(world: World) -> None:
    """Right after our upsert of v2, another run writes its (stale) v1 entry back: v1's bytes
    stay, since the catalog points at them again."""
    v1, v2 = b"1" * 100, b"2" * 200
    world.stage(_item("ORB", "ORB.EOF", world.publish("ORB.EOF", v1), v1))
    stale = world.registered("ORB")
    assert stale is not None
    world.catalog.after_upsert = lambda: LocalCatalog.upsert(world.catalog, COLLECTION, [stale])

    outcome = world.stage(_item("ORB", "ORB.EOF", world.publish("ORB.EOF", v2), v2))
    assert outcome.status == "staged" and outcome.superseded == []
    assert world.registered("ORB").assets["ORB.EOF"].href == stale.assets["ORB.EOF"].href  # type: ignore[union-attr]
    assert world.listing() == sorted(f"{COLLECTION}/ORB/{_generation(v)}/ORB.EOF" for v in (v1, v2))
    world.assert_consistent()


def test_a_version_of_the_layout_without_generations_is_removed_whole(
    world: World, tmp_path: Path
) -> None:
    """An unpacked product stored before generations (``<collection>/<id>/X.SAFE/...``, the
    catalog pointing at its largest member) is removed whole once v2 is registered."""
    members = {"manifest.safe": b"<m0/>", "data/old_only.xml": b"o" * 900}
    for name, data in members.items():
        part = tmp_path / "legacy.part"
        part.write_bytes(data)
        world.storage.commit(part, f"{COLLECTION}/SAFE/X.SAFE/{name}")
    biggest = members["data/old_only.xml"]
    legacy = {
        "href": world.storage.href(f"{COLLECTION}/SAFE/X.SAFE/data/old_only.xml"),
        "file:size": len(biggest),
        "file:checksum": Checksum("md5", hashlib.md5(biggest).hexdigest()).multihash(),
    }
    world.catalog.upsert(COLLECTION, [asset_item("SAFE", {"X.SAFE.zip": legacy}, dated=True)])

    v2 = _zip({"X.SAFE/manifest.safe": b"<m2/>", "X.SAFE/data/new.xml": b"n" * 1000})
    outcome = world.stage(
        _item("SAFE", "X.SAFE.zip", world.publish("X.SAFE.zip", v2), v2), unpack=True
    )
    assert outcome.status == "staged", outcome.reason
    assert outcome.superseded == [f"{COLLECTION}/SAFE/X.SAFE"]
    assert world.listing() == [
        f"{COLLECTION}/SAFE/{_generation(v2)}/X.SAFE/data/new.xml",
        f"{COLLECTION}/SAFE/{_generation(v2)}/X.SAFE/manifest.safe",
    ]
    world.assert_consistent()


class UnreadableStorage(LocalStorage):
    """Local storage whose stored objects cannot be read back."""

    def rehash(self, key: str, algorithm: str) -> tuple[int, Checksum] | None:
        raise StorageError("HTTP 503 from the storage")


def test_a_stored_file_that_cannot_be_read_back_is_downloaded_again(tmp_path: Path) -> None:
    data = b"o" * 500
    src = tmp_path / "src"
    src.mkdir()
    (src / "ORB.EOF").write_bytes(data)
    stored = tmp_path / "storage" / COLLECTION / "ORB" / _generation(data) / "ORB.EOF"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(data)  # verified and left unregistered by a run
    _, read, _ = _local(tmp_path)
    with serve(file_handler(src)) as (url, log):
        catalog = RefusingCatalog(tmp_path / "catalog")
        world = World(src, url, log, catalog, UnreadableStorage(tmp_path / "storage"), read, list)
        outcome = world.stage(_item("ORB", "ORB.EOF", f"{url}/files/ORB.EOF", data))
        assert outcome.status == "staged" and outcome.bytes_transferred == 500, outcome.reason
        world.assert_consistent()
