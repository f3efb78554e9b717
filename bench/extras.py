"""The measurements that are not a race: peak memory while staging a 2 GiB file, the re-run of
a staged month, and registering items in pgstac."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.contenders import Setup
from bench.data import DataSet, ensure_static_set
from bench.measure import run_measured

Log = Callable[[str], None]


@dataclass
class Extra:
    """One measured line; ``value`` is what its target is checked against (None: skipped)."""

    name: str
    text: str
    value: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _worker(setup: Setup, mode: str, args: list[str], log_name: str) -> Any:
    cmd = [setup.python, "-m", "bench.worker", mode, *args]
    return run_measured(cmd, cwd=setup.repo, log_path=setup.logs / log_name)


def peak_memory(setup: Setup, huge: DataSet) -> Extra:
    """Peak RSS of the staging process (dedupe, transfer, verify, store, register) on one
    2 GiB file, next to the RSS of the same interpreter with the same imports, idle."""
    idle = _worker(setup, "idle", [], "memory-idle.log")
    out = Path(tempfile.mkdtemp(prefix="memory-", dir=setup.work))
    try:
        items = str(setup.inputs / f"{huge.name}.items.json")
        args = [items, str(out), "--concurrency", str(setup.concurrency)]
        m = _worker(setup, "stager", [*args, "--collection", "bench-huge"], "memory-stager.log")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    staged = m.ok and m.report.get("staged") == 1
    if not staged:
        return Extra("memory", f"staging the 2 GiB file failed: {m.output[-500:]}")
    gib = huge.n_bytes / (1 << 30)
    return Extra(
        "memory",
        f"peak RSS while staging one {gib:.0f} GiB file: {m.rss_mib:.0f} MiB "
        f"(the same process idle after its imports: {idle.rss_mib:.0f} MiB; "
        f"{m.wall_s:.1f} s, {huge.n_bytes / (1 << 20) / m.wall_s:.0f} MiB/s)",
        m.rss_mib,
        {"rss_mib": m.rss_mib, "idle_rss_mib": idle.rss_mib, "wall_s": m.wall_s},
    )


def rerun(setup: Setup, month: DataSet) -> Extra:
    """Stage the month, then stage it again with a new Stager: bytes moved and catalog lookups
    of the second run."""
    out = Path(tempfile.mkdtemp(prefix="rerun-", dir=setup.work))
    try:
        items = str(setup.inputs / f"{month.name}.items.json")
        args = [items, str(out), "--concurrency", str(setup.concurrency), "--rerun"]
        m = _worker(setup, "stager", args, "rerun.log")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    again = m.report.get("rerun")
    if not m.ok or not again:
        return Extra("rerun", f"re-run of the month failed: {m.output[-500:]}")
    n, lookups, moved = int(again["items"]), int(again["lookups"]), int(again["bytes"])
    per_1000 = lookups * 1000 / n if n else float(lookups)
    return Extra(
        "rerun",
        f"re-run of a staged month ({n} items, local catalog): {moved} bytes moved, "
        f"{again['present']} present, {lookups} catalog lookup(s) = {per_1000:.2f} per 1,000 "
        f"items, {again['seconds']:.2f} s in process (first run {m.report['seconds']:.2f} s)",
        per_1000 if moved == 0 and again["present"] == n else float("inf"),
        {
            "first": {k: v for k, v in m.report.items() if k != "rerun"},
            "rerun": again,
            "allowed_lookups": max(1, math.ceil(n / 1000)),
            "passed": moved == 0 and again["present"] == n and lookups <= math.ceil(n / 1000),
        },
    )


def dagster_rerun(setup: Setup, month: DataSet) -> Extra:
    """The same through the three assets: a range run over the month, then again."""
    out = Path(tempfile.mkdtemp(prefix="dagster-rerun-", dir=setup.work))
    try:
        items = str(setup.inputs / f"{month.name}.items.json")
        args = [items, str(out), "--concurrency", str(setup.concurrency)]
        m = _worker(setup, "dagster", [*args, "--days", str(month.month_days), "--rerun"], "dr.log")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    again = m.report.get("rerun")
    if not m.ok or not again:
        return Extra("dagster-rerun", f"re-run through the assets failed: {m.output[-500:]}")
    return Extra(
        "dagster-rerun",
        f"re-run of the month through the assets ({again['days']} days, {again['items']} "
        f"selected items): {again['bytes']} bytes staged, {again['files']} staged, "
        f"{again['lookups']} catalog lookup(s), run {again['seconds']:.1f} s "
        f"(first run {m.report['seconds']:.1f} s)",
        detail={"first": {k: v for k, v in m.report.items() if k != "rerun"}, "rerun": again},
    )


def search_select(setup: Setup, month: DataSet) -> Extra:
    """Search and select of the month on its static catalog, in process, next to the floor:
    parsing each of its JSON documents once (the value: their ratio)."""
    days = str(month.month_days)
    m = _worker(setup, "search", [str(month.www / month.name), "--days", days], "search.log")
    if not m.ok or "seconds" not in m.report:
        return Extra("search", f"search + select of the month failed: {m.output[-500:]}")
    seconds, floor = float(m.report["seconds"]), float(m.report["floor_s"])
    ratio = seconds / floor
    return Extra(
        "search",
        f"search + select of {days} days on the static month, in process: {seconds:.2f} s, "
        f"{ratio:.1f}x the {floor:.2f} s of parsing its {m.report['documents']} JSON documents "
        f"once ({m.report['selected']} selected)",
        ratio,
        dict(m.report),
    )


def static_memory(setup: Setup, month: DataSet, n_items: int = 50_000) -> Extra:
    """Peak RSS of search + select of one day on a static source of ``n_items`` items (copies
    of the month), next to the month itself (5,313 documents): memory flat in the items."""
    big = ensure_static_set(month, n_items, lambda _: None)
    runs = {}
    for name, folder in (("month", month.www / month.name), ("big", big)):
        runs[name] = _worker(setup, "search", [str(folder), "--days", "1"], f"static-{name}.log")
    failed = [m for m in runs.values() if not m.ok or "seconds" not in m.report]
    if failed:
        return Extra(
            "static", f"search of one day on a static set failed: {failed[0].output[-500:]}"
        )
    small, large = runs["month"], runs["big"]
    return Extra(
        "static",
        f"search + select of one day on a static source of {n_items:,} items: peak RSS "
        f"{large.rss_mib:.0f} MiB, {large.report['seconds']:.2f} s (the month's "
        f"{small.report['documents']} documents: {small.rss_mib:.0f} MiB, "
        f"{small.report['seconds']:.2f} s)",
        large.rss_mib,
        {"big": dict(large.report), "month": dict(small.report)},
    )


@contextlib.contextmanager
def _pgstac() -> Iterator[Any]:
    """The tests' pgstac fixture (tests/fixtures/pgstac.py), driven outside pytest; raises
    ``LookupError`` with its reason when it skips or fails."""
    import pytest

    from tests.fixtures import pgstac as fixture

    start = contextlib.contextmanager(fixture.pgstac_api.__wrapped__)  # type: ignore[attr-defined]
    outcomes = (pytest.skip.Exception, pytest.fail.Exception)
    try:
        with start() as api:
            yield api
    except outcomes as exc:
        raise LookupError(str(getattr(exc, "msg", exc))) from None


def _registration_items(month: DataSet | None, setup: Setup, n: int) -> list[Any]:
    """``n`` realistic aux items (the month sample's, ids suffixed when it has fewer)."""
    import pystac

    name = month.name if month is not None else "tiny"
    docs = json.loads((setup.inputs / f"{name}.items.json").read_text())["features"]
    items = []
    for i in range(n):
        doc = copy.deepcopy(docs[i % len(docs)])
        if i >= len(docs):
            doc["id"] = f"{doc['id']}-r{i // len(docs)}"
        items.append(pystac.Item.from_dict(doc))
    return items


def _stac_search(setup: Setup, month: DataSet, url: str, repeats: int, log: Log) -> Extra:
    """The month loaded into pgstac, then searched and selected over its days as the search
    asset does, next to raw pystac-client paging of the same requests (the value: the ratio)."""
    import pystac

    from aux_assets.catalog.stac_api import StacApiCatalog

    features = json.loads((setup.inputs / f"{month.name}.items.json").read_text())["features"]
    by_collection: dict[str, list[pystac.Item]] = {}
    for feature in features:
        item = pystac.Item.from_dict(feature)
        by_collection.setdefault(feature.get("collection") or "auxip-sample", []).append(item)
    began = time.perf_counter()
    with StacApiCatalog(url) as catalog:
        for collection, items in by_collection.items():
            catalog.ensure_collection(collection)
            catalog.upsert(collection, items)
    log(
        f"  pgstac: the month's {len(features)} items loaded in {time.perf_counter() - began:.1f} s"
    )
    args = [url, "--days", str(month.month_days), "--repeats", str(repeats)]
    m = _worker(setup, "stac-search", args, "stac-search.log")
    if not m.ok or "seconds" not in m.report:
        return Extra("stac-search", f"search + select in pgstac failed: {m.output[-500:]}")
    seconds, raw = float(m.report["seconds"]), float(m.report["raw_s"])
    return Extra(
        "stac-search",
        f"search + select of {month.month_days} days in pgstac (the month's {len(features)} "
        f"items), in process: {seconds:.2f} s, {seconds / raw:.2f}x the {raw:.2f} s of raw "
        f"pystac-client paging of the same {m.report['requests']} requests "
        f"({m.report['found']} items found, {m.report['selected']} selected; median of {repeats})",
        seconds / raw,
        dict(m.report),
    )


def pgstac_registration(
    setup: Setup, month: DataSet | None, n: int, repeats: int, log: Log
) -> list[Extra]:
    """Register ``n`` items with ``StacApiCatalog.upsert`` (bulk batches, ``max_in_flight`` at
    once) into a new collection, ``repeats`` times; then look all of them up once."""
    try:
        from aux_assets.catalog.stac_api import StacApiCatalog
    except ImportError as exc:
        return [Extra("pgstac", f"SKIPPED: cannot import the catalog client: {exc}")]
    items = _registration_items(month, setup, n)
    searched: list[Extra] = []
    try:
        started = time.monotonic()
        with _pgstac() as api:
            log(f"pgstac started at {api.url} in {time.monotonic() - started:.1f} s")
            if month is not None:  # first: the registrations below copy the month's items
                searched.append(_stac_search(setup, month, api.url, repeats, log))
            rates, collection, batches = [], "", ""
            for r in range(repeats):
                collection = f"bench-{uuid.uuid4().hex[:8]}"
                with StacApiCatalog(api.url) as catalog:
                    batches = f"{catalog.batch_size} items, {catalog.max_in_flight} at once"
                    catalog.ensure_collection(collection)
                    began = time.perf_counter()
                    catalog.upsert(collection, items)
                    seconds = time.perf_counter() - began
                rates.append(n / seconds)
                log(f"  pgstac upsert {r + 1}/{repeats}: {n} items in {seconds:.2f} s")
            with StacApiCatalog(api.url) as catalog:
                began = time.perf_counter()
                found = catalog.get_items(collection, [item.id for item in items])
                lookup_s, lookups = time.perf_counter() - began, catalog.lookups
    except LookupError as exc:
        return [Extra("pgstac", f"SKIPPED: pgstac is not available ({exc})")]
    rate = statistics.median(rates)
    return [
        *searched,
        Extra(
            "pgstac",
            f"registering {n} items in pgstac (StacApiCatalog.upsert, bulk batches of {batches}): "
            f"{rate:,.0f} items/s (median of {repeats}; runs: "
            + ", ".join(f"{x:,.0f}" for x in rates)
            + ")",
            rate,
            {"rates": rates, "batches": batches},
        ),
        Extra(
            "pgstac-lookup",
            f"looking up those {n} ids in pgstac: {len(found)} found, {lookups} lookup(s) = "
            f"{lookups * 1000 / n:.2f} per 1,000 items, {lookup_s:.2f} s",
            lookups * 1000 / n,
            {"lookups": lookups, "seconds": lookup_s, "found": len(found)},
        ),
    ]


DEPLOY_INSTANCE = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"


def _bench_instance() -> str:
    """deploy/dagster.yaml's concurrency and monitoring settings, on the default SQLite storage
    (the benchmark has no PostgreSQL for Dagster's own storage)."""
    text = DEPLOY_INSTANCE.read_text()
    start = text.index("concurrency:")
    return text[start:]


_BACKFILL_ENDED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED"}


def backfill(setup: Setup, days: int, log: Log) -> Extra:
    """A backfill of the last ``days`` daily partitions of the three assets on the embedded
    default, launched through the real webserver's GraphQL and run by the real daemon with the
    deploy/ instance settings: seconds per partition, launch to the backfill's end."""
    from tests.helpers.dagster_servers import BINARIES, ServersNotReady, dagster_servers

    if not all(b.exists() for b in BINARIES):
        return Extra("backfill", "SKIPPED: dagster-webserver/dagster-daemon are not installed")
    last = date.today() - timedelta(days=1)
    keys = [(last - timedelta(days=n)).isoformat() for n in reversed(range(days))]
    root = Path(tempfile.mkdtemp(prefix="aux-backfill-", dir=setup.work))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUX_")}
    env |= {"AUX_ASSETS_HOME": str(root / "home"), "AUX_PARTITIONS_START": keys[0]}
    try:
        began = time.monotonic()
        with dagster_servers(root, env, _bench_instance()) as servers:
            log(f"  webserver + daemon up in {time.monotonic() - began:.1f} s")
            done, seconds = servers.backfill(keys, timeout_s=3600)
    except ServersNotReady as exc:
        return Extra("backfill", f"backfill failed: {str(exc)[-500:]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    runs = done.get("runs") or []
    statuses = sorted({r["status"] for r in runs})
    per = seconds / days
    return Extra(
        "backfill",
        f"backfill of {days} days x 3 assets on the embedded default through the webserver and "
        f"daemon: {done.get('status')} in {seconds:.0f} s = {per:.2f} s per partition, "
        f"{len(runs)} range run(s) ({', '.join(statuses)})",
        per if done.get("status") in _BACKFILL_ENDED else math.inf,  # failed or still running
        {"seconds": seconds, "runs": len(runs), "status": done.get("status"), "statuses": statuses},
    )
