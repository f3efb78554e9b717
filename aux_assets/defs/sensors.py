"""``aux_new_products_sensor``: re-materialize the days newly published aux products serve.

Each tick searches every source of the products file for the items of its product types
published after the cursor (the last ``published`` seen per source; first tick: the last
``AUX_SENSOR_LOOKBACK_DAYS`` days, default 7), maps them to the existing daily partitions
(:mod:`aux_assets.discovery`) and requests one run of the three assets per day. Searches run in
parallel, each bounded in time, so a tick stays within Dagster's 60 s limit; a source that fails
is logged and keeps its cursor, the others go on.

The interval is ``AUX_SENSOR_INTERVAL_SECONDS`` (read at definitions load, default 300): aux files
arrive a few times an hour at most (orbits, meteo), so five minutes of latency costs nothing and
keeps the load on the providers' APIs low.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pystac

from aux_assets import settings
from aux_assets.defs import checks
from aux_assets.defs.assets import aux_catalog_items, aux_search_results, aux_staged_items
from aux_assets.defs.partitions import daily_partitions
from aux_assets.defs.resources import SOURCE_KEYS, source_resource
from aux_assets.discovery import Batch, Cursor, new_items_request, runs_to_request, settled_batch
from aux_assets.products import ProductSpec
from aux_assets.settings import positive_int_env
from aux_assets.sources.base import SearchError, UnconfiguredSource
from aux_assets.sources.profiles import profile
from aux_assets.timeliness import Verdict, due_after, due_time, judge

LOOKBACK_ENV = "AUX_SENSOR_LOOKBACK_DAYS"
DEFAULT_LOOKBACK_DAYS = 7
INTERVAL_ENV = "AUX_SENSOR_INTERVAL_SECONDS"
DEFAULT_INTERVAL_S = 300
MAX_ITEMS_PER_SOURCE = 10_000
SEARCH_TIMEOUT_S = 25.0  # between pages; a page itself is bounded by the source's HTTP timeout


def lookback_days(env: Mapping[str, str] | None = None) -> int:
    """``AUX_SENSOR_LOOKBACK_DAYS`` (default 7), a positive whole number."""
    return positive_int_env(env, LOOKBACK_ENV, DEFAULT_LOOKBACK_DAYS, "days")


def interval_seconds(env: Mapping[str, str] | None = None) -> int:
    """``AUX_SENSOR_INTERVAL_SECONDS`` (default 300): the least time between two ticks."""
    return positive_int_env(env, INTERVAL_ENV, DEFAULT_INTERVAL_S, "seconds")


@dataclass(frozen=True)
class _Outcome:
    """What one source gave this tick: a batch, or why it gave nothing."""

    source: str
    batch: Batch | None = None
    problem: str = ""
    level: int = logging.INFO


def _search(
    context: dg.SensorEvaluationContext, source: str, specs: Sequence[ProductSpec], since: datetime
) -> _Outcome:
    if profile(source).ours:
        return _Outcome(source, problem=f"source {source} is our own catalog: not watched")
    resource = source_resource(context, source)
    try:
        client = resource.open()
        if isinstance(client, UnconfiguredSource):
            return _Outcome(source, problem=client.message(), level=logging.WARNING)
        request = new_items_request(specs, since, MAX_ITEMS_PER_SOURCE + 1, client.dialect)
        items = client.search(replace(request, timeout_s=SEARCH_TIMEOUT_S))
    except (SearchError, ValueError) as exc:
        return _Outcome(source, problem=f"source {source} failed: {exc}", level=logging.ERROR)
    return _Outcome(source, batch=settled_batch(items, MAX_ITEMS_PER_SOURCE, since))


def _quiet(sources: Sequence[str], cursor: Cursor) -> str:
    by_since: dict[str, list[str]] = {}
    for source in sources:
        by_since.setdefault(cursor.since(source).isoformat(), []).append(source)
    return "no product published " + "; ".join(
        f"since {since} in {', '.join(names)}" for since, names in by_since.items()
    )


@dg.sensor(
    name="aux_new_products_sensor",
    target=[aux_search_results, aux_staged_items, aux_catalog_items],
    minimum_interval_seconds=interval_seconds(),
    required_resource_keys={"products", *SOURCE_KEYS},
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Requests the days that aux products published since the last tick can serve "
        "(cursor: last publication seen per source)."
    ),
)
def aux_new_products_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """One run of the three assets per existing day served by a newly published product."""
    now = settings.now()
    lookback_start = now - timedelta(days=lookback_days())
    cursor = Cursor.parse(context.cursor, lookback_start)
    keys = daily_partitions.get_partition_keys()  # the days that exist (by the system clock)
    if not keys:
        return dg.SensorResult(skip_reason="no daily partition exists yet (AUX_PARTITIONS_START)")
    first, last = date.fromisoformat(keys[0]), date.fromisoformat(keys[-1])
    specs: tuple[ProductSpec, ...] = context.resources.products.load().products
    by_source: dict[str, list[ProductSpec]] = {}
    for spec in specs:
        by_source.setdefault(spec.source, []).append(spec)

    def search(source: str) -> _Outcome:
        return _search(context, source, by_source[source], cursor.since(source))

    with ThreadPoolExecutor(max_workers=max(1, len(by_source))) as pool:
        outcomes = list(pool.map(search, sorted(by_source)))
    notes: list[str] = []
    items_by_source: dict[str, list[pystac.Item]] = {}
    new_cursor = cursor
    for outcome in outcomes:
        if outcome.batch is None:
            context.log.log(outcome.level, outcome.problem)
            notes.append(outcome.problem)
            continue
        items = outcome.batch.items
        since = cursor.since(outcome.source).isoformat()
        context.log.info(f"source {outcome.source}: {len(items)} item(s) published since {since}")
        if outcome.batch.truncated:
            context.log.warning(
                f"source {outcome.source}: more than {MAX_ITEMS_PER_SOURCE} items published "
                f"since {since}; this tick takes the {len(items)} oldest, the next goes on"
            )
        items_by_source[outcome.source] = items
        new_cursor = new_cursor.advance(outcome.source, items)
    wanted = runs_to_request(items_by_source, specs, first, last, latest_from=lookback_start.date())
    for skipped in wanted.skipped:
        context.log.warning(f"{skipped.source} item {skipped.item_id} skipped: {skipped.reason}")
    if wanted.runs:
        context.log.info(
            f"{len(wanted.runs)} day(s) to re-materialize: "
            f"{wanted.runs[0].partition_key}..{wanted.runs[-1].partition_key}"
        )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(partition_key=run.partition_key, run_key=run.run_key)
                for run in wanted.runs
            ],
            cursor=new_cursor.to_text(),
        )
    quiet = [source for source, items in items_by_source.items() if not items]
    if quiet:
        notes.insert(0, _quiet(quiet, cursor))
    if wanted.n_unmapped:
        notes.append(
            f"{wanted.n_unmapped} new item(s) serve no existing partition ({first}..{last})"
        )
    if wanted.skipped:
        notes.append(f"{len(wanted.skipped)} new item(s) skipped for unusable dates")
    reason = "; ".join(notes) or "the products file lists no product type"
    return dg.SensorResult(skip_reason=reason, cursor=new_cursor.to_text())


def _verdict(instance: dg.DagsterInstance, day: str, after: timedelta, now: datetime) -> Verdict:
    """``day`` judged from the coverage of its latest ``aux_catalog_items`` materialization."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=aux_catalog_items.key, asset_partitions=[day]), limit=1
    ).records
    if not records:
        return judge(day, after, now, None, None)
    event = records[0].asset_materialization
    coverage = event.metadata.get("coverage") if event is not None else None
    if not isinstance(coverage, dg.JsonMetadataValue) or not isinstance(coverage.value, dict):
        missing = ["(its coverage is not recorded)"]
    else:
        missing = [ptype for ptype, ok in coverage.value.items() if not ok]
    return judge(day, after, now, missing, datetime.fromtimestamp(records[0].timestamp, UTC))


@dg.sensor(
    name="aux_deadline_sensor",
    minimum_interval_seconds=interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Judges the days due in the last AUX_SENSOR_LOOKBACK_DAYS against their deadline "
        "(AUX_DUE_AFTER_HOURS after the day's end) and records the check catalog_on_time of "
        "each day whose verdict changed. Launches no run."
    ),
)
def aux_deadline_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """A late day turns its ``catalog_on_time`` check red without any run; cursor: the last
    verdict per day, so a verdict is recorded once per change."""
    now, after = settings.now(), due_after()
    keys = daily_partitions.get_partition_keys(current_time=now)
    due = [day for day in keys if due_time(day, after) <= now][-lookback_days() :]
    before: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    verdicts = [_verdict(context.instance, day, after, now) for day in due]
    changed = [v for v in verdicts if before.get(v.day) != v.state]
    for verdict in changed:
        if not verdict.passed:
            context.log.warning(verdict.description)
    events = [
        checks.evaluation(
            checks.ON_TIME,
            v.day,
            v.passed,
            v.description,
            checks.verdict_metadata(v),
            dg.AssetCheckSeverity.WARN,
        )
        for v in changed
    ]
    late = [v.day for v in verdicts if not v.passed]
    cursor = json.dumps({v.day: v.state for v in verdicts})
    if events:
        return dg.SensorResult(asset_events=events, cursor=cursor)
    summary = f"late: {', '.join(late)}" if late else "none late"
    return dg.SensorResult(
        skip_reason=f"{len(due)} due day(s) judged, no verdict changed ({summary})", cursor=cursor
    )
