"""The three partitioned aux assets: search results -> staged items -> catalog items."""

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pystac

from aux_assets import checks
from aux_assets.filters import FilterError, parse_filter
from aux_assets.names import UnsafeNameError, check_collection_id, check_safe_name
from aux_assets.partitions import daily_partitions
from aux_assets.planning import Window, feature_collection, plan_raw, plan_windows
from aux_assets.pools import DagsterPoolGate
from aux_assets.products import ProductsFileError
from aux_assets.report import summary_rows
from aux_assets.resources import SourceResource
from aux_assets.search import SearchError, Source, UnconfiguredSource
from aux_assets.sources import SOURCES, UnknownSourceError, check_source, resource_key
from aux_assets.staging import ItemOutcome, Stager, StageTask

SOURCE_KEYS = frozenset(resource_key(s) for s in SOURCES)
IO_MANAGER = "aux_json_io"
AssetFn = Callable[..., Iterator[dg.Output[dict[str, Any]] | dg.AssetCheckResult]]


def aux_asset(
    required: set[str],
    check: dg.AssetCheckSpec,
    automation: dg.AutomationCondition[Any] | None = None,
) -> Callable[[AssetFn], dg.AssetsDefinition]:
    """``dg.asset`` with what the three aux assets share: daily partitions, range backfills,
    group, JSON IO manager, one inline check."""
    decorator: Callable[[AssetFn], dg.AssetsDefinition] = dg.asset(
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=10),
        group_name="aux",
        io_manager_key=IO_MANAGER,
        owners=["team:ground-segment"],
        kinds={"stac", "python"},
        code_version="1",
        required_resource_keys=required,
        check_specs=[check],
        automation_condition=automation,
    )
    return decorator


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


def _parse_time(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise dg.Failure(
            f"{field}={text!r} is not an ISO 8601 datetime; use e.g. 2026-01-05T10:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _windows(context: dg.AssetExecutionContext, config: SearchConfig) -> list[Window]:
    keys = context.partition_keys
    if config.window_start is None and config.window_end is None:
        windows = []
        for key in keys:
            start = datetime.fromisoformat(key).replace(tzinfo=UTC)
            windows.append(Window(key, start, start + timedelta(days=1)))
        return windows
    if not (config.window_start and config.window_end) or len(keys) != 1:
        raise dg.Failure("window_start and window_end go together, on a single-partition run")
    start = _parse_time(config.window_start, "window_start")
    end = _parse_time(config.window_end, "window_end")
    if end < start:
        raise dg.Failure(
            f"window_end {end.isoformat()} is before window_start {start.isoformat()}; "
            "swap them or fix the dates"
        )
    return [Window(keys[0], start, end)]


def _open_sources(context: dg.AssetExecutionContext, names: set[str]) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    for name in sorted(names):
        resource: SourceResource = getattr(context.resources, resource_key(name))
        source = resource.open()
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


def _search_metadata(doc: Mapping[str, Any]) -> dict[str, Any]:
    products = doc["products"]
    return {
        "n_candidates": sum(len(p["candidates"]) for p in products),
        "n_selected": sum(len(p["selected"]["features"]) for p in products),
        "n_product_types": len({p["product_type"] for p in products}),
        "n_missing_mandatory": sum(bool(p["mandatory"] and p["missing_units"]) for p in products),
        "window": dg.MetadataValue.json(doc["window"]),
    }


def _staged_metadata(
    documents: Mapping[str, Any],
    outcomes: Mapping[tuple[str, str], ItemOutcome],
    lookups: int,
    swept: int,
) -> dict[str, dict[str, Any]]:
    """Per day: item outcomes, and the bytes moved for the items it is the first day of; the
    run's catalog lookups and the dead ``.part``/``.work`` leftovers it removed."""
    counted: set[tuple[str, str]] = set()
    per_day: dict[str, dict[str, Any]] = {}
    for key, doc in sorted(documents.items()):
        items = [o for p in doc["products"] for o in p["items"]]
        moved = 0
        for item in items:
            ident = (item["collection"], item["item_id"])
            if ident in outcomes and ident not in counted:
                counted.add(ident)
                moved += outcomes[ident].bytes_transferred
        per_day[key] = {
            **{f"n_{s}": sum(i["status"] == s for i in items) for s in ("staged", "present")},
            "n_failed": sum(i["status"] == "failed" for i in items),
            "bytes_staged": moved,
            "catalog_lookups": lookups,
            "leftovers_removed": swept,
        }
    return per_day


def _catalog_metadata(key: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    features = {
        (f["collection"], f["id"]): f for p in doc["products"] for f in p["items"]["features"]
    }
    return {
        "n_items": len(features),
        "n_uncovered": sum(not covered for covered in doc["coverage"].values()),
        "coverage": dg.MetadataValue.json(doc["coverage"]),
        "summary": dg.MetadataValue.md(_summary_table({key: doc})),
        "items": dg.MetadataValue.json(
            {"type": "FeatureCollection", "features": list(features.values())}
        ),
    }


@aux_asset({"products", *SOURCE_KEYS}, checks.MANDATORY_CANDIDATES)
def aux_search_results(
    context: dg.AssetExecutionContext, config: SearchConfig
) -> Iterator[dg.Output[dict[str, Any]] | dg.AssetCheckResult]:
    """For each window and product type: the candidates found in its source and the items
    its selection policy picked (per platform, with alternatives)."""
    started = time.monotonic()
    _check_config(config)
    windows = _windows(context, config)
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
    empty = [
        f"{key} {p['product_type']}"
        for key, doc in documents.items()
        for p in doc["products"]
        if not p["selected"]["features"]
    ]
    if config.error_if_empty and empty:
        raise dg.Failure("no AUX product found for: " + "; ".join(empty))
    _report(context, {key: _search_metadata(doc) for key, doc in documents.items()}, started)
    yield dg.Output(documents)
    yield checks.mandatory_candidates(documents)


def _stage_tasks(
    context: dg.AssetExecutionContext, documents: Mapping[str, Any]
) -> list[StageTask]:
    tasks: list[StageTask] = []
    for doc in documents.values():
        for product in doc["products"]:
            if product["source"] == "catalog":
                continue
            resource: SourceResource = getattr(context.resources, resource_key(product["source"]))
            source = resource.open()
            assets = product["assets"]
            if assets is None and product["source"] == "cdse":
                assets = ["product"]
            for feature in product["selected"]["features"]:
                tasks.append(
                    StageTask(
                        item=pystac.Item.from_dict(feature),
                        collection=product["collection"],
                        source=product["source"],
                        local_source=source.local,
                        auth=resource.auth(),
                        asset_keys=tuple(assets) if assets is not None else None,
                        unpack=product["unpack"],
                    )
                )
    return tasks


def _priority(tags: Mapping[str, str]) -> int:
    """The run's ``dagster/priority`` (0 when unset or not a number)."""
    try:
        return int(tags.get("dagster/priority", "0"))
    except ValueError:
        return 0


@aux_asset(
    {"catalog", "storage", *SOURCE_KEYS},
    checks.ALL_STAGED_VERIFIED,
    dg.AutomationCondition.eager(),  # follows aux_search_results
)
def aux_staged_items(
    context: dg.AssetExecutionContext, aux_search_results: dict[str, Any]
) -> Iterator[dg.Output[dict[str, Any]] | dg.AssetCheckResult]:
    """The picked items staged: bytes stored and verified, item registered in the catalog;
    per item: staged, already present, or failed with its reason. Items found in our own
    catalog (source ``catalog``) are not staged again. Transfers from a source wait for a slot
    of its pool ``aux_source_<name>`` (:mod:`aux_assets.pools`)."""
    limits = {
        name: getattr(context.resources, resource_key(name)).max_connections for name in SOURCES
    }
    started = time.monotonic()
    gate = DagsterPoolGate(
        context.instance,
        context.run.run_id,
        context.get_step_execution_context().step.key,
        priority=_priority(context.run.tags),
        log=context.log.info,
    )
    catalog = context.resources.catalog.open()
    try:
        stager = Stager(catalog, context.resources.storage.open(), limits=limits, gate=gate)
        tasks = _stage_tasks(context, aux_search_results)
        outcomes = {(o.collection, o.item_id): o for o in stager.stage(tasks)}
    finally:
        catalog.close()
    if stager.swept:
        context.log.info(f"removed {stager.swept} dead .part/.work leftover(s) of killed runs")
    documents: dict[str, Any] = {}
    for key, doc in aux_search_results.items():
        products = []
        for product in doc["products"]:
            items = []
            for feature in product["selected"]["features"]:
                outcome = outcomes.get((product["collection"], feature["id"]))
                if outcome is None:  # found in our own catalog: nothing to stage
                    outcome = ItemOutcome(
                        feature["id"], product["collection"], "catalog", "present"
                    )
                items.append(outcome.to_json())
            products.append(
                {
                    k: product[k]
                    for k in ("product_type", "policy", "mandatory", "collection", "missing_units")
                }
                | {"items": items}
            )
        documents[key] = {"partition": key, "window": doc["window"], "products": products}
    for outcome in outcomes.values():
        if outcome.status == "failed":
            context.log.error(f"{outcome.collection}/{outcome.item_id} failed: {outcome.reason}")
    _report(
        context,
        _staged_metadata(documents, outcomes, catalog.lookups, stager.swept),
        started,
    )
    yield dg.Output(documents)
    yield checks.all_staged_verified(documents)


def _summary_table(documents: Mapping[str, Any]) -> str:
    lines = [
        "| day | product type | selected item | policy | storage href | size | checksum |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary_rows(documents):
        checksum = f"`{row.checksum}`" if row.checksum else ""
        item = row.item_id or "(none)"
        if row.item_url:
            item = f"[{item}]({row.item_url})"
        lines.append(
            f"| {row.day} | {row.product_type} | {item} | {row.policy} | "
            f"{row.href} | {row.size if row.size is not None else ''} | {checksum} |"
        )
    return "\n".join(lines)


@aux_asset({"catalog"}, checks.CATALOG_COVERAGE, dg.AutomationCondition.eager())
def aux_catalog_items(
    context: dg.AssetExecutionContext, aux_staged_items: dict[str, Any]
) -> Iterator[dg.Output[dict[str, Any]] | dg.AssetCheckResult]:
    """The items as the catalog now holds them (staged hrefs), one selection per product type,
    read back from the catalog in one batched lookup per collection; coverage per type."""
    started = time.monotonic()
    catalog = context.resources.catalog.open()
    wanted: dict[str, set[str]] = {}
    for doc in aux_staged_items.values():
        for product in doc["products"]:
            for item in product["items"]:
                wanted.setdefault(product["collection"], set()).add(item["item_id"])
    try:
        held = {
            collection: catalog.get_items(collection, sorted(ids))
            for collection, ids in sorted(wanted.items())
        }
    finally:
        catalog.close()
    documents: dict[str, Any] = {}
    for key, doc in aux_staged_items.items():
        products = []
        coverage: dict[str, bool] = {}
        for product in doc["products"]:
            found = [held[product["collection"]].get(i["item_id"]) for i in product["items"]]
            items = [item for item in found if item is not None]
            complete = bool(items) and len(items) == len(found) and not product["missing_units"]
            if product["mandatory"]:
                coverage[product["product_type"]] = (
                    coverage.get(product["product_type"], True) and complete
                )
            products.append(
                {k: product[k] for k in ("product_type", "policy", "mandatory", "collection")}
                | {
                    "items": feature_collection(items),
                    "item_urls": {
                        i.id: catalog.item_url(product["collection"], i.id) for i in items
                    },
                }
            )
        documents[key] = {
            "partition": key,
            "window": doc["window"],
            "products": products,
            "coverage": coverage,
        }
    _report(context, {key: _catalog_metadata(key, doc) for key, doc in documents.items()}, started)
    yield dg.Output(documents)
    yield checks.catalog_coverage(documents)
