"""Our contenders, each run in its own process by the benchmark: ``python -m bench.worker MODE``.

Modes: ``engine`` (the transfer engine alone, verification on), ``stager`` (dedupe, transfer,
verify, store, register with a local catalog and storage), ``dagster`` (the three assets over a
range of days), ``search`` (search and select of a range of days on the static month, next to
parsing each of its JSON documents once), ``stac-search`` (the same against a STAC API, next to
raw pystac-client paging of the same requests), ``idle`` (imports only: the baseline of the memory
figure). The last line printed
is a JSON report; the benchmark measures time, CPU and memory from outside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.data import target_collection


def _items(path: Path) -> list[dict[str, Any]]:
    features: list[dict[str, Any]] = json.loads(path.read_text())["features"]
    return features


async def _engine(items: list[dict[str, Any]], out: Path, concurrency: int) -> dict[str, Any]:
    from aux_assets.staging.transfer import TransferEngine, TransferError, TransferRequest
    from aux_assets.utils.checksums import Checksum

    requests, finals = [], []
    for item in items:
        for asset in item["assets"].values():
            final = out / item["id"] / asset["href"].rsplit("/", 1)[1]
            requests.append(
                TransferRequest(
                    url=asset["href"],
                    part_path=final.with_name(final.name + ".part"),
                    expected_size=asset.get("file:size"),
                    expected_checksum=Checksum.parse(asset["file:checksum"]),
                )
            )
            finals.append(final)
    started = time.perf_counter()
    async with TransferEngine(default_limit=concurrency) as engine:
        results = await engine.fetch_all(requests)
    n_bytes, errors = 0, []
    for result, final in zip(results, finals, strict=True):
        if isinstance(result, TransferError):
            errors.append(str(result))
        else:
            os.replace(result.request.part_path, final)
            n_bytes += result.size
    return {
        "files": len(finals) - len(errors),
        "bytes": n_bytes,
        "failed": len(errors),
        "errors": errors[:3],
        "seconds": time.perf_counter() - started,
    }


def _stage_once(
    items: list[dict[str, Any]], out: Path, concurrency: int, default: str
) -> dict[str, Any]:
    import pystac

    from aux_assets.catalog.static import LocalCatalog
    from aux_assets.staging.stager import Stager, StageTask
    from aux_assets.storage.local import LocalStorage

    tasks = [
        StageTask(
            item=pystac.Item.from_dict(doc),
            collection=target_collection(doc, default),
            source="bench",
        )
        for doc in items
    ]
    catalog = LocalCatalog(out / "catalog")
    stager = Stager(catalog, LocalStorage(out / "storage"), limits={"bench": concurrency})
    started = time.perf_counter()
    outcomes = stager.stage(tasks)
    seconds = time.perf_counter() - started
    count = {s: sum(o.status == s for o in outcomes) for s in ("staged", "present", "failed")}
    return {
        "files": sum(len(o.assets) for o in outcomes if o.status == "staged"),
        "bytes": sum(o.bytes_transferred for o in outcomes),
        **count,
        "errors": [f"{o.item_id}: {o.reason}" for o in outcomes if o.status == "failed"][:3],
        "lookups": catalog.lookups,
        "items": len(outcomes),
        "seconds": seconds,
    }


def _stager(
    items: list[dict[str, Any]], out: Path, concurrency: int, default: str, rerun: bool
) -> dict[str, Any]:
    report = _stage_once(items, out, concurrency, default)
    if rerun:  # a new Stager and catalog client: the lookups counter starts at zero
        report["rerun"] = _stage_once(items, out, concurrency, default)
    return report


def _dagster_once(home: Path, resources: dict[str, Any], first: str, last: str) -> dict[str, Any]:
    import dagster as dg

    from aux_assets.defs.assets import aux_catalog_items, aux_search_results, aux_staged_items

    assets = [aux_search_results, aux_staged_items, aux_catalog_items]
    job = dg.Definitions(assets=assets, resources=resources).resolve_implicit_global_asset_job_def()
    # made before the clock starts: the first instance of a process imports Dagster's storage
    # (alembic, sqlalchemy; 0.3-0.5 s), which is start-up, not the run
    instance = dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        resources=resources,
        raise_on_error=False,
    )
    seconds = time.perf_counter() - started
    metadata: list[dict[str, Any]] = [
        {k: v.value for k, v in m.metadata.items()}
        for m in result.asset_materializations_for_node("aux_staged_items")
    ]
    staged: set[tuple[str, str]] = set()
    present: set[tuple[str, str]] = set()
    failed: list[str] = []
    for doc_path in sorted((home / "io" / "aux_staged_items").glob("*.json")):
        for product in json.loads(doc_path.read_text())["products"]:
            for item in product["items"]:
                key = (item["collection"], item["item_id"])
                if item["status"] == "staged":
                    staged.add(key)
                elif item["status"] == "present":
                    present.add(key)
                else:
                    failed.append(f"{item['item_id']}: {item['reason']}")
    return {
        "success": result.success,
        "files": len(staged),
        "present": len(present - staged),
        "items": len(staged | present),
        "failed": len(failed),
        "errors": failed[:3],
        "bytes": sum(int(m.get("bytes_staged", 0)) for m in metadata),
        "lookups": max((int(m.get("catalog_lookups", 0)) for m in metadata), default=0),
        "days": len(metadata),
        "seconds": seconds,
    }


def _dagster(
    items_path: Path, home: Path, concurrency: int, days: int, rerun: bool
) -> dict[str, Any]:
    from aux_assets.defs.assets import IO_MANAGER
    from aux_assets.defs.io_managers import JsonPartitionIOManager
    from aux_assets.defs.resources import build_resources

    env = {
        "AUX_ASSETS_HOME": str(home),
        "AUX_AUXIP_URL": items_path.resolve().as_uri(),
        "AUX_AUXIP_MAX_CONNECTIONS": str(concurrency),
    }
    resources = {
        **build_resources(env),
        IO_MANAGER: JsonPartitionIOManager(base_dir=str(home / "io")),
    }
    start = date(2026, 1, 1)
    first, last = start.isoformat(), (start + timedelta(days=days - 1)).isoformat()
    report = _dagster_once(home, resources, first, last)
    if rerun:
        report["rerun"] = _dagster_once(home, resources, first, last)
    return report


def _search(root: Path, days: int) -> dict[str, Any]:
    """Search and select ``days`` days from 2026-01-01 on the static catalog at ``root`` with
    the demo products file, in process; and the floor: reading and parsing every document."""
    from aux_assets.planning import plan_windows, windows_of
    from aux_assets.products import DEMO_PRODUCTS_FILE, load_products
    from aux_assets.sources.static import LocalStacSource

    for path in root.rglob("*.json"):  # into the page cache: the search reads them warm too
        path.read_bytes()
    started = time.perf_counter()
    documents = sum(1 for path in root.rglob("*.json") if json.loads(path.read_bytes()))
    floor = time.perf_counter() - started
    specs = load_products(DEMO_PRODUCTS_FILE).products
    keys = [(date(2026, 1, 1) + timedelta(days=d)).isoformat() for d in range(days)]
    source = LocalStacSource("auxip", root)
    started = time.perf_counter()
    plans = plan_windows(specs, windows_of(keys), {"auxip": source, "catalog": source})
    seconds = time.perf_counter() - started
    selected = sum(len(p["selected"]["features"]) for d in plans.values() for p in d["products"])
    return {"documents": documents, "floor_s": floor, "seconds": seconds, "selected": selected}


def _stac_search(url: str, days: int, repeats: int) -> dict[str, Any]:
    """Search and select ``days`` days from 2026-01-01 against the STAC API at ``url`` with the
    demo products file (``plan_windows``, as the search asset does), next to raw pystac-client
    paging of the requests it sent (dicts, as many threads); in alternation, the median."""
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    from pystac_client import Client

    from aux_assets.planning import plan_windows, windows_of
    from aux_assets.products import DEMO_PRODUCTS_FILE, load_products
    from aux_assets.sources.base import SearchRequest
    from aux_assets.sources.stac_api import PAGE_SIZE, StacApiSource

    specs = load_products(DEMO_PRODUCTS_FILE).products
    windows = windows_of([(date(2026, 1, 1) + timedelta(days=d)).isoformat() for d in range(days)])
    sent: list[SearchRequest] = []

    class Recorded(StacApiSource):
        def search(self, request: SearchRequest) -> list[Any]:
            sent.append(request)
            return super().search(request)

    def ours() -> tuple[float, int]:
        source = StacApiSource("auxip", url)
        started = time.perf_counter()
        plans = plan_windows(specs, windows, {"auxip": source, "catalog": source})
        seconds = time.perf_counter() - started
        return seconds, sum(
            len(p["selected"]["features"]) for d in plans.values() for p in d["products"]
        )

    def raw() -> tuple[float, int]:
        started = time.perf_counter()
        client = Client.open(url)

        def page(request: SearchRequest) -> int:
            search = client.search(
                method="POST", filter=request.filter, limit=PAGE_SIZE,
                collections=list(request.collections) if request.collections else None,
                datetime=request.datetime,
            )  # fmt: skip
            return sum(len(p.get("features", [])) for p in search.pages_as_dicts())

        with ThreadPoolExecutor(max_workers=8) as pool:
            found = sum(pool.map(page, sent))
        return time.perf_counter() - started, found

    recorder = Recorded("auxip", url)
    plan_windows(specs, windows, {"auxip": recorder, "catalog": recorder})  # warm-up, records
    timings: dict[str, list[float]] = {"ours": [], "raw": []}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for name, measure in (("ours", ours), ("raw", raw)):
            seconds, counts[name] = measure()
            timings[name].append(seconds)
    return {
        "requests": len(sent),
        "found": counts["raw"],
        "selected": counts["ours"],
        "seconds": statistics.median(timings["ours"]),
        "raw_s": statistics.median(timings["raw"]),
        "runs": timings,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument(
        "mode", choices=["engine", "stager", "dagster", "search", "stac-search", "idle"]
    )
    parser.add_argument(
        "items", nargs="?", help="ItemCollection of the set (search: its folder; stac-search: URL)"
    )
    parser.add_argument("out", type=Path, nargs="?", help="output folder (absent or empty)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--collection", default="bench", help="target collection (random sets)")
    parser.add_argument("--days", type=int, default=30, help="dagster: days from 2026-01-01")
    parser.add_argument("--rerun", action="store_true", help="stage a second time, report both")
    parser.add_argument("--repeats", type=int, default=3, help="stac-search: runs of each")
    args = parser.parse_args(argv)
    report: dict[str, Any]
    if args.mode == "idle":
        import aux_assets.staging.stager  # noqa: F401  (what the stager imports)

        report = {}
    elif args.mode == "search":
        if args.items is None:
            parser.error("search needs the folder of the static month")
        report = _search(Path(args.items), args.days)
    elif args.mode == "stac-search":
        if args.items is None:
            parser.error("stac-search needs the URL of the STAC API")
        report = _stac_search(args.items, args.days, args.repeats)
    elif args.items is None or args.out is None:
        parser.error(f"{args.mode} needs ITEMS and OUT")
    elif args.mode == "engine":
        report = asyncio.run(_engine(_items(Path(args.items)), args.out, args.concurrency))
    elif args.mode == "stager":
        items = _items(Path(args.items))
        report = _stager(items, args.out, args.concurrency, args.collection, args.rerun)
    else:
        report = _dagster(Path(args.items), args.out, args.concurrency, args.days, args.rerun)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
