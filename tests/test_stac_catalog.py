"""StacApiCatalog against a real stac-fastapi-pgstac (tests/fixtures/pgstac.py); the error
branches a real server cannot produce use small loopback servers (tests/helpers/servers.py)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pystac
import pytest
from pystac_client import Client

from aux_assets.auth import StaticAuth
from aux_assets.catalog.base import CatalogError
from aux_assets.catalog.stac_api import GLOBAL_BBOX, StacApiCatalog
from aux_assets.filters import ids_filter
from aux_assets.utils.names import UnsafeNameError
from aux_assets.utils.retry import RetryPolicy
from tests.fixtures.pgstac import PgstacApi, unique_collection_id
from tests.helpers.servers import Handler, send, serve, stac_api_handler

TOKEN = "tok-5ecret-do-not-leak"
QUICK_RETRY = RetryPolicy(attempts=3, backoff_s=0.01)


def make_item(i: int, href: str = "https://storage.test/v1", geometry: bool = False) -> pystac.Item:
    """An orbit-file-like item: a validity range, one asset, no footprint unless asked."""
    start = f"2024-01-{1 + i % 28:02d}T00:00:00Z"
    item = pystac.Item(
        id=f"S1A_OPER_AUX_RESORB_OPOD_{i:06d}.EOF",
        geometry=(
            {"type": "Point", "coordinates": [float(i % 180), float(i % 90)]} if geometry else None
        ),
        bbox=[float(i % 180), float(i % 90)] * 2 if geometry else None,
        datetime=None,
        start_datetime=pystac.utils.str_to_datetime(start),
        end_datetime=pystac.utils.str_to_datetime(start.replace("T00", "T03")),
        properties={"product:type": "AUX_RESORB", "platform": "sentinel-1a"},
    )
    item.add_asset("file", pystac.Asset(href=f"{href}/{item.id}", roles=["data"]))
    return item


@pytest.fixture
def catalog(pgstac_api: PgstacApi) -> Iterator[StacApiCatalog]:
    with StacApiCatalog(pgstac_api.url) as cat:
        yield cat


def record_requests(cat: StacApiCatalog) -> list[httpx.Request]:
    """Every request ``cat`` sends from now on (an event hook on its real client)."""
    sent: list[httpx.Request] = []
    cat._client.event_hooks["request"].append(sent.append)
    return sent


def bulk_requests(sent: list[httpx.Request]) -> list[tuple[str, int]]:
    """The ``method`` and item count of each ``bulk_items`` request in ``sent``."""
    bodies = [json.loads(r.content) for r in sent if r.url.path.endswith("/bulk_items")]
    return [(body["method"], len(body["items"])) for body in bodies]


def test_ensure_collection_is_idempotent_and_readable(
    pgstac_api: PgstacApi, catalog: StacApiCatalog, pgstac_collection: str
) -> None:
    catalog.ensure_collection(pgstac_collection)
    catalog.ensure_collection(pgstac_collection)
    with StacApiCatalog(pgstac_api.url) as other:
        other.ensure_collection(pgstac_collection)  # a fresh client finds it there too
    collection = Client.open(pgstac_api.url).get_collection(pgstac_collection)
    assert collection is not None
    assert collection.id == pgstac_collection
    assert collection.extent.spatial.bboxes == [GLOBAL_BBOX]
    assert catalog.describe() == f"STAC API catalog at {pgstac_api.url}"


def test_bulk_upsert_then_batched_lookup_and_replace(
    pgstac_api: PgstacApi, catalog: StacApiCatalog, pgstac_collection: str
) -> None:
    items = [make_item(i) for i in range(1000)]
    sent = record_requests(catalog)
    catalog.upsert(pgstac_collection, items)  # creates the collection first
    # first alone the items with the extreme datetimes (days 1 and 28), then batches of 500
    assert bulk_requests(sent)[0] == ("insert", 2)
    assert sorted(bulk_requests(sent)) == [("insert", 2), ("insert", 498), ("insert", 500)]

    ids = [item.id for item in items] + [f"MISSING_{i:04d}" for i in range(200)]
    random.Random(7).shuffle(ids)  # missing ids spread over every chunk
    found = catalog.get_items(pgstac_collection, ids)
    assert set(found) == {item.id for item in items}
    assert catalog.lookups == 2  # 1,200 ids in chunks of 1,000
    sample = found[items[17].id]
    assert sample.collection_id == pgstac_collection
    assert sample.properties["start_datetime"] == "2024-01-18T00:00:00Z"
    assert sample.assets["file"].href == f"https://storage.test/v1/{items[17].id}"

    sent.clear()
    catalog.upsert(
        pgstac_collection, [make_item(i, href="https://storage.test/v2") for i in range(1000)]
    )
    assert sorted(bulk_requests(sent)) == [  # each batch a conflict, then replaced
        *[("insert", 2), ("insert", 498), ("insert", 500)],
        *[("upsert", 2), ("upsert", 498), ("upsert", 500)],
    ]
    again = catalog.get_items(pgstac_collection, [item.id for item in items])
    assert {it.assets["file"].href.rsplit("/", 2)[1] for it in again.values()} == {"v2"}
    search = Client.open(pgstac_api.url).search(collections=[pgstac_collection], limit=1000)
    assert search.matched() == 1000  # replaced, not duplicated


def test_items_without_geometry_get_a_global_footprint(
    catalog: StacApiCatalog, pgstac_collection: str
) -> None:
    without, with_point = make_item(1), make_item(2, geometry=True)
    catalog.upsert(pgstac_collection, [without, with_point])
    found = catalog.get_items(pgstac_collection, [without.id, with_point.id])
    assert found[without.id].bbox == GLOBAL_BBOX
    geometry = found[without.id].geometry
    assert geometry is not None and geometry["type"] == "Polygon"
    assert found[with_point.id].geometry == with_point.geometry
    assert without.geometry is None  # the caller's item is not changed


@pytest.mark.parametrize("bad_id", ["S1A:OPER", "S1A/OPER", "../x"])
def test_bad_ids_are_refused_before_any_request(
    pgstac_api: PgstacApi, pgstac_collection: str, bad_id: str
) -> None:
    with StacApiCatalog(pgstac_api.url) as cat:
        sent = record_requests(cat)
        with pytest.raises(UnsafeNameError):
            cat.get_items(pgstac_collection, ["fine", bad_id])
        bad = make_item(3)
        bad.id = bad_id
        with pytest.raises(UnsafeNameError):
            cat.upsert(pgstac_collection, [make_item(4), bad])
        assert sent == []
        assert cat.lookups == 0


def test_lookups_send_ids_as_cql2_json_in_filter(
    catalog: StacApiCatalog, pgstac_collection: str
) -> None:
    catalog.lookup_batch_size = 400
    catalog.upsert(pgstac_collection, [make_item(i) for i in range(10)])
    ids = [make_item(i).id for i in range(600)] + [make_item(3).id]  # a duplicate is sent once
    sent = record_requests(catalog)
    found = catalog.get_items(pgstac_collection, ids)
    assert len(found) == 10
    bodies = [json.loads(r.content) for r in sent]
    assert [r.url.path for r in sent] == ["/search", "/search"]
    assert bodies[0] == {
        "collections": [pgstac_collection],
        "filter": ids_filter(ids[:400]),
        "filter-lang": "cql2-json",
        "limit": 400,
    }
    assert bodies[1]["filter"] == {"op": "in", "args": [{"property": "id"}, ids[400:600]]}
    assert bodies[1]["limit"] == 200


def test_plain_transactions_put_on_conflict(pgstac_api: PgstacApi, pgstac_collection: str) -> None:
    with StacApiCatalog(pgstac_api.url, bulk=False) as cat:
        cat.upsert(pgstac_collection, [make_item(i) for i in range(3)])
        sent = record_requests(cat)
        cat.upsert(
            pgstac_collection, [make_item(i, href="https://storage.test/v2") for i in range(4)]
        )
        # items go max_in_flight at once: each of the 3 there is POSTed, then PUT on 409
        assert sorted(r.method for r in sent) == ["POST"] * 4 + ["PUT"] * 3
        found = cat.get_items(pgstac_collection, [make_item(i).id for i in range(4)])
    assert len(found) == 4
    assert all("/v2/" in item.assets["file"].href for item in found.values())


def dated_item(writer: int, i: int) -> pystac.Item:
    """Item ``i`` of ``writer``: on a day of the writer's own, a minute after item ``i - 1``."""
    item = make_item(writer * 1000 + i)
    start = datetime(2024, 3, 1 + writer, tzinfo=UTC) + timedelta(minutes=i)
    item.common_metadata.start_datetime = start
    item.common_metadata.end_datetime = start + timedelta(hours=3)
    return item


def race(url: str, collection: str, writers: int) -> int:
    """``writers`` threads, each with its own catalog, upsert 100 items of their own day (3
    batches) into ``collection`` at once; the HTTP 5xx answers they got."""
    start = threading.Barrier(writers)
    failures: list[int] = []

    def count(response: httpx.Response) -> None:
        if response.status_code >= 500:
            failures.append(response.status_code)

    def write(writer: int) -> None:
        with StacApiCatalog(url, batch_size=40) as cat:
            cat._client.event_hooks["response"].append(count)
            start.wait()
            cat.upsert(collection, [dated_item(writer, i) for i in range(100)])

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))  # a writer's CatalogError is raised here
    return len(failures)


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_upserts_into_new_collections_all_land(
    pgstac_api: PgstacApi, writers: int
) -> None:
    """Writers of different days racing into a new collection. Without retries 39 of 40 such
    rounds lost a batch to an HTTP 500 (pgstac's check_partition deadlocks, or one writer breaks
    the datetime constraint another has just set); with them every item is stored."""
    ids = [dated_item(w, i).id for w in range(writers) for i in range(100)]
    retried = 0
    for _ in range(3):
        collection = unique_collection_id("race")
        try:
            retried += race(pgstac_api.url, collection, writers)
            with StacApiCatalog(pgstac_api.url) as cat:
                found = cat.get_items(collection, ids)
        finally:
            httpx.delete(f"{pgstac_api.url}/collections/{collection}", timeout=30)
        assert set(found) == set(ids)
    print(f"\n{writers} writers x 3 new collections: {retried} HTTP 5xx answer(s) retried")


def test_errors_name_the_catalog_and_never_the_token(pgstac_api: PgstacApi) -> None:
    url = f"{pgstac_api.url}/not-a-stac-api"
    auth = StaticAuth(origin=url, token=TOKEN)
    with StacApiCatalog(url, auth=auth) as cat, pytest.raises(CatalogError) as err:
        cat.ensure_collection("aux-test")
    message = str(err.value)
    assert f"STAC API catalog at {url}" in message
    assert "ensure collection 'aux-test'" in message and "HTTP 404" in message
    assert TOKEN not in message


def test_server_messages_are_scrubbed_and_truncated() -> None:
    def echo(h: BaseHTTPRequestHandler) -> None:
        body = {"code": "Bad", "description": f"you sent {h.headers['Authorization']} " + "x" * 900}
        send(h, 400, json.dumps(body).encode())

    with (
        serve(echo) as (url, log),
        StacApiCatalog(url, StaticAuth(url, token=TOKEN)) as cat,
        pytest.raises(CatalogError) as err,
    ):
        cat.get_items("c", ["a"])
    message = str(err.value)
    assert TOKEN not in message and "you sent *** xxx" in message
    assert "HTTP 400" in message and "lookup of 1 ids in collection 'c'" in message
    assert len(message) < 500
    assert len(log) == 1  # a client error is not retried


def test_unreachable_catalog_is_a_catalog_error() -> None:
    with serve(stac_api_handler([])) as (url, _):
        pass  # the port is closed again
    with (
        StacApiCatalog(url, timeout_s=2, retry=QUICK_RETRY) as cat,
        pytest.raises(CatalogError) as err,
    ):
        cat.ensure_collection("c")
    assert f"STAC API catalog at {url}: ensure collection 'c' failed after 3 attempts: " in str(
        err.value
    )
    assert "ConnectError" in str(err.value)


def test_next_links_are_followed_and_credentials_stay_on_the_origin() -> None:
    features = [make_item(i).to_dict() for i in range(5)]
    ids = [f["id"] for f in features]
    with serve(stac_api_handler(features[2:], page_size=2)) as (other, other_log):

        def first_page(h: BaseHTTPRequestHandler) -> None:
            h.rfile.read(int(h.headers["Content-Length"]))
            nxt = {"rel": "next", "href": f"{other}/search", "method": "POST", "body": {}}
            page = {"type": "FeatureCollection", "features": features[:2], "links": [nxt]}
            send(h, 200, json.dumps(page).encode())

        with (
            serve(first_page) as (url, log),
            StacApiCatalog(url, StaticAuth(url, token=TOKEN)) as cat,
        ):
            found = cat.get_items("c", ids)
    assert set(found) == set(ids)
    assert cat.lookups == 3  # one page here, two on the other origin
    assert log[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert all("Authorization" not in r["headers"] for r in other_log)


def test_redirects_are_not_followed() -> None:
    with serve(stac_api_handler([])) as (elsewhere, elsewhere_log):

        def redirect(h: BaseHTTPRequestHandler) -> None:
            h.send_response(307)
            h.send_header("Location", f"{elsewhere}/collections/c?key=secret")
            h.send_header("Content-Length", "0")
            h.end_headers()

        with (
            serve(redirect) as (url, _),
            StacApiCatalog(url, StaticAuth(url, token=TOKEN)) as cat,
            pytest.raises(CatalogError) as err,
        ):
            cat.ensure_collection("c")
    assert "307 redirect" in str(err.value) and "secret" not in str(err.value)
    assert elsewhere_log == []


def fake_transactions(status_bulk: int, bulk_answer: dict[str, Any] | None = None) -> Any:
    """A loopback catalog with an existing collection and the given bulk_items behaviour."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers.get("Content-Length", 0)))
        if h.command == "GET":
            send(h, 200, b'{"id": "c"}')
        elif h.path.endswith("/bulk_items"):
            send(h, status_bulk, json.dumps(bulk_answer or {"detail": "Not Found"}).encode())
        else:
            send(h, 201, b"{}")

    return handle


def scripted(answers: list[tuple[int, dict[str, str]] | None], then: Handler) -> Handler:
    """Answer the first requests from ``answers`` (a status and headers, or ``None``: close the
    connection without an answer), the others with ``then``."""
    pending = list(answers)

    def handle(h: BaseHTTPRequestHandler) -> None:
        if not pending:
            then(h)
            return
        answer = pending.pop(0)
        h.rfile.read(int(h.headers.get("Content-Length", 0)))
        if answer is None:
            h.close_connection = True
            return
        status, headers = answer
        body = json.dumps({"description": f"try again later ({status})"}).encode()
        h.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(body)

    return handle


def test_transient_failures_are_retried_honouring_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = [None, (503, {}), (429, {"Retry-After": "1"}), (502, {"Retry-After": "3600"})]
    policy = RetryPolicy(attempts=5, backoff_s=0.01, max_retry_after_s=2.0)
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    with (
        serve(scripted(answers, fake_transactions(200))) as (url, log),
        StacApiCatalog(url, retry=policy) as cat,
    ):
        cat.ensure_collection("c")
    assert [(r["method"], r["path"]) for r in log] == [("GET", "/collections/c")] * 5
    # a dropped connection and a 503: jittered exponential backoff; then Retry-After, capped
    assert 0.005 <= waits[0] <= 0.01 and 0.01 <= waits[1] <= 0.02
    assert waits[2:] == [1.0, 2.0]


def test_retries_give_up_naming_the_catalog_operation_status_and_attempts() -> None:
    def deadlocked(h: BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers.get("Content-Length", 0)))
        if h.command == "GET":
            send(h, 200, b'{"id": "c"}')
            return
        detail = f"deadlock detected (you sent {h.headers['Authorization']})"
        send(h, 500, json.dumps({"description": detail}).encode())

    with (
        serve(deadlocked) as (url, log),
        StacApiCatalog(url, StaticAuth(url, token=TOKEN), retry=QUICK_RETRY) as cat,
        pytest.raises(CatalogError) as err,
    ):
        cat.upsert("c", [make_item(1)])
    assert str(err.value) == (
        f"STAC API catalog at {url}: bulk upsert of 1 items into collection 'c' failed with "
        "HTTP 500 after 3 attempts: deadlock detected (you sent ***)"
    )
    assert err.value.failed_ids == {make_item(1).id}
    assert [r["method"] for r in log] == ["GET", "POST", "POST", "POST"]


@pytest.mark.parametrize(
    ("max_in_flight", "sent", "failed"), [(1, 2, [1, 2, 3, 4]), (2, 3, [1, 2])]
)
def test_a_failed_batch_is_named_and_no_batch_starts_after_it(
    max_in_flight: int, sent: int, failed: list[int]
) -> None:
    """Items 0..5 in batches of 2: the first batch (alone) holds the extreme datetimes, 0 and
    5; then [1, 2] fails while [3, 4] is in flight only if two batches may be."""
    bodies: list[dict[str, Any]] = []

    def handle(h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length", 0))) or b"{}")
        if h.command == "GET":
            send(h, 200, b'{"id": "c"}')
        elif make_item(1).id in body["items"]:
            bodies.append(body)
            send(h, 400, b'{"description": "bad batch"}')
        else:
            bodies.append(body)
            send(h, 200, json.dumps({"success": len(body["items"]), "errors": []}).encode())

    with (
        serve(handle) as (url, _),
        StacApiCatalog(url, batch_size=2, max_in_flight=max_in_flight) as cat,
        pytest.raises(CatalogError) as err,
    ):
        cat.upsert("c", [make_item(i) for i in range(6)])
    assert list(bodies[0]["items"]) == [make_item(0).id, make_item(5).id]
    assert len(bodies) == sent
    assert (
        "bulk upsert of 2 items (batch 2 of 3) into collection 'c' failed with HTTP 400: bad "
        "batch" in str(err.value)
    )
    assert err.value.failed_ids == {make_item(i).id for i in failed}


def test_without_bulk_endpoint_falls_back_to_single_posts_and_remembers() -> None:
    with serve(fake_transactions(404)) as (url, log), StacApiCatalog(url) as cat:
        cat.upsert("c", [make_item(1), make_item(2)])
        cat.upsert("c", [make_item(3)])
    paths = [(r["method"], r["path"]) for r in log]
    assert paths == [
        ("GET", "/collections/c"),
        ("POST", "/collections/c/bulk_items"),
        ("POST", "/collections/c/items"),
        ("POST", "/collections/c/items"),
        ("POST", "/collections/c/items"),  # no second bulk try, no second GET
    ]


def test_bulk_item_errors_are_reported_with_the_refused_ids() -> None:
    refused_id = make_item(2).id
    answer = {"received": 2, "success": 1, "errors": [{"id": refused_id, "msg": "geometry bad"}]}
    with (
        serve(fake_transactions(200, answer)) as (url, _),
        StacApiCatalog(url) as cat,
        pytest.raises(CatalogError, match=r"refused 1 item\(s\).*geometry bad") as err,
    ):
        cat.upsert("c", [make_item(1), make_item(2)])
    assert err.value.failed_ids == {refused_id}


def test_a_401_renews_the_catalog_token_once() -> None:
    class Renewing:
        def __init__(self, origin: str) -> None:
            self.origin, self.token, self.refreshes = origin, "stale", 0

        def headers_for(self, url: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {self.token}"} if url.startswith(self.origin) else {}

        async def refresh(self) -> bool:
            self.refreshes += 1
            self.token = "fresh"
            return True

    inner = fake_transactions(200, {"received": 1, "success": 1, "errors": []})

    def guarded(h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("Authorization") != "Bearer fresh":
            h.rfile.read(int(h.headers.get("Content-Length", 0)))
            send(h, 401, b'{"description": "expired"}')
            return
        inner(h)

    with serve(guarded) as (url, _):
        auth = Renewing(url)
        with StacApiCatalog(url, auth) as cat:
            cat.upsert("c", [make_item(1)])
        assert auth.refreshes == 1


def test_throughput(pgstac_api: PgstacApi, pgstac_collection: str) -> None:
    """Bulk upsert vs one POST per item, and lookup pages (1,000 ids each) per second."""
    with StacApiCatalog(pgstac_api.url) as bulk, StacApiCatalog(pgstac_api.url, bulk=False) as one:
        bulk.ensure_collection(pgstac_collection)
        items = [make_item(i) for i in range(5000)]
        t0 = time.perf_counter()
        bulk.upsert(pgstac_collection, items)
        bulk_rate = len(items) / (time.perf_counter() - t0)

        singles = [make_item(i) for i in range(10_000, 10_200)]
        t0 = time.perf_counter()
        one.upsert(pgstac_collection, singles)
        single_rate = len(singles) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        found = bulk.get_items(pgstac_collection, [item.id for item in items])
        seconds = time.perf_counter() - t0
    assert len(found) == 5000 and bulk.lookups == 5
    print(
        f"\nbulk upsert {bulk_rate:.0f} items/s; one-by-one POST {single_rate:.0f} items/s; "
        f"lookup {bulk.lookups / seconds:.1f} pages/s ({len(found) / seconds:.0f} items/s)"
    )
    assert bulk_rate > single_rate
