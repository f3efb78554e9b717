"""Searching and staging from the Reference System's real rs-server PRIP (rs-server-prip
1.0a4, started by the ``rs_prip`` fixture in front of an S1A station stub): an EOPF product
type found by its legacy type, PRIP's item shape, a day planned, new products, pages, and the
files staged from the station with its token, verified against PRIP's checksum."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pystac
import yaml

from aux_assets.auth import OAuth2Auth
from aux_assets.catalog.static import LocalCatalog
from aux_assets.discovery import affected_days, new_items_request
from aux_assets.filters import RS_LEGACY_TYPES, operators, product_type_value, window_filter
from aux_assets.planning import Window, plan_windows
from aux_assets.products import RS_PRODUCTS_FILE, ProductSpec, load_products
from aux_assets.sources.base import SearchRequest
from aux_assets.sources.stac_api import StacApiSource
from aux_assets.staging.stager import Stager, StageTask
from aux_assets.storage.local import LocalStorage
from aux_assets.utils.checksums import Checksum
from aux_assets.utils.retry import RetryPolicy
from aux_assets.utils.urls import file_path
from tests.fixtures.rs_server import RsPrip, prip_products
from tests.fixtures.servers_required import rs_venv
from tests.helpers.station import Product, account

DAY = (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC))
COLLECTION = "S1A_L0_IW_RAW"  # PRIP's collection of the s1a station's IW_RAW__0N
LEGACY = "IW_RAW__0N"
EOPF = "S01SIWRAW"
FAST = RetryPolicy(attempts=2, backoff_s=0.01)


def _prip(rs_prip: RsPrip) -> StacApiSource:
    return StacApiSource("prip", rs_prip.url, dialect="rs-server")


def _of_the_day(rs_prip: RsPrip) -> dict[str, Product]:
    """The fixture's products meeting :data:`DAY`, by PRIP's item id (the name minus '.zip')."""
    names = {p.name for p in prip_products()}
    return {
        p.name.removesuffix(".zip"): p
        for p in rs_prip.station.products.values()
        if p.name in names and p.start <= DAY[1] and p.end >= DAY[0]
    }


def _spec(**changes: object) -> ProductSpec:
    fields: dict[str, object] = {
        "product_type": EOPF,
        "source": "prip",
        "collection": "s1-l0",
        "source_collections": (COLLECTION,),
        "policy": "ValIntersect",
        "platforms": ("sentinel-1a",),
    }
    return ProductSpec.model_validate(fields | changes)


def test_our_legacy_types_are_rs_servers_own_table() -> None:
    """:data:`RS_LEGACY_TYPES` inverts the mapping PRIP applies (its venv's copy)."""
    venv = rs_venv("prip")
    (path,) = venv.glob("lib/python3*/site-packages/config/product_type_mapping.yaml")
    table = yaml.safe_load(path.read_text())["types"]
    for entry in table:
        eopf, legacy = entry["productType"], entry.get("legacyType")
        if not legacy:
            assert eopf not in RS_LEGACY_TYPES
            continue
        ours = RS_LEGACY_TYPES[eopf]
        # rs-server maps a legacy type to the first entry it matches (OPER_MSI has three)
        assert all(re.fullmatch(legacy, t) or t in ours for t in ours)
        assert any(re.fullmatch(legacy, t) for t in ours)
    assert set(RS_LEGACY_TYPES) == {e["productType"] for e in table if e.get("legacyType")}


def test_the_rs_products_file_names_collections_rs_server_has_with_a_type_in_common() -> None:
    """Every source collection of aux_assets/rs_products.yaml is one the installed rs-server
    services configure, and one whose own product type (if it has one) is among those sent
    for the entry: otherwise rs-server answers nothing without asking its station."""
    collections: dict[str, dict[str, object]] = {}
    for service in ("adgs", "prip"):
        (path,) = rs_venv(service).glob(
            f"lib/python3*/site-packages/config/{service}_search_config.yaml"
        )
        for c in yaml.safe_load(path.read_text())["collections"]:
            collections[c["id"]] = c
    for spec in load_products(RS_PRODUCTS_FILE).products:
        sent = str(product_type_value([spec.product_type], "rs-server")).split(",")
        for name in spec.source_collections or ():
            query = collections[name].get("query") or {}
            assert isinstance(query, dict)
            own = query.get("productType")
            assert own is None or own in sent, (spec.product_type, name, own)


def test_an_eopf_type_is_found_by_its_legacy_type_and_items_have_the_prip_shape(
    rs_prip: RsPrip,
) -> None:
    cql = window_filter(EOPF, *DAY, "intersect", ["sentinel-1a"], "rs-server")
    assert operators(cql) == ["=", "and", "t_intersects"]
    items = _prip(rs_prip).search(SearchRequest(filter=cql, collections=(COLLECTION,)))
    expected = _of_the_day(rs_prip)
    assert len(expected) == 3 and sorted(i.id for i in items) == sorted(expected)
    sent = rs_prip.station.searches[-1]
    assert f"att/OData.CSC.StringAttribute/Value eq '{LEGACY}'" in sent
    assert "(ContentDate/Start lte 2026-01-06T00:00:00.000Z and " in sent
    assert "ContentDate/End gte 2026-01-05T00:00:00.000Z)" in sent
    for item in items:
        product = expected[item.id]  # the id is the name minus its last extension only
        assert item.id.endswith(".SAFE") and item.collection_id == COLLECTION
        props = item.properties
        assert props["product:type"] == EOPF  # remapped from the station's IW_RAW__0N
        assert (props["processing:level"], props["sar:instrument_mode"]) == ("RAW", "IW")
        assert (props["platform"], props["constellation"]) == ("sentinel-1a", "sentinel-1")
        assert props["prip:id"] == product.id
        assert props["start_datetime"].startswith(f"{product.start:%Y-%m-%dT%H:%M:%S}")
        assert props["eopf:origin_datetime"].startswith(f"{product.origin:%Y-%m-%dT%H:%M:%S}")
        assert props["sat:absolute_orbit"] == product.extra["orbitNumber"]
        assert props["sar:polarizations"] == "VV&VH"
        assert props["processing:version"] == 3.91  # the station's "003.91", read as a number
        assert item.geometry == product.footprint
        (key,) = item.assets
        assert key == item.id  # not the file name: '.zip' is gone
        asset = item.assets[key]
        assert asset.href == f"{rs_prip.station.url}/Products({product.id})/$value"
        checksum = asset.extra_fields["file:checksum"]
        assert checksum == hashlib.md5(product.data).hexdigest()  # plain lower-case hex MD5
        assert Checksum.parse(checksum) == Checksum("md5", checksum)
        assert asset.extra_fields["file:size"] == len(product.data)
        assert "eviction_datetime" in asset.extra_fields


def test_prip_forwards_the_eopf_type_and_the_platform_to_the_station_unmapped(
    rs_prip: RsPrip,
) -> None:
    """Why we send the legacy type and keep the platforms: as sent, both find nothing."""
    source = _prip(rs_prip)
    as_returned = {"op": "=", "args": [{"property": "product:type"}, EOPF]}
    assert source.search(SearchRequest(filter=as_returned)) == []
    assert f"Value eq '{EOPF}'" in rs_prip.station.searches[-1]
    asked = len(rs_prip.station.searches)
    # with the collection, its own type (IW_RAW__0N) and ours have nothing in common: no search
    assert source.search(SearchRequest(filter=as_returned, collections=(COLLECTION,))) == []
    assert len(rs_prip.station.searches) == asked
    platform = {
        "op": "and",
        "args": [
            {"op": "=", "args": [{"property": "product:type"}, LEGACY]},
            {"op": "=", "args": [{"property": "platform"}, "sentinel-1a"]},
        ],
    }
    assert source.search(SearchRequest(filter=platform, collections=(COLLECTION,))) == []
    assert "Name eq 'platformSerialIdentifier' and " in rs_prip.station.searches[-1]
    assert "Value eq 'sentinel-1a'" in rs_prip.station.searches[-1]  # not 'A'


def test_a_day_planned_against_prip_selects_the_eopf_type_per_listed_unit(
    rs_prip: RsPrip,
) -> None:
    spec = _spec(platforms=("sentinel-1a", "sentinel-1c"))
    windows = [Window("2026-01-05", *DAY)]
    (doc,) = plan_windows([spec], windows, {"prip": _prip(rs_prip)}).values()
    (product,) = doc["products"]
    assert product["filter"]["args"][0]["args"][1] == LEGACY
    assert sorted(f["id"] for f in product["selected"]["features"]) == sorted(_of_the_day(rs_prip))
    assert product["used_types"] == {"sentinel-1a": [EOPF], "sentinel-1c": []}
    assert product["missing_units"] == ["sentinel-1c"]  # the station is S1A's


def test_new_products_are_asked_by_the_legacy_type_and_count_for_the_entry(
    rs_prip: RsPrip,
) -> None:
    spec = _spec()
    since = datetime(2026, 1, 5, tzinfo=UTC)
    request = new_items_request([spec], since, 100, "rs-server")
    items = _prip(rs_prip).search(request)
    assert set(_of_the_day(rs_prip)) <= {i.id for i in items}
    assert all(i.properties["published"] >= "2026-01-05T00:00:00" for i in items)
    assert f"Value eq '{LEGACY}'" in rs_prip.station.searches[-1]
    assert "PublicationDate gt 2026-01-05T00:00:00.000Z" in rs_prip.station.searches[-1]
    # the sort on 'created' reaches the station as its processingDate attribute (AUXIP:
    # PublicationDate); rs-server sorts what it gets again
    assert rs_prip.station.queries[-1]["$orderby"] == "processingDate asc"
    for item in items:
        assert affected_days(item, [spec], date(2026, 1, 1), date(2026, 1, 31))


def _stager(root: Path) -> Stager:
    return Stager(LocalCatalog(root / "catalog"), LocalStorage(root / "storage"), retry=FAST)


def _task(item: pystac.Item, rs_prip: RsPrip) -> StageTask:
    auth = OAuth2Auth(account(rs_prip.station.url))
    return StageTask(item, "s1-l0", "prip", auth=auth)


def test_prip_files_are_staged_from_the_station_with_its_token_and_verified(
    rs_prip: RsPrip, tmp_path: Path
) -> None:
    cql = window_filter(EOPF, *DAY, "intersect", None, "rs-server")
    items = _prip(rs_prip).search(SearchRequest(filter=cql, collections=(COLLECTION,)))
    expected = _of_the_day(rs_prip)
    downloads = len(rs_prip.station.downloads)
    outcomes = _stager(tmp_path).stage([_task(item, rs_prip) for item in items])
    assert sorted(o.status for o in outcomes) == ["staged"] * 3
    for outcome in outcomes:
        (asset,) = outcome.assets
        path = file_path(asset.href)
        assert path is not None and path.read_bytes() == expected[outcome.item_id].data
        assert asset.source_href.startswith(f"{rs_prip.station.url}/Products(")
    assert len(rs_prip.station.downloads) == downloads + 3


def test_a_file_that_does_not_match_prips_checksum_fails_alone(
    rs_prip: RsPrip, tmp_path: Path
) -> None:
    start = datetime(2026, 1, 9, 6, 12, 40, tzinfo=UTC)
    end = start + timedelta(seconds=25)
    name = "S1A_IW_RAW__0NDV_20260109T061240_20260109T061305_062404_07A1F0_9C1D.SAFE.zip"
    product = Product(name, LEGACY, start, end, end, end, ("SENTINEL-1", "A"))
    rs_prip.station.add(product)
    cql = window_filter(EOPF, start, end, "intersect", None, "rs-server")
    (item,) = _prip(rs_prip).search(SearchRequest(filter=cql, collections=(COLLECTION,)))
    product.data = product.data[::-1]  # the same size, other bytes
    (outcome,) = _stager(tmp_path).stage([_task(item, rs_prip)])
    assert outcome.status == "failed" and "checksum" in (outcome.reason or "").lower()
    assert [p for p in (tmp_path / "storage").rglob("*") if p.is_file()] == []


def test_pages_are_followed_through_prips_post_next_links(rs_prip: RsPrip) -> None:
    """More files than a page: PRIP answers a 'next' link to POST with a token, as AUXIP."""
    start = datetime(2026, 2, 1, tzinfo=UTC)
    for n in range(620):  # one 25 s segment every 2 minutes
        vs = start + timedelta(minutes=2 * n)
        stamps = f"{vs:%Y%m%dT%H%M%S}_{vs + timedelta(seconds=25):%Y%m%dT%H%M%S}"
        name = f"S1A_IW_RAW__0NDV_{stamps}_062500_07B000_{n:04X}.SAFE.zip"
        rs_prip.station.add(
            Product(name, LEGACY, vs, vs + timedelta(seconds=25), vs, vs, ("SENTINEL-1", "A"))
        )
    window = (start, start + timedelta(days=2))
    cql = window_filter(EOPF, *window, "intersect", None, "rs-server")
    asked = len(rs_prip.station.searches)
    items = _prip(rs_prip).search(SearchRequest(filter=cql, collections=(COLLECTION,)))
    assert len(items) == 620 and len({i.id for i in items}) == 620
    assert len(rs_prip.station.searches) - asked >= 2  # a second page was asked for
