"""aux_new_products_sensor on a real local source. The discovery functions behind it (no Dagster)
are tested in tests/test_discovery.py."""

import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
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
from aux_assets.sample.living import SAMPLE_FOLDER, LivingSample
from tests.helpers.items import NOW, iso, make_feature

FIRST = date.fromisoformat(daily_partitions.get_partition_keys()[0])
LAST = date.fromisoformat(daily_partitions.get_partition_keys()[-1])
PRODUCTS = """
products:
  - {product_type: AUX_POEORB, collection: s1-aux, platforms: [sentinel-1a],
     alternatives: [AUX_RESORB]}
  - {product_type: AUX_WND, collection: s1-aux, policy: ClosestStartValidity}
"""


# The items placed in the local source, and the days each serves.
POEORB = make_feature(
    "S1A_POEORB_0310", "AUX_POEORB", "2026-03-10T22:59:42Z", "2026-03-12T00:59:42Z"
)
PLACED = [
    POEORB,  # 03-10 (starts at 22:59), 03-11, 03-12 (ends at 00:59)
    make_feature("WND_0401", "AUX_WND", "2026-04-01T06:00:00Z", platform=None),  # 03-31..04-02
    make_feature("S1A_RESORB_0505", "AUX_RESORB", "2026-05-05T01:00:00Z", "2026-05-05T04:17:30Z"),
    make_feature(
        "S1B_POEORB",
        "AUX_POEORB",
        "2026-03-20T00:00:00Z",
        "2026-03-21T00:00:00Z",
        None,
        "sentinel-1b",
    ),
    make_feature("S1A_POEORB_2025", "AUX_POEORB", "2025-06-01T00:00:00Z", "2025-06-02T00:00:00Z"),
    make_feature("WND_FUTURE", "AUX_WND", iso(NOW + timedelta(days=3)), platform=None),
    make_feature("OLD", "AUX_WND", "2026-02-01T06:00:00Z", published=NOW - timedelta(days=30)),
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
        iso(NOW - timedelta(hours=1))[:19]
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
    republished = make_feature(
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
    late = make_feature("LATE", "AUX_WND", "2025-01-01T06:00:00Z", None, NOW, platform=None)
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
        make_feature(f"WND_{i}", "AUX_WND", f"2026-06-{i + 1:02d}T06:00:00Z", None, None)
        for i in range(5)
    ]
    for i, feature in enumerate(wnd):  # 0, 1 published earlier; 2, 3, 4 at the same instant
        feature["properties"]["published"] = iso(
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
            feature = make_feature(f"WND_{i}", "AUX_WND", iso(start), platform=None)
        else:
            end = iso(start + timedelta(hours=26))
            feature = make_feature(f"S1A_POEORB_{i}", "AUX_POEORB", iso(start), end)
        feature["properties"]["published"] = iso(NOW - timedelta(seconds=10_000 - i))
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


def _deadline_tick(instance: dg.DagsterInstance, cursor: str | None = None) -> SensorExecutionData:
    defs = dg.Definitions(sensors=[sensors.aux_deadline_sensor])
    sensor = defs.resolve_sensor_def("aux_deadline_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as context:
        return sensor.evaluate_tick(context)


def _materialized(instance: dg.DagsterInstance, day: str, coverage: dict[str, bool]) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            aux_catalog_items.key,
            partition=day,
            metadata={"coverage": dg.MetadataValue.json(coverage)},
        )
    )


def test_deadline_sensor_turns_late_days_red_once_and_green_when_complete(instance, monkeypatch):
    """The days due in the look-back (3 days here) are judged from their latest catalog
    materialization; a verdict is recorded only when it changes."""
    monkeypatch.setenv("AUX_SENSOR_LOOKBACK_DAYS", "3")
    now = datetime.now(UTC)
    due = [
        d
        for d in daily_partitions.get_partition_keys(current_time=now)[-6:]
        if datetime.fromisoformat(d).replace(tzinfo=UTC) + timedelta(days=1, hours=30) <= now
    ][-3:]
    _materialized(instance, due[0], {"AUX_POEORB": True})
    _materialized(instance, due[1], {"AUX_POEORB": False, "AUX_WND": True})

    first = _deadline_tick(instance)
    verdicts = {e.partition: e for e in first.asset_events}
    assert set(verdicts) == set(due)
    assert verdicts[due[0]].passed and "complete as of" in str(verdicts[due[0]].description)
    assert not verdicts[due[1]].passed
    assert f"{due[1]} is late: due " in str(verdicts[due[1]].description)
    assert "incomplete at" in str(verdicts[due[1]].description)
    assert "AUX_POEORB" in str(verdicts[due[1]].description)
    assert "never materialized" in str(verdicts[due[2]].description)
    assert all(e.check_name == "catalog_on_time" for e in first.asset_events)
    assert all(e.severity == dg.AssetCheckSeverity.WARN for e in first.asset_events)
    assert verdicts[due[1]].metadata["hours_late"].value > 0

    second = _deadline_tick(instance, first.cursor)
    assert not second.asset_events  # nothing changed: nothing recorded again
    assert second.skip_message == (
        f"3 due day(s) judged, no verdict changed (late: {due[1]}, {due[2]})"
    )

    _materialized(instance, due[2], {"AUX_POEORB": True})
    third = _deadline_tick(instance, second.cursor)
    assert [(e.partition, e.passed) for e in third.asset_events] == [(due[2], True)]


def test_deadline_sensor_judges_the_last_due_days_whatever_the_deadline(instance, monkeypatch):
    """A deadline of 10 days (waiting for precise orbits) still judges the look-back's days:
    the last ones due, not the last calendar days."""
    monkeypatch.setenv("AUX_SENSOR_LOOKBACK_DAYS", "3")
    monkeypatch.setenv("AUX_DUE_AFTER_HOURS", "240")
    now = datetime.now(UTC)
    keys = daily_partitions.get_partition_keys(current_time=now)
    due = [
        d for d in keys if datetime.fromisoformat(d).replace(tzinfo=UTC) + timedelta(days=11) <= now
    ][-3:]
    tick = _deadline_tick(instance)
    assert [e.partition for e in tick.asset_events] == due
    assert all("due " in str(e.description) for e in tick.asset_events)


def test_on_the_embedded_default_a_frozen_clock_shows_nothing_until_a_precise_orbit_is_published(
    tmp_path, instance, monkeypatch
):
    """The sensor on the living sample: with the clock just before the publication of the
    precise orbit of 2026-03-10 (sentinel-1a), nothing is new; one second after it, exactly the
    days that orbit serves are requested."""
    (tmp_path / "products.yaml").write_text(
        "products:\n  - {product_type: AUX_POEORB, collection: s1-aux, platforms: [sentinel-1a]}\n"
    )
    env = {
        "AUX_ASSETS_HOME": str(tmp_path / "home"),
        "AUX_PRODUCTS_FILE": str(tmp_path / "products.yaml"),
    }
    sample = LivingSample(tmp_path / "home" / SAMPLE_FOLDER, FIRST)
    days = sample.days(date(2026, 3, 10), date(2026, 3, 10), datetime(2027, 1, 1, tzinfo=UTC))
    assert days is not None
    (orbit,) = [
        p
        for p in sample.products(days, ["AUX_POEORB"], datetime(2027, 1, 1, tzinfo=UTC))
        if p.platform == "S1A" and "_V20260309T225942_" in p.name
    ]
    published = orbit.dates.publication
    before = published - timedelta(seconds=1)
    monkeypatch.setenv("AUX_NOW", before.isoformat())
    cursor = json.dumps({"published": {"auxip": (before - timedelta(minutes=1)).isoformat()}})
    quiet = _tick(instance, env, cursor)
    assert not quiet.run_requests
    assert quiet.skip_message.startswith("no product published since")

    monkeypatch.setenv("AUX_NOW", (published + timedelta(seconds=1)).isoformat())
    arrived = _tick(instance, env, quiet.cursor)
    # validity 2026-03-09T22:59:42 .. 2026-03-11T00:59:42: the three days it meets
    assert _keys(arrived) == ["2026-03-09", "2026-03-10", "2026-03-11"]
    assert json.loads(arrived.cursor)["published"]["auxip"].startswith(
        f"{published:%Y-%m-%dT%H:%M:%S}"
    )
    assert not _tick(instance, env, arrived.cursor).run_requests  # nothing new after it
