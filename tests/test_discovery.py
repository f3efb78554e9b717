"""The discovery functions behind aux_new_products_sensor (aux_assets.discovery): no Dagster.
The sensor itself is tested in tests/defs/test_sensors.py."""

import json
import random
import time
from datetime import UTC, date, datetime, timedelta

import pystac
import pytest

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
from tests.helpers.items import iso, make_feature, make_item


def _spec(policy: str = "LatestValCover", **fields: object) -> ProductSpec:
    return ProductSpec.model_validate(
        {"product_type": "AUX_X", "collection": "aux", "policy": policy, **fields}
    )


def _days(*texts: str) -> set[date]:
    return {date.fromisoformat(t) for t in texts}


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
        # closest: the compared edge +- 1 day (the stop for ClosestStopValidity, else the start)
        (_spec("ClosestStartValidity"), "2026-03-05T06:00:00Z", None, ("03-04", "03-05", "03-06")),
        (
            _spec("ClosestStopValidity"),
            "2026-03-05T06:00:00Z",
            "2026-03-06T06:00:00Z",
            ("03-05", "03-06", "03-07"),
        ),
        (  # a monitoring file valid from 2000: the days near its stop, not every day since 2000
            _spec("ClosestStopValidity"),
            "2000-01-01T00:00:00Z",
            "2026-03-07T12:00:00Z",
            ("03-06", "03-07", "03-08"),
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
    item = make_item("X", "AUX_X", start, end)
    days = affected_days(item, [spec], date(2026, 3, 1), date(2026, 3, 9))
    assert days == {date.fromisoformat(f"2026-{d}") for d in expected}


def test_affected_days_latest_bounded_by_the_lookback_and_open_start():
    item = make_item("X", "AUX_X", "2026-03-05T06:00:00Z", "2026-03-05T07:00:00Z")
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
    open_start = pystac.Item.from_dict(make_feature("Y", "AUX_X", "2026-03-02T00:00:00Z"))
    del open_start.properties["start_datetime"]
    assert affected_days(open_start, [_spec()], date(2026, 3, 1), date(2026, 3, 9)) == _days(
        "2026-03-01", "2026-03-02"
    )


def test_new_items_of_an_eopf_type_are_asked_from_rs_server_by_the_legacy_type():
    raw = _spec(product_type="S01SIWRAW", source="prip", alternatives=["S01SIWANC"])
    since = datetime(2026, 11, 1, 12, tzinfo=UTC)
    request = new_items_request([raw], since, 50, "rs-server")
    assert request.filter == {
        "op": "=",
        "args": [{"property": "product:type"}, "IW_RAW__0A,IW_RAW__0N"],
    }
    # what rs-server answers carries the EOPF type, which the entry names: it counts
    item = make_item("S1A_IW_RAW__0NDV_X.SAFE", "S01SIWRAW", "2026-11-02T01:00:00Z")
    assert affected_days(item, [raw], date(2026, 11, 1), date(2026, 11, 9)) == _days("2026-11-02")


def test_affected_days_alternatives_platforms_collections():
    item = make_item("X", "AUX_RESORB", "2026-03-05T01:00:00Z", "2026-03-05T04:00:00Z")
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
    broken = make_item("BROKEN", "AUX_X", "2026-03-05T00:00:00Z", "2026-03-04T00:00:00Z")
    with pytest.raises(ValueError, match="before start_datetime"):
        affected_days(broken, [_spec()], date(2026, 3, 1), date(2026, 3, 9))
    good = make_item("GOOD", "AUX_X", "2026-03-05T01:00:00Z", "2026-03-05T02:00:00Z")
    plan = runs_to_request({"auxip": [broken, good]}, [_spec()], date(2026, 3, 1), date(2026, 3, 9))
    assert [r.partition_key for r in plan.runs] == ["2026-03-05"]
    assert [(s.source, s.item_id) for s in plan.skipped] == [("auxip", "BROKEN")]
    assert "before start_datetime" in plan.skipped[0].reason


def test_run_keys_are_stable_deduplicated_and_change_on_republication():
    specs = [_spec(), _spec(source="prip", product_type="AUX_Y")]
    first, last = date(2026, 3, 1), date(2026, 3, 9)
    a = make_item("A", "AUX_X", "2026-03-05T01:00:00Z", "2026-03-06T12:00:00Z")
    b = make_item("B", "AUX_X", "2026-03-05T03:00:00Z", "2026-03-05T04:00:00Z")
    c = make_item("C", "AUX_Y", "2026-03-05T05:00:00Z", "2026-03-05T06:00:00Z")
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
        make_item(
            "A", "AUX_X", "2026-03-05T00:00:00Z", published=datetime(2026, 11, 20, tzinfo=UTC)
        ),
        make_item(
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
    created = make_item("C", "AUX_X", "2026-03-05T00:00:00Z")
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
        return make_item(name, "AUX_X", "2026-03-05T00:00:00Z", published=published)

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
        end = iso(start + timedelta(hours=26)) if kind == "AUX_X" else None
        items.append(make_item(f"I{i}", kind, iso(start), end))
    started = time.perf_counter()
    plan = runs_to_request({"auxip": items}, specs, first, last, latest_from=date(2026, 11, 17))
    seconds = time.perf_counter() - started
    print(f"\nruns_to_request over 10,000 items: {seconds:.2f} s, {len(plan.runs)} runs")
    assert seconds < 5 and len(plan.runs) == (last - first).days + 1
