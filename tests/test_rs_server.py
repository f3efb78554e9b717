"""Searching the Reference System's real rs-server AUXIP (rs-server-adgs 1.0a4, started by the
``rs_auxip`` fixture in front of a station stub): its dialect, its item shapes, a day planned."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from aux_assets.auth import OAuth2Auth
from aux_assets.discovery import new_items_request, settled_batch
from aux_assets.filters import operators, window_filter
from aux_assets.planning import Window, plan_windows
from aux_assets.products import ProductSpec
from aux_assets.sources.base import SearchError, SearchRequest
from aux_assets.sources.stac_api import StacApiSource
from aux_assets.staging.transfer import (
    TransferEngine,
    TransferError,
    TransferRequest,
    TransferResult,
)
from aux_assets.utils.checksums import Checksum
from aux_assets.utils.retry import RetryPolicy
from tests.fixtures.rs_server import RsAuxip
from tests.helpers.station import (
    CLIENT_SECRET,
    PASSWORD,
    Product,
    account,
    serve_station,
)

DAY = (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC))


def _rs(rs_auxip: RsAuxip) -> StacApiSource:
    return StacApiSource("auxip", rs_auxip.url, dialect="rs-server")


def test_the_rs_server_dialect_is_answered_and_items_have_the_rs_shape(rs_auxip: RsAuxip) -> None:
    cql = window_filter("AUX_POEORB", *DAY, "intersect", ["sentinel-1a"], "rs-server")
    assert operators(cql) == ["=", "and", "t_intersects"]
    items = _rs(rs_auxip).search(SearchRequest(filter=cql, collections=("adgs",)))
    # every file that meets the day, of every unit (the platforms are ours to keep):
    # validities from the 3rd, 4th and 5th at 22:59:42, 26 h long, x 3 units
    assert len(items) == 9
    assert {i.properties["platform"] for i in items} == {
        "sentinel-1a",
        "sentinel-1b",
        "sentinel-1c",
    }
    by_name = {p.name.removesuffix(".EOF"): p for p in rs_auxip.station.products.values()}
    for item in items:
        product = by_name[item.id]  # the id is the file name without its extension
        (key,) = item.assets
        assert key == product.name  # the asset key is the full file name
        asset = item.assets[key]
        assert asset.href == f"{rs_auxip.station.url}/Products({product.id})/$value"
        checksum = asset.extra_fields["file:checksum"]
        assert checksum == hashlib.md5(product.data).hexdigest()  # plain lower-case hex MD5
        assert Checksum.parse(checksum) == Checksum("md5", checksum)
        assert item.properties["auxip:id"] == product.id
        assert "eviction_datetime" in asset.extra_fields
    sent = rs_auxip.station.searches[-1]
    assert "ContentDate/Start lte 2026-01-06T00:00:00.000Z" in sent
    assert "ContentDate/End gte 2026-01-05T00:00:00.000Z" in sent


def test_files_of_no_unit_have_no_platform(rs_auxip: RsAuxip) -> None:
    cql = window_filter("AUX_ECMWFD", *DAY, "intersect", None, "rs-server")
    items = _rs(rs_auxip).search(SearchRequest(filter=cql, collections=("adgs",)))
    # 00-12 h, 12-24 h, and the file from midnight, which touches the day (inclusive bounds)
    assert len(items) == 3 and all(i.id.startswith("S2__") for i in items)
    assert [i.properties.get("platform") for i in items] == [None, None, None]


def test_files_of_no_unit_serve_every_listed_unit_of_their_mission(rs_auxip: RsAuxip) -> None:
    """rs-server's ``platform`` is null for S2__ files: with units listed, each unit gets them."""
    units = ("sentinel-2a", "sentinel-2b")
    spec = ProductSpec(
        product_type="AUX_ECMWFD",
        collection="s2-aux",
        source_collections=("adgs",),
        policy="ValIntersect",
        platforms=units,
    )
    (doc,) = plan_windows([spec], [Window("2026-01-05", *DAY)], {"auxip": _rs(rs_auxip)}).values()
    (meteo,) = doc["products"]
    assert meteo["used_types"] == {unit: ["AUX_ECMWFD"] for unit in units}
    assert meteo["missing_units"] == []
    assert [f["id"][-32:] for f in meteo["selected"]["features"]] == [  # each file once
        "V20260105T000000_20260105T120000",
        "V20260105T120000_20260106T000000",
    ]


def test_a_refused_filter_names_its_operators_and_the_fix(rs_auxip: RsAuxip) -> None:
    cql = window_filter("AUX_POEORB", *DAY, "cover", ["sentinel-1a"])  # the generic dialect
    source = StacApiSource("auxip", rs_auxip.url)
    with pytest.raises(SearchError) as raised:
        source.search(SearchRequest(filter=cql, collections=("adgs",)))
    message = str(raised.value)
    assert "HTTP 422" in message and "auxip at " in message
    assert "'<=', '=', '>=', 'and', 'in'" in message
    assert "set AUX_AUXIP_DIALECT=rs-server" in message


def test_a_day_planned_against_rs_server_selects_per_listed_unit(rs_auxip: RsAuxip) -> None:
    specs = [
        ProductSpec(
            product_type="AUX_POEORB",
            collection="s1-aux",
            source_collections=("adgs",),
            policy="LatestValCover",
            platforms=("sentinel-1a", "sentinel-1c"),
        ),
        ProductSpec(
            product_type="AUX_ECMWFD",
            collection="s2-aux",
            source_collections=("adgs",),
            policy="ValIntersect",
        ),
    ]
    windows = [Window("2026-01-05", *DAY)]
    (doc,) = plan_windows(specs, windows, {"auxip": _rs(rs_auxip)}).values()
    orbits, meteo = doc["products"]
    assert operators(orbits["filter"]) == ["=", "and", "t_intersects"]
    chosen = sorted(f["id"][:3] + f["id"][-33:] for f in orbits["selected"]["features"])
    # per listed unit (sentinel-1b is dropped here): the file covering the day, and the newer
    # one that takes over at 22:59:42 (the day's last sub-window)
    assert chosen == [
        f"{unit}_V{day}T225942_{next_day}T005942"
        for unit in ("S1A", "S1C")
        for day, next_day in (("20260104", "20260106"), ("20260105", "20260107"))
    ]
    assert orbits["missing_units"] == []
    assert set(orbits["used_types"]) == {"sentinel-1a", "sentinel-1c"}
    assert [f["id"][-32:] for f in meteo["selected"]["features"]] == [
        "V20260105T000000_20260105T120000",
        "V20260105T120000_20260106T000000",
    ]


def test_new_products_are_asked_in_the_rs_server_dialect(rs_auxip: RsAuxip) -> None:
    """The sensor's search: no 'in', no '>', no sort on 'published' (rs-server refuses them)."""
    specs = [
        ProductSpec(product_type="AUX_POEORB", collection="s1-aux", alternatives=("AUX_RESORB",)),
        ProductSpec(product_type="AUX_ECMWFD", collection="s2-aux"),
    ]
    orbits = sorted(p.published for p in rs_auxip.station.products.values() if "POEORB" in p.name)
    since = orbits[-4]  # the last 3 orbit files (one per unit) are newer, these 3 are at it
    request = new_items_request(specs, since, 100, "rs-server")
    assert operators(request.filter) == ["="] and request.datetime is not None
    items = _rs(rs_auxip).search(request)
    assert len(items) == 6  # from 'since' on, inclusive
    batch = settled_batch(items, 99, since)
    published = [i.properties["published"] for i in batch.items]
    assert len(published) == 3 and published == sorted(published)
    assert all(i.id.startswith(("S1A", "S1B", "S1C")) for i in batch.items)
    assert "PublicationDate gt" in rs_auxip.station.searches[-1]


def test_pages_are_followed_through_rs_servers_post_next_links(rs_auxip: RsAuxip) -> None:
    """More files than a page: rs-server answers a 'next' link to POST with a token."""
    start = datetime(2026, 2, 1, tzinfo=UTC)
    for n in range(620):  # restituted orbits, one every 3 minutes
        vs = start + timedelta(minutes=3 * n)
        name = f"S1A_OPER_AUX_RESORB_OPOD_{vs:%Y%m%dT%H%M%S}_V{vs:%Y%m%dT%H%M%S}_T{n:04d}.EOF"
        rs_auxip.station.add(
            Product(name, "AUX_RESORB", vs, vs + timedelta(hours=3), vs, vs, ("SENTINEL-1", "A"))
        )
    window = (start, start + timedelta(days=2))
    cql = window_filter("AUX_RESORB", *window, "intersect", None, "rs-server")
    asked = len(rs_auxip.station.searches)
    items = _rs(rs_auxip).search(SearchRequest(filter=cql, collections=("adgs",)))
    assert len(items) == 620 and len({i.id for i in items}) == 620
    assert len(rs_auxip.station.searches) - asked >= 2  # a second page was asked for


def test_a_station_token_is_renewed_once_and_a_second_401_fails_the_file(tmp_path) -> None:
    when = datetime(2026, 1, 5, tzinfo=UTC)
    product = Product("S1A_OPER_AUX_TEST.EOF", "AUX_TEST", when, when, when, when)
    with serve_station([product]) as station:
        auth = OAuth2Auth(account(station.url))
        url = f"{station.url}/Products({product.id})/$value"

        async def fetch(name: str) -> TransferResult:
            async with TransferEngine(retry=RetryPolicy(attempts=2, backoff_s=0.01)) as engine:
                return await engine.fetch(
                    TransferRequest(url, tmp_path / f"{name}.part", auth=auth)
                )

        assert asyncio.run(fetch("a")).size == len(product.data)
        station.revoke()  # the station forgot our token: one renewal, then the bytes
        assert asyncio.run(fetch("b")).size == len(product.data)
        grants = [r["grant_type"] for r in station.token_requests]
        assert grants == ["password", "refresh_token"]  # the renewal used the refresh token
        station.refuse_downloads = True
        with pytest.raises(TransferError) as raised:
            asyncio.run(fetch("c"))
        assert raised.value.reason == "HTTP 401 Unauthorized"
        assert len(station.token_requests) == 3  # renewed once, not in a loop
        assert not (tmp_path / "c.part").exists()
        assert PASSWORD not in str(raised.value) and CLIENT_SECRET not in repr(auth)
