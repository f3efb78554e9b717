"""The three partitioned aux assets: search results -> staged items -> catalog items.

Each asset reads its resources and config, calls the core (:mod:`aux_assets.planning`,
:class:`aux_assets.staging.stager.Stager`, :mod:`aux_assets.documents`) and reports per-day
metadata.
"""

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from aux_assets import documents as docs
from aux_assets import settings, tracing
from aux_assets.auth import Auth
from aux_assets.defs import checks
from aux_assets.defs.io_managers import JsonPartitionIOManager
from aux_assets.defs.partitions import daily_partitions
from aux_assets.defs.pools import DagsterPoolGate
from aux_assets.defs.resources import SOURCE_KEYS, source_resource
from aux_assets.filters import FilterError, parse_filter
from aux_assets.planning import plan_raw, plan_windows, windows_of
from aux_assets.products import ProductsFileError
from aux_assets.report import summary_table
from aux_assets.sources.base import SearchError, Source, UnconfiguredSource
from aux_assets.sources.profiles import SOURCES, UnknownSourceError, check_source
from aux_assets.staging.claims import FileClaims
from aux_assets.staging.stager import (
    ItemOutcome,
    PlannedItem,
    Stager,
    lookup_items,
    stage_tasks,
)
from aux_assets.timeliness import due_after, latencies
from aux_assets.utils.names import UnsafeNameError, check_collection_id, check_safe_name
from aux_assets.utils.text import size_text
from aux_assets.utils.urls import redact_urls

IO_MANAGER = "aux_json_io"
Event = dg.Output[dict[str, Any]] | dg.Output[None] | dg.AssetCheckEvaluation | dg.AssetObservation
AssetFn = Callable[..., Iterator[Event]]


def aux_asset(
    required: set[str],
    check_specs: list[dg.AssetCheckSpec],
    automation: dg.AutomationCondition[Any] | None = None,
    output_required: bool = True,
) -> Callable[[AssetFn], dg.AssetsDefinition]:
    """``dg.asset`` with what the three aux assets share: daily partitions, range backfills,
    group, JSON IO manager, inline per-day checks, a span per step (:func:`traced`)."""
    decorator: Callable[[AssetFn], dg.AssetsDefinition] = dg.asset(
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=10),
        group_name="aux",
        io_manager_key=IO_MANAGER,
        owners=["team:ground-segment"],
        kinds={"stac", "python"},
        code_version="1",
        required_resource_keys=required,
        check_specs=check_specs,
        automation_condition=automation,
        output_required=output_required,
    )
    return lambda fn: decorator(traced(fn))


def traced(fn: AssetFn) -> AssetFn:
    """``fn`` in a span named after it, whose parent is the run's (:func:`tracing.run_context`:
    every step of a run joins one trace); the spans are flushed when the step ends."""

    @functools.wraps(fn)
    def step(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Iterator[Event]:
        if tracing.tracer() is None:  # no span: the events go out as they come
            yield from fn(context, *args, **kwargs)
            return
        run_id = context.run.run_id
        attributes: tracing.Attributes = {
            "dagster.run_id": run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition_keys": list(context.partition_keys),
        }
        events: list[Event] = []
        try:
            with tracing.span(fn.__name__, attributes, parent=tracing.run_context(run_id)):
                events.extend(fn(context, *args, **kwargs))
        except Exception:
            yield from events  # what the step produced before it failed is not lost
            raise
        finally:
            tracing.flush()
        yield from events

    return step


class SearchConfig(dg.Config):
    """On-demand options. Without ``filter``: the products file (optionally a subset of its
    product types). With ``filter``: the seed's generic mode, every match is staged."""

    product_types: list[str] | None = None
    filter: str | None = None
    source: str = "auxip"
    collection: str | None = None
    search_collections: list[str] | None = None
    assets: list[str] | None = None
    limit: int | None = None
    unpack: bool = False
    timeout_s: float | None = None
    error_if_empty: bool = False
    window_start: str | None = None
    window_end: str | None = None


def _open_sources(context: dg.AssetExecutionContext, names: set[str]) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    for name in sorted(names):
        source = source_resource(context, name).open()
        if isinstance(source, UnconfiguredSource):
            raise dg.Failure(source.message())
        sources[name] = source
    return sources


def _check_config(config: SearchConfig) -> None:
    if config.limit is not None and config.limit < 1:
        raise dg.Failure(f"config limit={config.limit}: the total cap on items must be >= 1")
    if config.timeout_s is not None and config.timeout_s <= 0:
        raise dg.Failure(f"config timeout_s={config.timeout_s}: give seconds > 0, or omit it")
    if config.product_types is not None and not config.product_types:
        raise dg.Failure("config product_types is empty; omit it to use every product type")


def _validate_raw(config: SearchConfig) -> dict[str, Any]:
    try:
        cql = parse_filter(config.filter or "", "config filter")
        check_source(config.source)
        if not config.collection:
            raise dg.Failure(
                "config collection is required with a filter: the target collection in our "
                "catalog, e.g. s1-aux"
            )
        check_collection_id(config.collection)
        for key in config.assets or ():
            check_safe_name(key, "config assets entry")
    except (FilterError, UnknownSourceError, UnsafeNameError) as exc:
        raise dg.Failure(str(exc)) from None
    return cql


def _report(
    context: dg.AssetExecutionContext, per_day: Mapping[str, dict[str, Any]], started: float
) -> None:
    """Each day of the run gets its own metadata (numbers plot over the partitions)."""
    seconds = round(time.monotonic() - started, 3)
    for key, metadata in per_day.items():
        context.add_asset_metadata(
            {**metadata, "run_seconds": seconds, "seconds_per_day": seconds / len(per_day)},
            partition_key=key,
        )


def _catalog_metadata(doc: docs.CatalogDocument) -> dict[str, Any]:
    n_items, features = docs.catalog_features(doc)
    return {
        "n_items": n_items,
        "n_uncovered": sum(not covered for covered in doc["coverage"].values()),
        "replaced": dg.MetadataValue.json(doc.get("replaced", {})),
        "coverage": dg.MetadataValue.json(doc["coverage"]),
        "summary": dg.MetadataValue.md(summary_table({doc["partition"]: doc})),
        "items": dg.MetadataValue.json(features),
    }


def _log_gaps(context: dg.AssetExecutionContext, documents: dict[str, docs.SearchDocument]) -> None:
    """Log the product types whose source failed (an error; when every one failed, the step
    fails: there is nothing to stage) and, per day, why a mandatory type is uncovered (a
    warning when it is only not yet published, else an error)."""
    products = [p for doc in documents.values() for p in doc["products"]]
    failed = sorted({f"{p['product_type']}: {p['error']}" for p in products if p.get("error")})
    if failed and all(p.get("error") for p in products):
        raise dg.Failure("every search failed: " + "; ".join(failed))
    if failed:
        context.log.error("source unreachable, nothing found for " + "; ".join(failed))
    for key, doc in documents.items():
        for ptype, gap in docs.mandatory_gaps(doc).items():
            log = context.log.warning if gap.awaited else context.log.error
            log(f"{key} {ptype}: {gap.text}")


@aux_asset({"products", *SOURCE_KEYS}, [checks.MANDATORY_CANDIDATES])
def aux_search_results(context: dg.AssetExecutionContext, config: SearchConfig) -> Iterator[Event]:
    """For each window and product type: the candidates found in its source and the items
    its selection policy picked (per platform, with alternatives)."""
    started = time.monotonic()
    _check_config(config)
    try:
        windows = windows_of(context.partition_keys, config.window_start, config.window_end)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    try:
        if config.filter is not None:
            cql = _validate_raw(config)
            source = _open_sources(context, {config.source})[config.source]
            documents = plan_raw(
                cql,
                source,
                source_name=config.source,
                collection=str(config.collection),
                windows=windows,
                search_collections=config.search_collections,
                assets=config.assets,
                limit=config.limit,
                unpack=config.unpack,
                timeout_s=config.timeout_s,
            )
        else:
            specs = context.resources.products.load().select(config.product_types)
            sources = _open_sources(context, {s.source for s in specs})
            documents = plan_windows(
                specs, windows, sources, timeout_s=config.timeout_s, log=context.log.info
            )
    except (ProductsFileError, SearchError, ValueError) as exc:
        raise dg.Failure(str(exc)) from None
    _log_gaps(context, documents)
    empty = docs.empty_selections(documents)
    if config.error_if_empty and empty:
        raise dg.Failure("no AUX product found for: " + "; ".join(empty))
    per_day = {
        key: {**docs.search_numbers(doc), "window": dg.MetadataValue.json(doc["window"])}
        for key, doc in documents.items()
    }
    _report(context, per_day, started)
    yield dg.Output(documents)
    yield from checks.per_day(
        context, checks.MANDATORY_CANDIDATES, checks.mandatory_candidates(documents)
    )


class StagingConfig(dg.Config):
    """``dry_run``: search, select and dedupe as usual, then report per item what would be
    transferred (bytes, source, target) and stop: nothing is written to storage or the catalog,
    the day is not marked materialized and the next assets do not run."""

    dry_run: bool = False


def _dry_run(
    context: dg.AssetExecutionContext, planned: list[PlannedItem], documents: dict[str, Any]
) -> Iterator[dg.AssetObservation]:
    """Log each item's plan and record, per day, an observation saying what would move."""
    by_key = {(p.collection, p.item_id): p for p in planned}
    for p in planned:
        name = f"{p.collection}/{p.item_id}"
        if p.action == "transfer":
            for f in p.files:
                size = "size unknown" if f.size is None else size_text(f.size)
                context.log.info(
                    f"dry run: would transfer {name} {f.key} ({size}) from "
                    f"{p.source} {f.source_href} to {f.target}"
                )
        elif p.action == "present":
            context.log.info(f"dry run: {name} is already in the catalog")
        else:
            context.log.warning(f"dry run: {name} would fail: {redact_urls(p.reason or '')}")
    for day, doc in documents.items():
        items = [
            by_key[key]
            for key in dict.fromkeys(
                (product["collection"], feature["id"])
                for product in doc["products"]
                for feature in product["selected"]["features"]
            )
            if key in by_key
        ]
        moving = [p for p in items if p.action == "transfer"]
        n_bytes = sum(p.size for p in moving)
        rows = [
            f"| {p.collection}/{p.item_id} | {p.action} | {size_text(p.size) if p.files else ''} "
            f"| {redact_urls(p.reason or '') or ', '.join(f.target for f in p.files)} |"
            for p in items
        ]
        yield dg.AssetObservation(
            asset_key=context.asset_key,
            partition=day,
            description=f"DRY RUN, nothing was written: {len(moving)} of {len(items)} item(s) "
            f"({size_text(n_bytes)}) would be transferred",
            metadata={
                "dry_run": True,
                "n_would_transfer": len(moving),
                "bytes_would_transfer": n_bytes,
                "n_present": sum(p.action == "present" for p in items),
                "n_would_fail": sum(p.action == "failed" for p in items),
                "plan": dg.MetadataValue.md(
                    "| item | action | size | target or reason |\n|---|---|---|---|\n"
                    + "\n".join(rows)
                ),
            },
        )


def _priority(tags: Mapping[str, str]) -> int:
    """The run's ``dagster/priority`` (0 when unset or not a number)."""
    try:
        return int(tags.get("dagster/priority", "0"))
    except ValueError:
        return 0


@aux_asset(
    {"catalog", "storage", "staging", *SOURCE_KEYS},
    [checks.ALL_STAGED_VERIFIED],
    dg.AutomationCondition.eager(),  # follows aux_search_results
    output_required=False,  # a dry run materializes nothing, so the next assets do not run
)
def aux_staged_items(
    context: dg.AssetExecutionContext, config: StagingConfig, aux_search_results: dict[str, Any]
) -> Iterator[Event]:
    """The picked items staged: bytes stored and verified, item registered in the catalog;
    per item: staged, already present, or failed with its reason. Items found in our own
    catalog (source ``catalog``) are not staged again. Transfers from a source wait for a slot
    of its pool ``aux_source_<name>`` (:mod:`aux_assets.defs.pools`); a local source's files are
    read only inside its folder and ``AUX_LOCAL_FILE_ROOTS``."""
    limits = {name: source_resource(context, name).max_connections for name in SOURCES}
    started = time.monotonic()
    gate = DagsterPoolGate(
        context.instance,
        context.run.run_id,
        context.get_step_execution_context().step.key,
        priority=_priority(context.run.tags),
        log=context.log.info,
    )

    staging = context.resources.staging

    def source(name: str) -> tuple[tuple[Path, ...], Auth | None]:
        resource = source_resource(context, name)
        return staging.file_roots(resource.open()), resource.auth()

    catalog = context.resources.catalog.open()
    try:
        storage = context.resources.storage
        stager = Stager(
            catalog,
            storage.open(),
            limits=limits,
            gate=gate,
            keep_superseded=storage.superseded == "keep",
            claims=FileClaims(Path(storage.home) / "claims"),
            transfer_timeout_s=staging.transfer_timeout_s,
            max_unsized_bytes=staging.max_unsized_bytes,
            log=context.log.info,
            warn=context.log.warning,
        )
        tasks = stage_tasks(aux_search_results.values(), source)
        if config.dry_run:
            planned = stager.plan(tasks)
        else:
            outcomes = {(o.collection, o.item_id): o for o in stager.stage(tasks)}
    finally:
        catalog.close()
    if config.dry_run:
        yield from _dry_run(context, planned, aux_search_results)
        later = (checks.ALL_STAGED_VERIFIED, checks.CATALOG_COVERAGE, checks.ON_TIME)
        yield from checks.restated(context, later, aux_search_results)
        yield checks.check_output(context, checks.ALL_STAGED_VERIFIED)
        return
    if stager.swept:
        context.log.info(f"removed {stager.swept} dead .part/.work leftover(s) of killed runs")

    def outcome(collection: str, item_id: str) -> docs.StagedItem:
        # an item without an outcome was found in our own catalog: nothing to stage
        found = outcomes.get((collection, item_id))
        return (found or ItemOutcome(item_id, collection, "catalog", "present")).to_json()

    documents = {key: docs.staged_document(doc, outcome) for key, doc in aux_search_results.items()}
    n_failed = sum(o.status == "failed" for o in outcomes.values())
    if n_failed:
        context.log.error(f"{n_failed} of {len(outcomes)} item(s) failed (reasons logged above)")
    moved = {key: o.bytes_transferred for key, o in outcomes.items()}
    per_day = {
        key: {**numbers, "catalog_lookups": catalog.lookups, "leftovers_removed": stager.swept}
        | stager.totals.numbers()  # the whole run's items, bytes, MiB/s and staging seconds
        for key, numbers in docs.staged_numbers(documents, moved).items()
    }
    now = settings.now()
    for key, metadata in per_day.items():  # published -> staged, per mandatory type (plots)
        hours = latencies(aux_search_results[key], documents[key], now)
        metadata["latency_hours"] = dg.MetadataValue.json(hours)
        metadata.update({f"latency_h_{ptype}": h for ptype, h in hours.items()})
    _report(context, per_day, started)
    yield dg.Output(documents)
    yield from checks.per_day(
        context, checks.ALL_STAGED_VERIFIED, checks.all_staged_verified(documents)
    )


@aux_asset(
    {"catalog", IO_MANAGER},
    [checks.CATALOG_COVERAGE, checks.ON_TIME],
    dg.AutomationCondition.eager(),
)
def aux_catalog_items(
    context: dg.AssetExecutionContext, aux_staged_items: dict[str, Any]
) -> Iterator[Event]:
    """The items as the catalog now holds them (staged hrefs), one selection per product type,
    read back from the catalog in one batched lookup per collection; coverage per type, the
    day's deadline, and what replaced what since the day's previous run (a precise orbit
    replacing restituted ones)."""
    started = time.monotonic()
    catalog = context.resources.catalog.open()
    try:
        held = {
            collection: lookup_items(catalog, collection, ids)
            for collection, ids in docs.wanted_items(aux_staged_items.values()).items()
        }
    finally:
        catalog.close()
    io: JsonPartitionIOManager = getattr(context.resources, IO_MANAGER)
    documents: dict[str, docs.CatalogDocument] = {}
    for key, staged in aux_staged_items.items():
        doc = docs.catalog_document(staged, held, catalog.item_url)
        doc["replaced"] = docs.replacements(io.stored(context.asset_key, key), doc)
        for ptype, change in doc["replaced"].items():
            context.log.info(f"{key} {ptype}: {change}")
        documents[key] = doc
    _report(context, {key: _catalog_metadata(doc) for key, doc in documents.items()}, started)
    yield dg.Output(documents)
    yield from checks.per_day(
        context,
        checks.CATALOG_COVERAGE,
        checks.catalog_coverage(aux_staged_items, documents),
    )
    yield from checks.per_day(
        context,
        checks.ON_TIME,
        checks.on_time(documents, due_after(), settings.now()),
    )
