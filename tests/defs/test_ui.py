"""The code location in the real Dagster webserver + daemon, driven through GraphQL only.

One module-scoped pair of servers on a file source we control (a FeatureCollection of sample
AUX_POEORB and AUX_WND items): the location loads, a 7-day asset backfill runs as one range run
(``BackfillPolicy.multi_run(10)``), the sensor requests the days of a newly published orbit, and
Chromium renders the asset graph (screenshot saved to ``docs/asset-graph.png``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.servers_required import unavailable
from tests.helpers.dagster_servers import (
    ASSET_KEYS,
    BINARIES,
    LOCATION,
    REPO,
    DagsterServers,
    ServersNotReady,
    dagster_servers,
)

REPOSITORY = "__repository__"
DAYS = [(date(2026, 1, 1) + timedelta(days=n)).isoformat() for n in range(7)]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "docs" / "asset-graph.png"
# Sample items copied to the file source: every day of DAYS needs its POEORB and WND.
COPIED_TYPES = {"AUX_POEORB", "AUX_WND"}
COPY_FROM, COPY_TO = datetime(2025, 12, 30, tzinfo=UTC), datetime(2026, 1, 10, tzinfo=UTC)
REPUBLISHED = "S1A_OPER_AUX_POEORB_OPOD_20260124T070359_V20260103T225942_20260105T005942"
PRODUCTS = """\
products:
  - product_type: AUX_POEORB
    source: auxip
    collection: s1-aux
    policy: LatestValCover
    platforms: [sentinel-1a]
    mandatory: true
  - product_type: AUX_WND
    source: auxip
    collection: s1-aux
    policy: ClosestStartValidity
    mandatory: true
"""
DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    default_limit: 1
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


def write_source(sample: Path, target: Path) -> list[dict[str, Any]]:
    """A FeatureCollection of the sample's POEORB/WND items around DAYS; returns its features."""
    features = []
    for path in sorted(sample.glob("*/*.json")):
        item = json.loads(path.read_text(encoding="utf-8"))
        props = item.get("properties", {})
        if props.get("product:type") not in COPIED_TYPES:
            continue
        start = _time(props.get("start_datetime") or props["datetime"])
        end = _time(props.get("end_datetime") or props["datetime"])
        if end >= COPY_FROM and start <= COPY_TO:
            features.append(_absolute_hrefs(item, path.parent))
    target.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return features


@dataclass
class Servers(DagsterServers):
    """The running servers, and the file source they read."""

    source: Path = Path()
    features: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def servers(shared_sample: Path) -> Iterator[Servers]:
    """dagster-webserver + dagster-daemon on a temp DAGSTER_HOME and a file auxip source."""
    missing = [str(b) for b in BINARIES if not b.exists()]
    if missing:
        unavailable(f"{', '.join(missing)} not installed; run scripts/setup")
    root = Path(tempfile.mkdtemp(prefix="aux-ui-"))
    home = root / "home"
    home.mkdir()
    (home / "sample").symlink_to(shared_sample, target_is_directory=True)
    source = root / "auxip.json"
    features = write_source(shared_sample, source)
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
            yield Servers(running.port, running.dagster_home, running.logs, source, features)
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


def _republish(item: dict[str, Any], now: datetime) -> dict[str, Any]:
    """``item`` re-published now: same validity, newer generation, new id."""
    new = json.loads(json.dumps(item))
    stamp = now.strftime("%Y%m%dT%H%M%S")
    parts = new["id"].split("_")
    parts[5] = stamp  # S1A_OPER_AUX_POEORB_OPOD_<generation>_V<start>_<stop>
    new["id"] = "_".join(parts)
    props = new["properties"]
    props["processing:datetime"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    for name in ("published", "created"):
        props[name] = _utc(now)
    for name in ("expires", "auxip:eviction_datetime"):
        if name in props:
            props[name] = _utc(now + timedelta(days=35))
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
    features = [*servers.features, new]
    servers.source.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
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
