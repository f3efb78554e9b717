"""The code location in the real Dagster webserver + daemon, driven through GraphQL (results
also read back from the instance's storage and the documents under AUX_ASSETS_HOME).

One module-scoped pair of servers on a file source we control (a FeatureCollection of sample
AUX_POEORB and AUX_WND items, and AUX_RESORB items around 2026-01-08, whose precise orbit is
withheld at first): the location loads; a 7-day asset backfill runs as one range run
(``BackfillPolicy.multi_run(10)``); Chromium renders the asset graph (screenshot saved to
``docs/asset-graph.png``); the sensor requests the days of a newly published orbit; a 3-day range
run records its checks per day (the day without a precise orbit fails and is late, the two others
pass); the sensor re-runs 2026-01-08 when its precise orbit is published, and the day's summary
says what it replaced; Chromium, driven over the DevTools protocol, renders the per-day check
results of the asset page (screenshot saved to ``docs/asset-checks.png``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import math
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from aux_assets.utils.urls import file_path
from tests.fixtures.servers_required import unavailable
from tests.helpers.dagster_servers import (
    ASSET_KEYS,
    BINARIES,
    DAGSTER_YAML,
    LOCATION,
    REPO,
    TERMINAL,
    DagsterServers,
    ServersNotReady,
    dagster_servers,
)

REPOSITORY = "__repository__"
DAYS = [(date(2026, 1, 1) + timedelta(days=n)).isoformat() for n in range(7)]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "docs" / "asset-graph.png"
CHECKS_SCREENSHOT = REPO / "docs" / "asset-checks.png"
# Sample items copied to the file source: every day of DAYS needs its POEORB and WND. The
# sample's POEORB validities end on 2026-01-09 00:59:42, its WND on 2026-01-09 18:00.
COPIED_TYPES = {"AUX_POEORB", "AUX_WND"}
COPY_FROM, COPY_TO = datetime(2025, 12, 30, tzinfo=UTC), datetime(2026, 1, 10, tzinfo=UTC)
# The day whose precise orbit arrives late: the POEORB items covering it are withheld from the
# source at first (the restituted orbits around it fill in), then published by the test.
LATE_ORBIT_DAY = "2026-01-08"
RESORB_FROM, RESORB_TO = datetime(2026, 1, 7, 12, tzinfo=UTC), datetime(2026, 1, 9, 12, tzinfo=UTC)
# One range run of three days: 2026-01-07 has its POEORB, 2026-01-08 a POEORB for its first hour
# and RESORBs for the rest; 2026-01-09 has no POEORB, and the RESORBs copied stop at 02:32:57.
RANGE_DAYS = ["2026-01-07", LATE_ORBIT_DAY, "2026-01-09"]
LACKING_DAY = "2026-01-09"
REPUBLISHED = "S1A_OPER_AUX_POEORB_OPOD_20260124T070359_V20260103T225942_20260105T005942"
PRODUCTS = """\
products:
  - product_type: AUX_POEORB
    source: auxip
    collection: s1-aux
    policy: LatestValCover
    platforms: [sentinel-1a]
    mandatory: true
    alternatives: [AUX_RESORB]
  - product_type: AUX_WND
    source: auxip
    collection: s1-aux
    policy: ClosestStartValidity
    mandatory: true
"""
SENSOR_INTERVAL_S = 30


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _absolute_hrefs(item: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The item with its relative asset hrefs made absolute ``file://`` URIs."""
    for asset in item.get("assets", {}).values():
        if "://" not in asset["href"]:
            asset["href"] = (folder / asset["href"]).resolve().as_uri()
    return item


def _midnight(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)


def write_source(sample: Path, target: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A FeatureCollection of the sample's POEORB/WND items around DAYS and its RESORB items
    around LATE_ORBIT_DAY, without the POEORB items covering all of LATE_ORBIT_DAY; returns its
    features and the POEORB items withheld."""
    features, withheld = [], []
    late_start = _midnight(LATE_ORBIT_DAY)
    late_end = late_start + timedelta(days=1)
    for path in sorted(sample.glob("*/*.json")):
        item = json.loads(path.read_text(encoding="utf-8"))
        props = item.get("properties", {})
        ptype = props.get("product:type")
        if ptype not in {*COPIED_TYPES, "AUX_RESORB"}:
            continue
        start = _time(props.get("start_datetime") or props["datetime"])
        end = _time(props.get("end_datetime") or props["datetime"])
        low, high = (RESORB_FROM, RESORB_TO) if ptype == "AUX_RESORB" else (COPY_FROM, COPY_TO)
        if end < low or start > high:
            continue
        item = _absolute_hrefs(item, path.parent)
        if ptype == "AUX_POEORB" and start <= late_start and end >= late_end:
            withheld.append(item)
        else:
            features.append(item)
    _write_features(target, features)
    return features, withheld


def _write_features(target: Path, features: list[dict[str, Any]]) -> None:
    """The source file replaced at once: a tick never reads it half-written."""
    partial = target.with_suffix(".part")
    partial.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    os.replace(partial, target)


@dataclass
class Servers(DagsterServers):
    """The running servers, and the file source they read."""

    source: Path = Path()
    features: list[dict[str, Any]] = field(default_factory=list)
    withheld: list[dict[str, Any]] = field(default_factory=list)  # the POEORBs of LATE_ORBIT_DAY
    home: Path = Path()  # AUX_ASSETS_HOME: io/<asset>/<day>.json, storage/


@pytest.fixture(scope="module")
def servers(shared_sample: Path, shared_living: Path) -> Iterator[Servers]:
    """dagster-webserver + dagster-daemon on a temp DAGSTER_HOME and a file auxip source."""
    missing = [str(b) for b in BINARIES if not b.exists()]
    if missing:
        unavailable(f"{', '.join(missing)} not installed; run scripts/setup")
    root = Path(tempfile.mkdtemp(prefix="aux-ui-"))
    home = root / "home"
    home.mkdir()
    (home / "auxip-sample").symlink_to(shared_living, target_is_directory=True)
    source = root / "auxip.json"
    features, withheld = write_source(shared_sample, source)
    (root / "products.yaml").write_text(PRODUCTS)
    env = {
        **os.environ,
        "AUX_ASSETS_HOME": str(home),
        "AUX_AUXIP_URL": source.as_uri(),
        "AUX_LOCAL_FILE_ROOTS": str(shared_sample),  # the source's hrefs point at the sample
        "AUX_PRODUCTS_FILE": str(root / "products.yaml"),
        "AUX_SENSOR_LOOKBACK_DAYS": "7",
        "AUX_SENSOR_INTERVAL_SECONDS": str(SENSOR_INTERVAL_S),
    }
    env.pop("AUX_PARTITIONS_START", None)
    try:
        started = time.monotonic()
        with dagster_servers(root, env, DAGSTER_YAML) as running:
            print(f"\nwebserver + daemon up in {time.monotonic() - started:.1f} s")
            yield Servers(
                running.port, running.dagster_home, running.logs, source, features, withheld, home
            )
    except ServersNotReady as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


REPOSITORIES = """
{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name }
  jobs { name } schedules { name } sensors { name } assetNodes { assetKey { path } } } } } }
"""


def test_code_location_lists_assets_job_schedule_sensor(servers: Servers) -> None:
    nodes = servers.gql(REPOSITORIES)["repositoriesOrError"]["nodes"]
    (repo,) = [n for n in nodes if n["location"]["name"] == LOCATION]
    assert repo["name"] == REPOSITORY
    assert {"/".join(a["assetKey"]["path"]) for a in repo["assetNodes"]} >= set(ASSET_KEYS)
    assert "aux_job" in {j["name"] for j in repo["jobs"]}
    assert "aux_daily_schedule" in {s["name"] for s in repo["schedules"]}
    assert "aux_new_products_sensor" in {s["name"] for s in repo["sensors"]}


MATERIALIZATIONS = """
query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) {
  ... on Asset { assetMaterializations(partitions: $partitions) { partition runId
    metadataEntries { label ... on JsonMetadataEntry { jsonString } } } } } }
"""
POOLS = """
query { instance { concurrencyLimits { concurrencyKey slotCount usingDefaultLimit
  activeSlotCount pendingStepCount } } }
"""


def test_backfill_of_seven_days_runs_as_one_range_run(servers: Servers) -> None:
    backfill, wall = servers.backfill(DAYS)
    assert backfill.get("status") in {"COMPLETED", "COMPLETED_SUCCESS"}, backfill
    runs = backfill["runs"]
    print(
        f"\nbackfill of {len(DAYS)} days x {len(ASSET_KEYS)} assets: {backfill['status']} in "
        f"{wall:.1f} s, {len(runs)} run(s), {wall / len(DAYS):.2f} s per partition"
    )
    assert len(runs) == 1, runs
    (run,) = runs
    assert run["status"] == "SUCCESS", run
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags.get("dagster/asset_partition_range_start") == DAYS[0], tags
    assert tags.get("dagster/asset_partition_range_end") == DAYS[-1], tags
    for key in ASSET_KEYS:
        asset = servers.gql(MATERIALIZATIONS, key={"path": [key]}, partitions=DAYS)["assetOrError"]
        events = asset["assetMaterializations"]
        assert sorted({e["partition"] for e in events}) == DAYS, (key, events)
        assert {e["runId"] for e in events} == {run["runId"]}
        if key != "aux_search_results":
            continue
        for event in events:
            meta = {m["label"]: m.get("jsonString") for m in event["metadataEntries"]}
            window = json.loads(meta["window"])
            assert window["start"].startswith(event["partition"]), (event["partition"], window)
    pools = servers.gql(POOLS)["instance"]["concurrencyLimits"]
    (auxip,) = [p for p in pools if p["concurrencyKey"] == "aux_source_auxip"]
    assert auxip["slotCount"] == 1 and auxip["usingDefaultLimit"], auxip  # from dagster.yaml
    assert auxip["activeSlotCount"] == 0 and auxip["pendingStepCount"] == 0  # given back


PARTITION_STATS = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { partitionStats { numMaterialized numPartitions } } } }
"""
ASSET_GRAPH_PAGES = (f"/locations/{LOCATION}/asset-groups/aux", "/asset-groups/aux")


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=cwd))
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1600,1000",
        "--virtual-time-budget=20000",
        *args,
    ]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_chromium_renders_the_asset_graph(servers: Servers, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        unavailable("chromium is not installed; run scripts/ui-install")
    nux = servers.gql("mutation { setNuxSeen }")  # the community pop-up would hide the graph
    assert nux["setNuxSeen"], nux
    page, dom = "", ""
    for path in ASSET_GRAPH_PAGES:
        dom = _chromium("--dump-dom", servers.url + path, cwd=tmp_path).stdout
        if all(key in dom for key in ASSET_KEYS):
            page = path
            break
    assert page, f"no asset graph page shows {ASSET_KEYS}: {dom[-2000:]}"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    for key in ASSET_KEYS:
        stats = servers.gql(PARTITION_STATS, key={"path": [key]})["assetNodeOrError"]
        done, total = (
            stats["partitionStats"]["numMaterialized"],
            stats["partitionStats"]["numPartitions"],
        )
        assert done == len(DAYS), (key, stats)
        # Each node shows "Partitions <n>% filled" and "<total> partitions".
        filled = {
            f"{math.floor(100 * done / total)}% filled",
            f"{round(100 * done / total)}% filled",
        }
        assert any(f"Partitions {f}" in text for f in filled), (filled, text[-3000:])
        assert text.count(f"{total} partitions") >= len(ASSET_KEYS), text[-3000:]
    shot = tmp_path / "asset-graph.png"
    done = _chromium(f"--screenshot={shot}", servers.url + page, cwd=tmp_path)
    assert shot.exists() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    print(f"\nasset graph {page}: screenshot {SCREENSHOT} ({shot.stat().st_size} bytes)")


START_SENSOR = """
mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { status } } ... on PythonError { message } } }
"""
SENSOR_TICKS = """
query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { status ticks(limit: 20) { id status timestamp runIds runKeys
    skipReason error { message } } } } } }
"""
RUNS = """
query($ids: [String!]) { runsOrError(filter: {runIds: $ids}) { ... on Runs {
  results { runId status tags { key value } } } } }
"""


def _published_now(item: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A copy of ``item`` published (and created) ``now``, evicted 35 days later."""
    new: dict[str, Any] = json.loads(json.dumps(item))
    props = new["properties"]
    for name in ("published", "created"):
        props[name] = _utc(now)
    for name in ("expires", "auxip:eviction_datetime"):
        if name in props:
            props[name] = _utc(now + timedelta(days=35))
    return new


def _republish(item: dict[str, Any], now: datetime) -> dict[str, Any]:
    """``item`` re-published now: same validity, newer generation, new id."""
    new = _published_now(item, now)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    parts = new["id"].split("_")
    parts[5] = stamp  # S1A_OPER_AUX_POEORB_OPOD_<generation>_V<start>_<stop>
    new["id"] = "_".join(parts)
    new["properties"]["processing:datetime"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return new


def _covered_days(item: dict[str, Any]) -> list[str]:
    """The days whose [day, day + 1] window meets the item's validity (cover policy, bounds in)."""
    start = _time(item["properties"]["start_datetime"])
    end = _time(item["properties"]["end_datetime"])
    day = start.date() - timedelta(days=1)
    days = []
    while datetime.combine(day, datetime.min.time(), UTC) <= end:
        if datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) >= start:
            days.append(day.isoformat())
        day += timedelta(days=1)
    return days


def _ticks(servers: Servers, selector: dict[str, str]) -> list[dict[str, Any]]:
    state = servers.gql(SENSOR_TICKS, selector=selector)["sensorOrError"]["sensorState"]
    ticks: list[dict[str, Any]] = state["ticks"]
    failed = [t for t in ticks if t["status"] == "FAILURE"]
    assert not failed, failed
    return ticks


def test_sensor_requests_the_days_of_a_republished_orbit(servers: Servers) -> None:
    (original,) = [f for f in servers.features if f["id"] == REPUBLISHED]
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "sensorName": "aux_new_products_sensor",
    }
    began = time.monotonic()
    started = servers.gql(START_SENSOR, selector=selector)["startSensor"]
    assert started["__typename"] == "Sensor", started
    ticks: list[dict[str, Any]] = []
    # the first tick, once it has ended (a poll may see it STARTED, still evaluating)
    while (not ticks or ticks[0]["status"] == "STARTED") and time.monotonic() - began < 120:
        time.sleep(1)
        ticks = _ticks(servers, selector)
    assert [t["status"] for t in ticks] == ["SKIPPED"], ticks  # nothing new in the look-back
    assert "no product published since" in ticks[0]["skipReason"], ticks
    first_tick = time.monotonic()

    new = _republish(original, datetime.now(UTC))
    _write_features(servers.source, [*servers.features, new])
    expected = _covered_days(new)
    requested: list[dict[str, Any]] = []
    while time.monotonic() - first_tick < SENSOR_INTERVAL_S + 120:
        ticks = _ticks(servers, selector)
        requested = [t for t in ticks if t["runIds"] and t["status"] != "STARTED"]
        if requested:
            break
        time.sleep(2)
    assert requested, f"no tick with runs within 180 s: {ticks}"
    tick = requested[-1]
    runs = servers.gql(RUNS, ids=tick["runIds"])["runsOrError"]["results"]
    partitions = sorted(
        t["value"] for run in runs for t in run["tags"] if t["key"] == "dagster/partition"
    )
    print(
        f"\nsensor: {len(ticks)} tick(s), runs {time.monotonic() - first_tick:.1f} s after the "
        f"first (interval {SENSOR_INTERVAL_S} s):"
        f" {len(tick['runIds'])} run(s) for {partitions} (run keys {tick['runKeys']})"
    )
    assert partitions == expected
    assert len(runs) == len(expected)


CHECK_EXECUTIONS = """
query($key: AssetKeyInput!, $check: String!, $partition: String) {
  assetCheckExecutions(assetKey: $key, checkName: $check, partition: $partition, limit: 1) {
    runId status partition evaluation { success severity description partition } } }
"""
# (asset, check) -> does it fail on LACKING_DAY
RANGE_CHECKS = {
    ("aux_search_results", "mandatory_candidates"): True,
    ("aux_staged_items", "all_staged_verified"): False,
    ("aux_catalog_items", "catalog_coverage_complete"): True,
    ("aux_catalog_items", "catalog_on_time"): True,
}


def _latest_execution(servers: Servers, asset: str, check: str, day: str) -> dict[str, Any]:
    executions = servers.gql(CHECK_EXECUTIONS, key={"path": [asset]}, check=check, partition=day)[
        "assetCheckExecutions"
    ]
    assert executions, (asset, check, day)
    latest: dict[str, Any] = executions[0]
    return latest


def test_range_run_records_each_days_checks(servers: Servers) -> None:
    """One run of RANGE_DAYS records each check once per day: LACKING_DAY fails (and is late),
    the two others pass."""
    backfill, wall = servers.backfill(RANGE_DAYS)
    # the blocking coverage check fails on LACKING_DAY: the run fails, the backfill ends
    assert backfill.get("status") in TERMINAL, backfill
    (run,) = backfill["runs"]
    assert run["status"] == "FAILURE", run
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags.get("dagster/asset_partition_range_start") == RANGE_DAYS[0], tags
    assert tags.get("dagster/asset_partition_range_end") == RANGE_DAYS[-1], tags
    print(f"\nrange run of {RANGE_DAYS}: {backfill['status']}, run {run['status']} in {wall:.1f} s")

    keys = [dg.AssetCheckKey(dg.AssetKey(asset), check) for asset, check in RANGE_CHECKS]
    with dg.DagsterInstance.from_config(str(servers.dagster_home)) as instance:
        infos = instance.event_log_storage.get_asset_check_partition_info(
            keys, partition_keys=RANGE_DAYS
        )
    statuses = {
        (i.check_key.asset_key.to_user_string(), i.check_key.name, i.partition_key): (
            i.latest_execution_status.value
        )
        for i in infos
    }
    for (asset, check), fails in RANGE_CHECKS.items():
        for day in RANGE_DAYS:
            expected = "FAILED" if fails and day == LACKING_DAY else "SUCCEEDED"
            assert statuses.get((asset, check, day)) == expected, (asset, check, day, statuses)
            execution = _latest_execution(servers, asset, check, day)
            evaluation = execution["evaluation"]
            print(f"  {asset} {check} {day}: {execution['status']}: {evaluation['description']}")
            assert execution["runId"] == run["runId"], execution
            assert execution["status"] == expected, execution
            assert evaluation["partition"] == day and evaluation["success"] == (
                expected == "SUCCEEDED"
            ), evaluation
            assert evaluation["description"].startswith(day), evaluation
            severity = "WARN" if check == "catalog_on_time" else "ERROR"
            assert evaluation["severity"] == severity, evaluation
    coverage = _latest_execution(
        servers, "aux_catalog_items", "catalog_coverage_complete", LACKING_DAY
    )["evaluation"]["description"]
    assert (
        "gaps in the catalog: AUX_POEORB: never published (AUX_RESORB expected by "
        "2026-01-10 05:00 UTC) for sentinel-1a" in coverage
    ), coverage
    late = _latest_execution(servers, "aux_catalog_items", "catalog_on_time", LACKING_DAY)
    assert " is late: " in late["evaluation"]["description"], late
    assert "AUX_POEORB" in late["evaluation"]["description"], late
    candidates = _latest_execution(
        servers, "aux_search_results", "mandatory_candidates", LACKING_DAY
    )
    assert "AUX_POEORB" in candidates["evaluation"]["description"], candidates


NEW_PRODUCTS_SENSOR = {
    "repositoryLocationName": LOCATION,
    "repositoryName": REPOSITORY,
    "sensorName": "aux_new_products_sensor",
}
MATERIALIZATION_META = """
query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) {
  ... on Asset { assetMaterializations(partitions: $partitions) { partition runId timestamp
    metadataEntries { label ... on JsonMetadataEntry { jsonString }
      ... on MarkdownMetadataEntry { mdStr } } } } } }
"""


def _document(servers: Servers, asset: str, day: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((servers.home / "io" / asset / f"{day}.json").read_text())
    return doc


def _orbit_items(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The items the catalog document of a day holds for AUX_POEORB (with its alternatives)."""
    (product,) = [p for p in doc["products"] if p["product_type"] == "AUX_POEORB"]
    features: list[dict[str, Any]] = product["items"]["features"]
    return features


def _run_of_day(servers: Servers, run_ids: list[str], day: str, timeout_s: float) -> dict[str, Any]:
    """The run of ``day`` among ``run_ids`` once it has ended."""
    began = time.monotonic()
    while True:
        runs = servers.gql(RUNS, ids=run_ids)["runsOrError"]["results"]
        of_day = [r for r in runs if {"key": "dagster/partition", "value": day} in r["tags"]]
        assert len(of_day) == 1, (day, runs)
        run: dict[str, Any] = of_day[0]
        if run["status"] in {"SUCCESS", "FAILURE", "CANCELED"}:
            return run
        assert time.monotonic() - began < timeout_s, f"run of {day} not ended: {run}"
        time.sleep(1)


def test_sensor_restages_a_day_when_its_precise_orbit_arrives(servers: Servers) -> None:
    """LATE_ORBIT_DAY runs on restituted orbits; its precise orbit is then published (same id,
    ``published`` now): the sensor re-runs the days it serves, the precise orbit is staged, the
    day's document, metadata and summary say what it replaced."""
    day = LATE_ORBIT_DAY
    began = time.monotonic()
    backfill, wall = servers.backfill([day])
    assert backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, backfill
    before = _document(servers, "aux_catalog_items", day)
    assert before["coverage"] == {"AUX_POEORB": True, "AUX_WND": True}, before["coverage"]
    assert not before.get("replaced"), before["replaced"]  # the same items as any earlier run
    old = sorted(f["id"] for f in _orbit_items(before))
    restituted = [i for i in old if "_AUX_RESORB_" in i]
    assert restituted, old
    (precise,) = [f for f in servers.withheld if f["properties"]["platform"] == "sentinel-1a"]
    assert precise["id"] not in old
    print(
        f"\n{day} with restituted orbits in {wall:.1f} s: {len(restituted)} RESORB + "
        f"{len(old) - len(restituted)} POEORB"
    )

    state = servers.gql(SENSOR_TICKS, selector=NEW_PRODUCTS_SENSOR)["sensorOrError"]
    if state["sensorState"]["status"] != "RUNNING":  # started by the sensor test, or now
        started = servers.gql(START_SENSOR, selector=NEW_PRODUCTS_SENSOR)["startSensor"]
        assert started["__typename"] == "Sensor", started
    seen = {t["id"] for t in _ticks(servers, NEW_PRODUCTS_SENSOR)}
    current = json.loads(servers.source.read_text(encoding="utf-8"))["features"]
    published = time.monotonic()
    now = datetime.now(UTC)
    _write_features(servers.source, [*current, *(_published_now(f, now) for f in servers.withheld)])

    tick: dict[str, Any] = {}
    while time.monotonic() - published < SENSOR_INTERVAL_S + 120:
        ticks = _ticks(servers, NEW_PRODUCTS_SENSOR)
        new_ticks = [t for t in ticks if t["id"] not in seen and t["status"] != "STARTED"]
        tick = next((t for t in new_ticks if t["runIds"]), {})
        if tick:
            break
        time.sleep(2)
    assert tick, f"no tick with runs within {SENSOR_INTERVAL_S + 120} s: {ticks}"
    requested = time.monotonic() - published
    days = sorted(key.split(":")[1] for key in tick["runKeys"])
    assert day in days, tick
    # The precise orbit serves the days its validity meets: all of them are re-run.
    runs = {d: _run_of_day(servers, tick["runIds"], d, timeout_s=300) for d in days}
    assert runs[day]["status"] == "SUCCESS", runs[day]
    print(
        f"sensor: runs of {days} requested {requested:.1f} s after publication (interval "
        f"{SENSOR_INTERVAL_S} s); ended {time.monotonic() - published:.1f} s after it: "
        + ", ".join(f"{d} {r['status']}" for d, r in runs.items())
    )
    after = _document(servers, "aux_catalog_items", day)
    assert after["coverage"] == {"AUX_POEORB": True, "AUX_WND": True}, after["coverage"]
    (item,) = _orbit_items(after)
    assert item["id"] == precise["id"], item["id"]
    expected = f"{precise['id']} replaces {', '.join(old)}"
    assert after["replaced"] == {"AUX_POEORB": expected}, after["replaced"]
    print(f"replaced: AUX_POEORB: {after['replaced']['AUX_POEORB']}")
    # The concurrent runs of its days stage the precise orbit once; the others find it present.
    outcomes = {}
    for d in days:
        staged = _document(servers, "aux_staged_items", d)
        found = {o["item_id"]: o["status"] for p in staged["products"] for o in p["items"]}
        outcomes[d] = found[precise["id"]]
    assert sorted(outcomes.values()) == ["present"] * (len(days) - 1) + ["staged"], outcomes
    print(f"{precise['id']}: {outcomes}")
    for key, asset in item["assets"].items():
        stored = file_path(asset["href"])
        assert stored is not None and stored.is_file(), asset["href"]
        assert stored.is_relative_to(servers.home / "storage"), stored
        assert stored.stat().st_size == precise["assets"][key]["file:size"], stored

    events = servers.gql(
        MATERIALIZATION_META, key={"path": ["aux_catalog_items"]}, partitions=[day]
    )
    (latest,) = [
        e
        for e in events["assetOrError"]["assetMaterializations"]
        if e["runId"] == runs[day]["runId"]
    ]
    meta = {m["label"]: m.get("jsonString") or m.get("mdStr") for m in latest["metadataEntries"]}
    assert json.loads(meta["replaced"]) == after["replaced"], meta["replaced"]
    assert "Replaced since the day's previous run:" in meta["summary"], meta["summary"]
    assert f"- {day} AUX_POEORB: {expected}" in meta["summary"], meta["summary"]
    coverage = _latest_execution(servers, "aux_catalog_items", "catalog_coverage_complete", day)
    assert coverage["runId"] == runs[day]["runId"] and coverage["status"] == "SUCCEEDED", coverage
    print(f"re-staging of {day}, end to end: {time.monotonic() - began:.1f} s")


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    JSON messages ending in NUL on its fds 3 and 4), to click in a page before its screenshot."""

    def __init__(self, cwd: Path, timeout_s: float = 30) -> None:
        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=cwd))
        theirs_in, self._out = os.pipe()
        self._in, theirs_out = os.pipe()
        # Chromium's ends above fd 9, so that bash moves them to 3 and 4 without clobbering one
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (theirs_in, theirs_out)]
        for fd in (theirs_in, theirs_out):
            os.close(fd)
        move = f'exec "$0" "$@" 3<&{high[0]} 4>&{high[1]} {high[0]}<&- {high[1]}>&-'
        args = [
            *("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"),
            *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
            f"--user-data-dir={profile}",
            "--window-size=1600,1000",
            "--remote-debugging-pipe",
        ]
        self._proc = subprocess.Popen(
            ["bash", "-c", move, str(CHROMIUM), *args, "about:blank"],
            cwd=cwd,
            pass_fds=high,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in high:
            os.close(fd)
        self._timeout_s = timeout_s
        self._buffer = b""
        self._id = 0
        self._session = ""

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):  # it may exit first
            self.send("Browser.close", timeout_s=10)
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._out)
        os.close(self._in)

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited ({self._proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, timeout_s: float | None = None, **params: Any) -> dict[str, Any]:
        """One command (to the page once :meth:`open` attached it); its result."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self._session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout_s or self._timeout_s)
        while True:  # events and other replies are skipped
            reply = self._message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=1600,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float) -> Any:
        """The value of ``expression`` once it is truthy (else the last one, after the time)."""
        deadline = time.monotonic() + timeout_s
        value = self.evaluate(expression)
        while not value and time.monotonic() < deadline:
            time.sleep(0.5)
            value = self.evaluate(expression)
        return value

    def screenshot(self, path: Path) -> None:
        path.write_bytes(
            base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        )


CHECK_PAGE = "/assets/aux_catalog_items?view=checks&checkDetail=catalog_coverage_complete"
HISTORY_TAB = "document.querySelector('button[role=tab]#execution-history')"
HISTORY_ROWS = """[...document.querySelectorAll('table tbody tr')].map(
  tr => [...tr.cells].map(td => td.innerText.trim()))"""
# the checks list: [name, icon, status] per check
CHECKS_LIST = """[...document.querySelectorAll('div[title]')]
.filter(d => d.closest('span')).map(d => {
  const label = d.closest('span');
  const icon = label.parentElement.querySelector('[role=img]');
  return [d.title, icon && icon.getAttribute('aria-label'), label.lastElementChild.innerText];
})"""


def test_chromium_renders_the_checks_of_each_day(servers: Servers, tmp_path: Path) -> None:
    """The asset page's checks: the list (coverage failed, on-time failed as a warning) and the
    execution history of the coverage check, one row per day with its result and description."""
    if not CHROMIUM.exists():
        unavailable("chromium is not installed; run scripts/ui-install")
    nux = servers.gql("mutation { setNuxSeen }")  # the community pop-up would hide the page
    assert nux["setNuxSeen"], nux
    began = time.monotonic()
    with DevTools(tmp_path) as chromium:
        chromium.open(servers.url + CHECK_PAGE)
        assert chromium.wait_for(f"!!{HISTORY_TAB}", 60), chromium.evaluate(
            "document.body.innerText"
        )
        chromium.evaluate(f"{HISTORY_TAB}.click()")
        rows: list[list[str]] = []
        latest: dict[str, list[str]] = {}
        while time.monotonic() - began < 90:
            rows = chromium.evaluate(HISTORY_ROWS) or []
            # result, timestamp, target materialization, partition, description, metadata
            latest = {}
            for row in rows:
                if len(row) >= 5:
                    latest.setdefault(row[3], row)  # newest first
            if set(RANGE_DAYS) <= set(latest):
                break
            time.sleep(0.5)
        time.sleep(1)  # icons and fonts
        shot = tmp_path / "asset-checks.png"
        chromium.screenshot(shot)
        listed = {name: (icon, status) for name, icon, status in chromium.evaluate(CHECKS_LIST)}
    for day in RANGE_DAYS:
        assert day in latest, (day, rows)
        result, description = latest[day][0], latest[day][4]
        if day == LACKING_DAY:
            assert result == "Failed", latest[day]
            assert description.startswith(f"{day}: gaps in the catalog: AUX_POEORB"), latest[day]
        else:
            assert result == "Passed", latest[day]
            assert description.startswith(f"{day}: the catalog covers"), latest[day]
    # the checks list: both failed, catalog_on_time as a warning (WARN severity)
    assert listed.get("catalog_coverage_complete") == ("cancel", "Failed"), listed
    assert listed.get("catalog_on_time") == ("warning_outline", "Failed"), listed
    assert shot.stat().st_size > 10_000, shot.stat().st_size
    CHECKS_SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, CHECKS_SCREENSHOT)
    print(
        f"\nchecks of {CHECK_PAGE} in {time.monotonic() - began:.1f} s: "
        + ", ".join(f"{d} {latest[d][0]}" for d in RANGE_DAYS)
        + f"; screenshot {CHECKS_SCREENSHOT} ({shot.stat().st_size} bytes)"
    )
