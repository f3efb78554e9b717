"""aux_new_products_sensor on a real local source, and the discovery functions behind it."""

import json
import logging
import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pystac
import pytest
from dagster._core.definitions.sensor_definition import SensorExecutionData

from aux_assets.defs import sensors
from aux_assets.defs.assets import (
    IO_MANAGER,
    aux_catalog_items,
    aux_search_results,
    aux_staged_items,
)
from aux_assets.defs.io_managers import JsonPartitionIOManager
from aux_assets.defs.partitions import daily_partitions
from aux_assets.defs.resources import build_resources
from aux_assets.defs.sensors import aux_new_products_sensor
from aux_assets.discovery import (
    Cursor,
    affected_days,
    new_items_request,
    published_time,
    runs_to_request,
    settled_batch,
)
from aux_assets.filters import parse_filter
from aux_assets.products import ProductSpec

NOW = datetime.now(UTC).replace(microsecond=0)
FIRST = date.fromisoformat(daily_partitions.get_partition_keys()[0])
LAST = date.fromisoformat(daily_partitions.get_partition_keys()[-1])
PRODUCTS = """
products:
  - {product_type: AUX_POEORB, collection: s1-aux, platforms: [sentinel-1a],
     alternatives: [AUX_RESORB]}
  - {product_type: AUX_WND, collection: s1-aux, policy: ClosestStartValidity}
"""


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _feature(
    item_id: str,
    product_type: str,
    start: str,
    end: str | None = None,
    published: datetime | None = None,
    platform: str | None = "sentinel-1a",
    generation: str = "2026-01-01T00:00:00Z",
) -> dict:
    props = {
        "datetime": None,
        "start_datetime": start,
        "end_datetime": end or start,
        "product:type": product_type,
        "processing:datetime": generation,
        "published": _iso(published or NOW - timedelta(hours=1)),
    }
    if platform:
        props["platform"] = platform
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "collection": "aux",
        "geometry": None,
        "properties": props,
        "assets": {},
        "links": [],
    }


def _item(*args: object, **kwargs: object) -> pystac.Item:
    return pystac.Item.from_dict(_feature(*args, **kwargs))  # type: ignore[arg-type]


def _spec(policy: str = "LatestValCover", **fields: object) -> ProductSpec:
    return ProductSpec.model_validate(
        {"product_type": "AUX_X", "collection": "aux", "policy": policy, **fields}
    )


def _days(*texts: str) -> set[date]:
    return {date.fromisoformat(t) for t in texts}


# The items placed in the local source, and the days each serves.
POEORB = _feature("S1A_POEORB_0310", "AUX_POEORB", "2026-03-10T22:59:42Z", "2026-03-12T00:59:42Z")
PLACED = [
    POEORB,  # 03-10 (starts at 22:59), 03-11, 03-12 (ends at 00:59)
    _feature("WND_0401", "AUX_WND", "2026-04-01T06:00:00Z", platform=None),  # 03-31..04-02
    _feature("S1A_RESORB_0505", "AUX_RESORB", "2026-05-05T01:00:00Z", "2026-05-05T04:17:30Z"),
    _feature(
        "S1B_POEORB",
        "AUX_POEORB",
        "2026-03-20T00:00:00Z",
        "2026-03-21T00:00:00Z",
        None,
        "sentinel-1b",
    ),
    _feature("S1A_POEORB_2025", "AUX_POEORB", "2025-06-01T00:00:00Z", "2025-06-02T00:00:00Z"),
    _feature("WND_FUTURE", "AUX_WND", _iso(NOW + timedelta(days=3)), platform=None),
    _feature("OLD", "AUX_WND", "2026-02-01T06:00:00Z", published=NOW - timedelta(days=30)),
]
EXPECTED = ["2026-03-10", "2026-03-11", "2026-03-12"]
EXPECTED += ["2026-03-31", "2026-04-01", "2026-04-02", "2026-05-05"]


def _write(path: Path, features: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    os.replace(tmp, path)  # a new inode: the local source reads it again


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, dict]:
    """The items file (auxip) and the resources reading it with the test products file."""
    items = tmp_path / "items.json"
    _write(items, PLACED)
    (tmp_path / "products.yaml").write_text(PRODUCTS)
    env = {
        "AUX_ASSETS_HOME": str(tmp_path / "home"),
        "AUX_AUXIP_URL": items.as_uri(),
        "AUX_PRODUCTS_FILE": str(tmp_path / "products.yaml"),
    }
    return items, env


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def _tick(
    instance: dg.DagsterInstance,
    env: dict,
    cursor: str | None = None,
    logs: list[str] | None = None,
) -> SensorExecutionData:
    """One tick as the daemon evaluates it, in a code location registering the sensor."""
    resources = {
        **build_resources(env),
        IO_MANAGER: JsonPartitionIOManager(base_dir=str(Path(env["AUX_ASSETS_HOME"]) / "io")),
    }
    defs = dg.Definitions(
        assets=[aux_search_results, aux_staged_items, aux_catalog_items],
        sensors=[aux_new_products_sensor],
        resources=resources,
    )
    sensor = defs.resolve_sensor_def("aux_new_products_sensor")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, definitions=defs
    ) as context:
        context.log.addHandler(_Collect([] if logs is None else logs))
        return sensor.evaluate_tick(context)


def _keys(result: SensorExecutionData) -> list[str]:
    return [r.partition_key for r in result.run_requests or []]


def test_first_tick_requests_the_days_served_then_nothing(setup, instance):
    _, env = setup
    first = _tick(instance, env)
    assert _keys(first) == EXPECTED  # other platform, before/after the partitions: ignored
    assert all(
        r.run_key.startswith(f"aux_new_products:{r.partition_key}:") for r in first.run_requests
    )
    assert first.cursor is not None
    assert json.loads(first.cursor)["published"]["auxip"].startswith(
        _iso(NOW - timedelta(hours=1))[:19]
    )

    again = _tick(instance, env)  # same cursor: the same keys (Dagster would not run them twice)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]

    second = _tick(instance, env, first.cursor)
    assert not second.run_requests
    assert second.skip_message and second.skip_message.startswith(
        "no product published since 2026-"
    )
    assert second.skip_message.endswith("in auxip")
    assert second.cursor == first.cursor


def test_republished_product_requests_its_days_again_with_a_new_run_key(setup, instance):
    items, env = setup
    first = _tick(instance, env)
    republished = _feature(
        "S1A_POEORB_0310_V2",
        "AUX_POEORB",
        POEORB["properties"]["start_datetime"],
        POEORB["properties"]["end_datetime"],
        published=NOW - timedelta(minutes=5),
        generation="2026-06-01T00:00:00Z",
    )
    _write(items, [*PLACED, republished])
    second = _tick(instance, env, first.cursor)
    assert _keys(second) == EXPECTED[:3]
    old = {r.partition_key: r.run_key for r in first.run_requests}
    assert all(r.run_key != old[r.partition_key] for r in second.run_requests)
    assert second.cursor != first.cursor
    assert not _tick(instance, env, second.cursor).run_requests


def test_new_items_outside_the_partitions_only_move_the_cursor(setup, instance):
    items, env = setup
    first = _tick(instance, env)
    late = _feature("LATE", "AUX_WND", "2025-01-01T06:00:00Z", None, NOW, platform=None)
    _write(items, [*PLACED, late])
    result = _tick(instance, env, first.cursor)
    assert not result.run_requests
    assert "1 new item(s) serve no existing partition" in result.skip_message
    assert result.cursor != first.cursor


def test_a_failing_source_is_logged_and_the_others_still_run(setup, instance, tmp_path):
    _, env = setup
    (tmp_path / "products.yaml").write_text(
        PRODUCTS
        + "  - {product_type: AUX_ECMWFD, source: prip, collection: s2-aux}\n"
        + "  - {product_type: AUX_UT1UTC, source: cadip, collection: s2-aux}\n"
        + "  - {product_type: AUX_CAMSFO, source: catalog, collection: s2-aux}\n"
    )
    env = {**env, "AUX_PRIP_URL": "http://127.0.0.1:9/stac"}  # nothing listens on port 9
    logs: list[str] = []
    started = time.perf_counter()
    result = _tick(instance, env, json.dumps({"published": {"prip": "2026-11-01T00:00:00Z"}}), logs)
    print(f"\ntick with an unreachable source: {time.perf_counter() - started:.2f} s")
    assert _keys(result) == EXPECTED
    text = "\n".join(logs)
    assert "ERROR source prip failed: search in prip at http://127.0.0.1:9/stac failed" in text
    assert "WARNING source 'cadip' is not configured" in text
    assert "source catalog is our own catalog: not watched" in text
    assert "source auxip: 6 item(s) published since" in text
    published = json.loads(result.cursor)["published"]
    assert (
        set(published) == {"auxip", "prip"} and published["prip"] == "2026-11-01T00:00:00.000000Z"
    )

    _write(setup[0], [])
    quiet = _tick(instance, env, result.cursor).skip_message
    assert quiet.startswith("no product published since") and "source prip failed" in quiet
    assert "AUX_CADIP_URL" in quiet


def test_a_capped_tick_leaves_the_rest_to_the_next(setup, instance, monkeypatch):
    items, env = setup
    same = NOW - timedelta(minutes=30)
    wnd = [
        _feature(f"WND_{i}", "AUX_WND", f"2026-06-{i + 1:02d}T06:00:00Z", None, None)
        for i in range(5)
    ]
    for i, feature in enumerate(wnd):  # 0, 1 published earlier; 2, 3, 4 at the same instant
        feature["properties"]["published"] = _iso(
            same if i >= 2 else same - timedelta(minutes=9 - i)
        )
    _write(items, wnd)
    monkeypatch.setattr(sensors, "MAX_ITEMS_PER_SOURCE", 3)
    first = _tick(instance, env)  # 4 asked: the cut falls in the instant of 2, 3, 4: they wait
    assert _keys(first) == ["2026-05-31", "2026-06-01", "2026-06-02", "2026-06-03"]
    second = _tick(instance, env, first.cursor)
    assert _keys(second) == [f"2026-06-{d:02d}" for d in range(2, 7)]
    assert not _tick(instance, env, second.cursor).run_requests


def test_ten_thousand_new_items_in_one_tick(setup, instance):
    items, env = setup
    features = []
    span = (LAST - FIRST).days * 86400
    for i in range(10_000):
        start = datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=UTC) + timedelta(
            seconds=span * i // 10_000
        )
        if i % 2:
            feature = _feature(f"WND_{i}", "AUX_WND", _iso(start), platform=None)
        else:
            end = _iso(start + timedelta(hours=26))
            feature = _feature(f"S1A_POEORB_{i}", "AUX_POEORB", _iso(start), end)
        feature["properties"]["published"] = _iso(NOW - timedelta(seconds=10_000 - i))
        features.append(feature)
    _write(items, features)
    started = time.perf_counter()
    result = _tick(instance, env)
    seconds = time.perf_counter() - started
    print(f"\n10,000 new items: tick {seconds:.2f} s, {len(result.run_requests)} runs requested")
    assert seconds < 30
    assert _keys(result) == [
        (FIRST + timedelta(days=d)).isoformat() for d in range((LAST - FIRST).days + 1)
    ]


# --- discovery ----------------------------------------------------------------------------


def test_new_items_request_is_json_with_alternatives_sorted_by_publication():
    poeorb = _spec(product_type="AUX_POEORB", alternatives=["AUX_RESORB"], source_collections=["a"])
    wnd = _spec(product_type="AUX_WND", source_collections=["b", "a"])
    since = datetime(2026, 11, 1, 12, tzinfo=UTC)
    request = new_items_request([wnd, poeorb], since, 500)
    assert request.filter == {
        "op": "and",
        "args": [
            {
                "op": "in",
                "args": [{"property": "product:type"}, ["AUX_POEORB", "AUX_RESORB", "AUX_WND"]],
            },
            {
                "op": ">",
                "args": [{"property": "published"}, {"timestamp": "2026-11-01T12:00:00.000000Z"}],
            },
        ],
    }
    parse_filter(request.filter)  # valid CQL2-JSON
    assert request.collections == ("a", "b") and request.limit == 500
    assert request.sortby == ({"field": "properties.published", "direction": "asc"},)
    assert new_items_request([wnd, _spec()], since, 1).collections is None
    with pytest.raises(ValueError, match="one source"):
        new_items_request([wnd, _spec(source="prip")], since, 1)
    with pytest.raises(ValueError, match="naive"):
        new_items_request([wnd], since.replace(tzinfo=None), 1)


@pytest.mark.parametrize(
    ("spec", "start", "end", "expected"),
    [
        # cover and intersect: the days whose window meets the validity, edges included
        (_spec(), "2026-03-05T00:00:00Z", "2026-03-06T00:00:00Z", ("03-04", "03-05", "03-06")),
        (_spec(), "2026-03-05T01:00:00Z", "2026-03-05T23:00:00Z", ("03-05",)),
        (
            _spec("ValIntersect"),
            "2026-03-05T12:00:00Z",
            "2026-03-08T12:00:00Z",
            ("03-05", "03-06", "03-07", "03-08"),
        ),
        # margins widen the day's window
        (
            _spec(margin_after_s=3600),
            "2026-03-06T00:30:00Z",
            "2026-03-06T02:00:00Z",
            ("03-05", "03-06"),
        ),
        (
            _spec(margin_before_s=3600),
            "2026-03-04T22:00:00Z",
            "2026-03-04T23:30:00Z",
            ("03-04", "03-05"),
        ),
        (_spec(margin_after_s=3599), "2026-03-06T01:00:00Z", "2026-03-06T02:00:00Z", ("03-06",)),
        # closest: validity +- 1 day
        (_spec("ClosestStartValidity"), "2026-03-05T06:00:00Z", None, ("03-04", "03-05", "03-06")),
        (
            _spec("ClosestStopValidity"),
            "2026-03-05T06:00:00Z",
            "2026-03-06T06:00:00Z",
            ("03-04", "03-05", "03-06", "03-07"),
        ),
        (_spec("LatestValidityClosest"), "2026-03-05T06:00:00Z", None, ("03-04", "03-05", "03-06")),
        # latest: from validity start - 1 day to the last day (here 03-09)
        (
            _spec("LatestGeneration"),
            "2026-03-05T06:00:00Z",
            "2026-03-05T07:00:00Z",
            ("03-04", "03-05", "03-06", "03-07", "03-08", "03-09"),
        ),
        (
            _spec("LatestValidity"),
            "2026-03-08T06:00:00Z",
            "2026-03-08T07:00:00Z",
            ("03-07", "03-08", "03-09"),
        ),
        (
            _spec("LatestStopValidity"),
            "2020-01-01T00:00:00Z",
            "2020-01-02T00:00:00Z",
            ("03-01", "03-02", "03-03", "03-04", "03-05", "03-06", "03-07", "03-08", "03-09"),
        ),
        # clamped to [first, last]; open-ended validities
        (_spec(), "2026-02-20T00:00:00Z", "2026-03-02T12:00:00Z", ("03-01", "03-02")),
        (_spec(), "2026-03-08T12:00:00Z", "9999-12-31T23:59:59Z", ("03-08", "03-09")),
        (_spec("ClosestStartValidity"), "2026-03-11T06:00:00Z", None, ()),
        (_spec("ClosestStartValidity"), "2026-03-11T00:00:00Z", None, ("03-09",)),
    ],
)
def test_affected_days_per_policy_kind(spec, start, end, expected):
    item = _item("X", "AUX_X", start, end)
    days = affected_days(item, [spec], date(2026, 3, 1), date(2026, 3, 9))
    assert days == {date.fromisoformat(f"2026-{d}") for d in expected}


def test_affected_days_latest_bounded_by_the_lookback_and_open_start():
    item = _item("X", "AUX_X", "2026-03-05T06:00:00Z", "2026-03-05T07:00:00Z")
    latest = affected_days(
        item,
        [_spec("LatestGeneration")],
        date(2026, 3, 1),
        date(2026, 3, 9),
        latest_from=date(2026, 3, 8),
    )
    assert latest == _days("2026-03-08", "2026-03-09")
    cover = affected_days(
        item, [_spec()], date(2026, 3, 1), date(2026, 3, 9), latest_from=date(2026, 3, 8)
    )
    assert cover == _days("2026-03-05")  # the look-back bounds latest policies only
    open_start = pystac.Item.from_dict(_feature("Y", "AUX_X", "2026-03-02T00:00:00Z"))
    del open_start.properties["start_datetime"]
    assert affected_days(open_start, [_spec()], date(2026, 3, 1), date(2026, 3, 9)) == _days(
        "2026-03-01", "2026-03-02"
    )


def test_affected_days_alternatives_platforms_collections():
    item = _item("X", "AUX_RESORB", "2026-03-05T01:00:00Z", "2026-03-05T04:00:00Z")
    first, last = date(2026, 3, 1), date(2026, 3, 9)
    main = _spec(product_type="AUX_POEORB", alternatives=["AUX_RESORB"])
    assert affected_days(item, [main], first, last) == _days("2026-03-05")
    assert affected_days(item, [_spec(product_type="AUX_POEORB")], first, last) == set()
    other = main.model_copy(update={"platforms": ("sentinel-1c",)})
    assert affected_days(item, [other], first, last) == set()
    elsewhere = main.model_copy(update={"source_collections": ("other",)})
    assert affected_days(item, [elsewhere], first, last) == set()
    wide = main.model_copy(update={"policy": "ValIntersect", "margin_after_s": 86400.0})
    assert affected_days(item, [other, main, wide], first, last) == _days(
        "2026-03-04", "2026-03-05"
    )


def test_unusable_dates_are_skipped_with_their_reason():
    broken = _item("BROKEN", "AUX_X", "2026-03-05T00:00:00Z", "2026-03-04T00:00:00Z")
    with pytest.raises(ValueError, match="before start_datetime"):
        affected_days(broken, [_spec()], date(2026, 3, 1), date(2026, 3, 9))
    good = _item("GOOD", "AUX_X", "2026-03-05T01:00:00Z", "2026-03-05T02:00:00Z")
    plan = runs_to_request({"auxip": [broken, good]}, [_spec()], date(2026, 3, 1), date(2026, 3, 9))
    assert [r.partition_key for r in plan.runs] == ["2026-03-05"]
    assert [(s.source, s.item_id) for s in plan.skipped] == [("auxip", "BROKEN")]
    assert "before start_datetime" in plan.skipped[0].reason


def test_run_keys_are_stable_deduplicated_and_change_on_republication():
    specs = [_spec(), _spec(source="prip", product_type="AUX_Y")]
    first, last = date(2026, 3, 1), date(2026, 3, 9)
    a = _item("A", "AUX_X", "2026-03-05T01:00:00Z", "2026-03-06T12:00:00Z")
    b = _item("B", "AUX_X", "2026-03-05T03:00:00Z", "2026-03-05T04:00:00Z")
    c = _item("C", "AUX_Y", "2026-03-05T05:00:00Z", "2026-03-05T06:00:00Z")
    plan = runs_to_request({"auxip": [a, b, b], "prip": [c]}, specs, first, last)
    assert [(r.partition_key, r.item_ids) for r in plan.runs] == [
        ("2026-03-05", ("A", "B", "C")),
        ("2026-03-06", ("A",)),
    ]
    key = plan.runs[0].run_key
    assert key.startswith("aux_new_products:2026-03-05:") and len(key.rsplit(":", 1)[1]) == 16
    shuffled = runs_to_request({"prip": [c], "auxip": [b, a]}, specs, first, last)
    assert shuffled.runs == plan.runs
    b2 = b.clone()
    b2.properties["published"] = "2030-01-01T00:00:00Z"
    republished = runs_to_request({"auxip": [a, b2], "prip": [c]}, specs, first, last)
    assert republished.runs[0].run_key != key
    assert republished.runs[1].run_key == plan.runs[1].run_key  # 03-06: A alone, unchanged
    moved = runs_to_request({"auxip": [a, b]}, specs, first, last)  # C not there: another set
    assert moved.runs[0].run_key != key


def test_cursor_round_trip_advance_and_errors():
    default = datetime(2026, 11, 17, tzinfo=UTC)
    cursor = Cursor.parse(None, default)
    assert cursor.since("auxip") == default and Cursor.parse("", default) == cursor
    items = [
        _item("A", "AUX_X", "2026-03-05T00:00:00Z", published=datetime(2026, 11, 20, tzinfo=UTC)),
        _item(
            "B", "AUX_X", "2026-03-05T00:00:00Z", published=datetime(2026, 11, 21, 1, tzinfo=UTC)
        ),
    ]
    moved = cursor.advance("auxip", items)
    assert moved.since("auxip") == datetime(2026, 11, 21, 1, tzinfo=UTC)
    assert moved.since("prip") == default
    assert moved.advance("auxip", items[:1]) is moved  # never backwards
    assert moved.advance("auxip", []) is moved
    text = moved.to_text()
    assert json.loads(text) == {"published": {"auxip": "2026-11-21T01:00:00.000000Z"}}
    assert Cursor.parse(text, default) == moved
    created = _item("C", "AUX_X", "2026-03-05T00:00:00Z")
    del created.properties["published"]
    created.properties["created"] = "2026-11-22T00:00:00+02:00"
    assert published_time(created) == datetime(2026, 11, 21, 22, tzinfo=UTC)
    assert moved.advance("auxip", [created]).since("auxip") == published_time(created)
    for bad in ("2026-11-01", "[]", '{"published": {"auxip": "yesterday"}}', "{"):
        with pytest.raises(ValueError, match="fix or delete it"):
            Cursor.parse(bad, default)


def test_settled_batch_keeps_whole_publication_instants():
    def at(minute: int, name: str) -> pystac.Item:
        published = datetime(2026, 11, 24, 10, minute, tzinfo=UTC)
        return _item(name, "AUX_X", "2026-03-05T00:00:00Z", published=published)

    items = [at(3, "d"), at(1, "a"), at(2, "b"), at(2, "c")]
    assert [i.id for i in settled_batch(items, 4).items] == ["a", "b", "c", "d"]
    assert not settled_batch(items, 4).truncated
    cut = settled_batch(items, 2)  # b is kept only with c: both wait
    assert cut.truncated and [i.id for i in cut.items] == ["a"]
    alike = [at(2, "b"), at(2, "c"), at(2, "e")]
    assert [i.id for i in settled_batch(alike, 2).items] == ["b", "c"]


def test_mapping_ten_thousand_items_is_fast():
    rng = random.Random(7)
    specs = [
        _spec(),
        _spec("ClosestStartValidity", product_type="AUX_W"),
        _spec("LatestGeneration", product_type="AUX_G"),
    ]
    first, last = date(2026, 1, 1), date(2026, 11, 23)
    items = []
    for i in range(10_000):
        start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(330 * 1440))
        kind = ("AUX_X", "AUX_W", "AUX_G")[i % 3]
        end = _iso(start + timedelta(hours=26)) if kind == "AUX_X" else None
        items.append(_item(f"I{i}", kind, _iso(start), end))
    started = time.perf_counter()
    plan = runs_to_request({"auxip": items}, specs, first, last, latest_from=date(2026, 11, 17))
    seconds = time.perf_counter() - started
    print(f"\nplan_runs over 10,000 items: {seconds:.2f} s, {len(plan.runs)} runs")
    assert seconds < 5 and len(plan.runs) == (last - first).days + 1
