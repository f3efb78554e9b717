"""RsServerCatalog against the real rs-server-catalog: owner-scoped collections, assets keyed by
file name, local hrefs refused before any request."""

from __future__ import annotations

import uuid

import obstore
import pystac
import pytest

from aux_assets.catalog.base import CatalogError
from aux_assets.catalog.rs_server import RsServerCatalog
from tests.fixtures.rs_catalog import CATALOG_BUCKET, HOST_USER, RsCatalog
from tests.helpers.items import make_item


def _staged(rs_catalog: RsCatalog, bucket: str, collection: str, n: int) -> list[pystac.Item]:
    """``n`` items whose one asset (key ``product``) is an object we put in ``bucket``."""
    store = rs_catalog.s3.store(bucket)
    items = []
    for i in range(n):
        item = make_item(f"S1A_OPER_AUX_POEORB_{i}", "AUX_POEORB", f"2026-01-0{i + 1}T00:00:00Z")
        key = f"{collection}/{item.id}/{item.id}.EOF"
        obstore.put(store, key, f"bytes of {item.id}".encode())
        item.assets = {"product": pystac.Asset(f"s3://{bucket}/{key}", roles=["data"])}
        items.append(item)
    return items


def test_collections_are_the_owners_and_assets_are_keyed_by_file_name(
    rs_catalog: RsCatalog,
) -> None:
    bucket, collection = f"aux-{uuid.uuid4().hex[:8]}", f"aux-{uuid.uuid4().hex[:8]}"
    rs_catalog.s3.create_bucket(bucket)
    items = _staged(rs_catalog, bucket, collection, 3)
    owner = "teamb"
    assert owner != HOST_USER  # the server's own user would be implied by a bare id
    with (
        RsServerCatalog(rs_catalog.url, owner) as ours,
        RsServerCatalog(rs_catalog.url, HOST_USER) as theirs,
    ):
        ours.upsert(collection, items)
        found = ours.get_items(collection, [i.id for i in items] + ["missing"])
        assert sorted(found) == sorted(i.id for i in items)
        for item in items:
            (key, asset) = next(iter(found[item.id].assets.items()))
            assert key == f"{item.id}.EOF"  # sent under the file name, not "product"
            assert asset.href == f"s3://{CATALOG_BUCKET}/{collection}/{item.id}/{item.id}.EOF"
        assert f"/collections/{owner}:{collection}/items/" in ours.item_url(collection, "x")
        # the same collection name of another owner is another collection
        theirs.ensure_collection(collection)
        assert theirs.get_items(collection, [i.id for i in items]) == {}


def test_local_hrefs_are_refused_before_any_request(rs_catalog: RsCatalog, tmp_path) -> None:
    item = make_item("S1A_OPER_AUX_POEORB_1", "AUX_POEORB", "2026-01-01T00:00:00Z")
    item.assets = {"product": pystac.Asset(str(tmp_path / "x.EOF"))}  # a local file
    with RsServerCatalog(rs_catalog.url, "teamb") as catalog:
        with pytest.raises(CatalogError, match=r"takes only s3:// assets: set AUX_STORAGE_URL"):
            catalog.upsert("never-created", [item])
        assert catalog.lookups == 0 and "never-created" not in catalog._ensured


@pytest.mark.parametrize("owner", ["", "ops-team", "ops:x", "équipe"])
def test_an_owner_the_seeds_client_would_rewrite_is_refused(owner: str) -> None:
    with pytest.raises(CatalogError, match="ASCII letters and digits only"):
        RsServerCatalog("http://127.0.0.1:9/catalog", owner)


def test_registering_again_keeps_the_catalogs_copy(rs_catalog: RsCatalog) -> None:
    """A second insert of the same items (a retry of an insert the server did) is a 409: with
    the same files the catalog's item is kept (a replace would point at our object, which the
    catalog moved away); with new bytes it is replaced."""
    bucket, collection = f"aux-{uuid.uuid4().hex[:8]}", f"aux-{uuid.uuid4().hex[:8]}"
    rs_catalog.s3.create_bucket(bucket)
    items = _staged(rs_catalog, bucket, collection, 2)
    for item in items:
        item.assets["product"].extra_fields["file:checksum"] = f"d5{'0' * 30}"
    catalog_store = rs_catalog.s3.store(CATALOG_BUCKET)
    with RsServerCatalog(rs_catalog.url, "teamb") as catalog:
        catalog.upsert(collection, items)
        catalog.upsert(collection, items)  # our objects are gone: only the catalog has them
        found = catalog.get_items(collection, [i.id for i in items])
        for item in items:
            (asset,) = found[item.id].assets.values()
            assert asset.href.startswith(f"s3://{CATALOG_BUCKET}/")
            assert obstore.head(catalog_store, asset.href.split("/", 3)[3])["size"] > 0
        # a new generation of the first item (other bytes, other checksum) replaces it
        (renewed,) = _staged(rs_catalog, bucket, collection, 1)
        renewed.assets["product"].extra_fields["file:checksum"] = f"d5{'1' * 30}"
        catalog.upsert(collection, [renewed])
        (asset,) = catalog.get_items(collection, [renewed.id])[renewed.id].assets.values()
        assert asset.extra_fields["file:checksum"] == f"d5{'1' * 30}"
        assert asset.href.startswith(f"s3://{bucket}/")  # rs-server-catalog keeps ours on PUT
        assert obstore.head(rs_catalog.s3.store(bucket), asset.href.split("/", 3)[3])["size"] > 0
