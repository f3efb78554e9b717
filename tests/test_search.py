import json
from datetime import UTC, datetime

import pystac
import pytest

from aux_assets.auth import StaticAuth
from aux_assets.filters import FilterError, window_filter
from aux_assets.sources import open_source
from aux_assets.sources.base import SearchError, SearchRequest, UnconfiguredSource
from aux_assets.sources.stac_api import StacApiSource
from aux_assets.sources.static import LocalStacSource
from aux_assets.utils.urls import origin_of
from tests.helpers.servers import serve, stac_api_handler


def _feature(i: int, start: str, end: str, ptype: str = "AUX_RESORB") -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": f"ITEM_{i}",
        "collection": "aux",
        "geometry": None,
        "properties": {
            "datetime": None,
            "start_datetime": start,
            "end_datetime": end,
            "product:type": ptype,
            "processing:datetime": f"2026-01-0{i % 9 + 1}T00:00:00Z",
        },
        "assets": {f"ITEM_{i}.EOF": {"href": f"./ITEM_{i}.EOF"}},
        "links": [],
    }


FEATURES = [
    _feature(1, "2026-01-04T22:59:42Z", "2026-01-06T00:59:42Z", "AUX_POEORB"),
    _feature(2, "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", "AUX_POEORB"),  # edges
    _feature(3, "2026-01-05T01:00:00Z", "2026-01-05T04:17:30Z"),
    _feature(4, "2026-01-06T00:00:01Z", "2026-01-07T00:00:00Z", "AUX_POEORB"),
    _feature(5, "2026-01-05T12:00:00Z", "2026-01-05T12:00:00Z", "AUX_WND"),
]
DAY = (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC))


@pytest.fixture
def static_collection(tmp_path):
    coll = pystac.Collection(
        "aux",
        "test",
        pystac.Extent(
            pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
        ),
    )
    for f in FEATURES:
        coll.add_item(pystac.Item.from_dict(f))
    coll.normalize_hrefs(str(tmp_path / "src"))
    coll.save(pystac.CatalogType.SELF_CONTAINED)
    return tmp_path / "src" / "collection.json"


def test_local_source_applies_inclusive_cover_filter(static_collection):
    source = open_source("auxip", static_collection.as_uri())
    assert isinstance(source, LocalStacSource) and source.local
    cql = window_filter("AUX_POEORB", *DAY, "cover")
    items = source.search(SearchRequest(filter=cql))
    assert sorted(i.id for i in items) == ["ITEM_1", "ITEM_2"]
    href = items[0].assets[f"{items[0].id}.EOF"].href
    assert href.startswith("file:///") and href.endswith(f"{items[0].id}.EOF")


def test_local_source_item_collection_limit_datetime_sortby(tmp_path):
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": FEATURES}))
    source = open_source("prip", str(path))
    assert len(source.search(SearchRequest())) == 5
    assert len(source.search(SearchRequest(limit=2))) == 2
    got = source.search(SearchRequest(datetime="2026-01-05T11:00:00Z/2026-01-05T13:00:00Z"))
    assert sorted(i.id for i in got) == ["ITEM_1", "ITEM_2", "ITEM_5"]
    desc = source.search(
        SearchRequest(sortby=({"field": "properties.start_datetime", "direction": "desc"},))
    )
    assert [i.id for i in desc][:2] == ["ITEM_4", "ITEM_5"]
    assert source.search(SearchRequest(collections=("other",))) == []


def test_local_source_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(SearchError, match="file not found"):
        open_source("auxip", (tmp_path / "nope.json").as_uri()).search(SearchRequest())


def test_stac_api_source_follows_all_pages_and_caps_with_limit():
    with serve(stac_api_handler(FEATURES, page_size=2)) as (url, log):
        source = open_source("auxip", url)
        assert isinstance(source, StacApiSource)
        cql = window_filter("AUX_POEORB", *DAY, "cover")
        items = source.search(SearchRequest(filter=cql))
        assert [i.id for i in items] == [f["id"] for f in FEATURES]
        posts = [r for r in log if r["method"] == "POST"]
        assert len(posts) == 3
        capped = source.search(SearchRequest(filter=cql, limit=3))
        assert len(capped) == 3


def test_stac_api_source_sends_credentials_only_to_its_origin():
    with serve(stac_api_handler(FEATURES)) as (url, log):
        auth = StaticAuth(origin=origin_of(url), api_key="s3cr3t-key")
        StacApiSource("auxip", url, auth=auth).search(SearchRequest(limit=1))
        assert all(r["headers"].get("x-api-key") == "s3cr3t-key" for r in log)
        other = StaticAuth(origin="http://elsewhere.example:80", api_key="s3cr3t-key")
        log.clear()
        StacApiSource("auxip", url, auth=other).search(SearchRequest(limit=1))
        assert all("x-api-key" not in {k.lower() for k in r["headers"]} for r in log)


def test_stac_api_errors_name_source_and_url_never_the_secret():
    def broken(h):
        if h.path in {"/", ""}:
            stac_api_handler(FEATURES)(h)
        else:
            h.send_response(500)
            h.send_header("Content-Length", "0")
            h.end_headers()

    with serve(broken) as (url, _):
        auth = StaticAuth(origin=origin_of(url), token="tok-s3cr3t")
        with pytest.raises(SearchError) as err:
            StacApiSource("cadip", f"{url}/?token=tok-s3cr3t", auth=auth).search(SearchRequest())
        message = str(err.value)
        assert "cadip" in message and "127.0.0.1" in message
        assert "s3cr3t" not in message


def test_unreachable_api_is_a_search_error():
    with serve(stac_api_handler(FEATURES)) as (url, _):
        pass  # closed: nothing listens there any more
    with pytest.raises(SearchError, match=r"search in cdse at http://127\.0\.0\.1"):
        StacApiSource("cdse", url, timeout_s=2).search(SearchRequest())


def test_unconfigured_sources_explain_how_to_configure():
    with pytest.raises(SearchError) as err:
        open_source("lta", None).search(SearchRequest())
    assert str(err.value) == (
        "LTA auxiliary product search is not supported yet: no LTA STAC endpoint is configured"
    )
    assert "set AUX_PRIP_URL" in UnconfiguredSource("prip").message()
    with pytest.raises(SearchError, match=r"scheme 'ftp' is not supported"):
        open_source("prip", "ftp://host/stac")


def test_search_request_from_seed_body():
    body = {
        "filter": {"op": "=", "args": [{"property": "product:type"}, "AUX_WND"]},
        "limit": 3,
        "sortby": [],
        "timestamp": "2026-01-05T00:00:00Z/..",
        "ignored": True,
    }
    request = SearchRequest.from_body(body, timeout_s=5)
    assert request.limit == 3 and request.sortby is None and request.timeout_s == 5
    assert request.datetime == "2026-01-05T00:00:00Z/.."
    with pytest.raises(FilterError, match="filter is not valid CQL2"):
        SearchRequest.from_body({"filter": "product:type = "})


def test_open_ended_9999_validity_matches_despite_cql2_overflow(tmp_path):
    far = _feature(9, "2025-05-24T11:03:33Z", "9999-12-31T23:59:59Z", "MPL_ORBSCT")
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [far]}))
    cql = window_filter("MPL_ORBSCT", *DAY, "cover")
    (item,) = open_source("auxip", str(path)).search(SearchRequest(filter=cql))
    assert item.properties["end_datetime"] == "9999-12-31T23:59:59Z"  # returned unchanged


def test_instant_items_with_only_datetime_are_found(tmp_path):
    instant = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": "INSTANT",
        "geometry": None,
        "properties": {"datetime": "2026-01-05T12:00:00Z", "product:type": "AUX_WND"},
        "assets": {},
        "links": [],
    }
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [instant]}))
    cql = window_filter("AUX_WND", *DAY, "intersect")
    assert [i.id for i in open_source("auxip", str(path)).search(SearchRequest(filter=cql))] == [
        "INSTANT"
    ]


def test_a_url_that_is_not_a_stac_api_is_a_clear_search_error():
    def html(h):
        from tests.helpers.servers import send

        send(h, 200, b"<html>portal</html>", "text/html")

    with (
        serve(html) as (url, _),
        pytest.raises(SearchError, match=r"search in prip at .* not STAC JSON"),
    ):
        StacApiSource("prip", url).search(SearchRequest())


def test_local_source_sees_items_added_after_its_first_search(tmp_path):
    from aux_assets.catalog.static import LocalCatalog

    catalog = LocalCatalog(tmp_path / "cat")
    catalog.upsert("s1-aux", [pystac.Item.from_dict({**FEATURES[0], "collection": "s1-aux"})])
    source = open_source("catalog", str(tmp_path / "cat" / "catalog.json"))
    assert len(source.search(SearchRequest())) == 1
    catalog.upsert("s1-aux", [pystac.Item.from_dict({**FEATURES[1], "collection": "s1-aux"})])
    assert len(source.search(SearchRequest())) == 2


class _RenewingAuth:
    """Starts with a stale token; ``refresh`` switches to the one the server accepts."""

    def __init__(self, origin: str) -> None:
        self.origin, self.token, self.refreshes = origin, "stale", 0

    def headers_for(self, url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if origin_of(url) == self.origin else {}

    async def refresh(self) -> bool:
        self.refreshes += 1
        self.token = "fresh"
        return True


def test_a_401_renews_the_token_once_and_searches_again():
    api = stac_api_handler(FEATURES)

    def guarded(h):
        if h.path.startswith("/search") and h.headers.get("Authorization") != "Bearer fresh":
            from tests.helpers.servers import send

            h.rfile.read(int(h.headers.get("Content-Length", 0)))  # keep the connection usable
            send(h, 401, b'{"code": "Unauthorized", "description": "token expired"}')
            return
        api(h)

    with serve(guarded) as (url, _):
        auth = _RenewingAuth(origin_of(url))
        items = StacApiSource("auxip", url, auth=auth).search(SearchRequest())
        assert len(items) == len(FEATURES) and auth.refreshes == 1
        refused = StacApiSource("auxip", url, auth=StaticAuth(origin=origin_of(url), token="x"))
        with pytest.raises(SearchError, match="token expired"):
            refused.search(SearchRequest())


def test_credentials_never_follow_a_redirect_to_another_origin():
    with serve(stac_api_handler(FEATURES)) as (other, other_log):

        def redirecting(h):
            if h.path.startswith("/search"):
                h.rfile.read(int(h.headers.get("Content-Length", 0)))
                h.send_response(307)
                h.send_header("Location", f"{other}/search")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            stac_api_handler(FEATURES)(h)

        with serve(redirecting) as (url, log):
            auth = StaticAuth(origin=origin_of(url), api_key="k-s3cr3t", token="t-s3cr3t")
            items = StacApiSource("auxip", url, auth=auth).search(SearchRequest(limit=2))
            assert len(items) == 2
            assert log[0]["headers"].get("x-api-key") == "k-s3cr3t"  # its own origin: sent
        searched = [r for r in other_log if r["path"].startswith("/search")]
        assert searched
        for request in searched:
            names = {k.lower() for k in request["headers"]}
            assert not names & {"x-api-key", "authorization", "cookie"}


@pytest.mark.parametrize(
    ("cql", "ids"),
    [
        # the product type at the top: only that type's items are looked at
        ({"op": "=", "args": [{"property": "product:type"}, "AUX_WND"]}, ["ITEM_5"]),
        (
            {"op": "in", "args": [{"property": "product:type"}, ["AUX_WND", "AUX_RESORB"]]},
            ["ITEM_3", "ITEM_5"],
        ),
        # not at the top (an 'or', a 'not'): every item is looked at, the filter decides
        (
            {
                "op": "or",
                "args": [
                    {"op": "=", "args": [{"property": "product:type"}, "AUX_WND"]},
                    {"op": "=", "args": [{"property": "id"}, "ITEM_3"]},
                ],
            },
            ["ITEM_3", "ITEM_5"],
        ),
        (
            {
                "op": "not",
                "args": [{"op": "=", "args": [{"property": "product:type"}, "AUX_POEORB"]}],
            },
            ["ITEM_3", "ITEM_5"],
        ),
    ],
)
def test_the_static_index_by_product_type_keeps_cql2_semantics(static_collection, cql, ids):
    source = open_source("auxip", static_collection.as_uri())
    assert sorted(i.id for i in source.search(SearchRequest(filter=cql))) == ids


def test_an_item_added_to_a_static_catalog_is_seen_by_the_next_search(static_collection):
    source = open_source("auxip", static_collection.as_uri())
    wnd = {"op": "=", "args": [{"property": "product:type"}, "AUX_WND"]}
    assert [i.id for i in source.search(SearchRequest(filter=wnd))] == ["ITEM_5"]
    coll = pystac.Collection.from_file(str(static_collection))
    coll.add_item(
        pystac.Item.from_dict(
            _feature(6, "2026-01-05T00:00:00Z", "2026-01-05T01:00:00Z", "AUX_WND")
        )
    )
    coll.normalize_hrefs(str(static_collection.parent))
    coll.save(pystac.CatalogType.SELF_CONTAINED)
    assert sorted(i.id for i in source.search(SearchRequest(filter=wnd))) == ["ITEM_5", "ITEM_6"]


def test_the_static_index_keeps_exact_validity_edges_and_survives_a_broken_date(tmp_path):
    """The index narrows by the filter's validity bounds to the microsecond edge and cql2
    decides; an item whose date is not a timestamp is left out, its neighbours still found."""

    def item(ident: str, start: str, end: str) -> dict:
        props = {
            "product:type": "AUX_X",
            "start_datetime": start,
            "end_datetime": end,
            "datetime": start,
        }
        return {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": ident,
            "geometry": None,
            "properties": props,
            "assets": {},
            "links": [],
        }

    features = [
        item("edge", "2026-01-01T00:00:00.000001Z", "2026-01-02T00:00:00Z"),
        item("before", "2025-12-30T00:00:00Z", "2025-12-31T23:59:59.999999Z"),
        item("broken", "not a date", "2026-01-02T00:00:00Z"),
        item("inside", "2026-01-01T06:00:00Z", "2026-01-01T18:00:00Z"),
    ]
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    window = window_filter(
        "AUX_X", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), "intersect"
    )
    found = LocalStacSource("auxip", path).search(SearchRequest(filter=window))
    assert [i.id for i in found] == ["edge", "inside"]
    cover = window_filter(
        "AUX_X", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), "cover"
    )
    assert LocalStacSource("auxip", path).search(SearchRequest(filter=cover)) == []
