"""The plan of the sample over a range of days, each product's file and item, and the sample of a
range written as a self-contained static STAC collection."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from aux_assets.sample.content import render
from aux_assets.sample.rules import PRODUCT_TYPES, RULES, Product, Seeds, TypeRule, republications

DEFAULT_START: date = date(2026, 1, 1)
DEFAULT_END: date = date(2026, 1, 8)
DEFAULT_MAX_SIZE: int = 64 * 1024
MIN_MAX_SIZE = 16 * 1024  # every format fits in this, headers included
COLLECTION_ID = "auxip-sample"
MARKER = ".sample-complete.json"  # written last: the sample is complete
EVICTION = timedelta(days=35)
STAC_VERSION = "1.1.0"
EXTENSIONS = [
    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "https://stac-extensions.github.io/product/v0.1.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
    "https://stac-extensions.github.io/timestamps/v1.1.0/schema.json",
]
_MEDIA_TYPES = {"zip": "application/zip", "TGZ": "application/gzip", "tar": "application/x-tar"}


@dataclass(frozen=True)
class SampleSummary:
    """What :func:`generate_sample` wrote."""

    root: Path
    collection_href: Path
    n_items: int
    n_bytes: int
    product_types: tuple[str, ...]


def _iso(t: datetime) -> str:
    if t.microsecond:
        return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"
    return f"{t:%Y-%m-%dT%H:%M:%S}Z"


def _json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _rules(product_types: Iterable[str] | None) -> list[TypeRule]:
    if product_types is None:
        return list(RULES)
    wanted = set(product_types)
    if not wanted:
        raise ValueError("no product types selected")
    unknown = sorted(wanted - set(PRODUCT_TYPES))
    if unknown:
        raise ValueError(
            f"unknown product type(s) {', '.join(unknown)}; known: {', '.join(PRODUCT_TYPES)}"
        )
    return [r for r in RULES if r.product_type in wanted]


def plan(rules: Iterable[TypeRule], start: date, end: date, seeds: Seeds) -> list[Product]:
    """Every product of ``rules`` that serves the days [start, end), sorted by name."""
    lo, hi = (datetime.combine(d, time(), UTC) for d in (start, end))
    products = [
        Product(rule, platform, version)
        for rule in rules
        for platform in rule.platforms
        for window in rule.schedule(rule.product_type, platform, lo, hi, seeds)
        for version in republications(rule, platform, window, seeds)
    ]
    return sorted(products, key=lambda p: p.name)


def properties(p: Product, seeds: Seeds) -> dict[str, Any]:
    """The item properties of ``p`` (all a search filters on; no bytes needed)."""
    w, rule = p.dates, p.rule
    auxip_id = uuid.UUID(int=seeds.rng("item", p.name).getrandbits(128), version=4)
    props: dict[str, Any] = {
        "datetime": None,
        "start_datetime": _iso(w.start),
        "end_datetime": _iso(w.stop),
        "product:type": rule.product_type,
    }
    if rule.timeliness:
        props["product:timeliness_category"] = rule.timeliness
    props["constellation"] = p.constellation
    if p.stac_platform:
        props["platform"] = p.stac_platform
    return props | {
        "processing:datetime": _iso(w.generation),
        "processing:facility": rule.facility,
        "published": _iso(w.publication),
        "created": _iso(w.publication),
        "expires": _iso(w.publication + EVICTION),
        "auxip:id": str(auxip_id),
        "auxip:eviction_datetime": _iso(w.publication + EVICTION),
    }


def _item(p: Product, data: bytes, seeds: Seeds) -> dict[str, Any]:
    parent = {"href": "../collection.json", "type": "application/json"}
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": EXTENSIONS,
        "id": p.item_id,
        "geometry": None,
        "properties": properties(p, seeds),
        "links": [{"rel": rel, **parent} for rel in ("root", "collection", "parent")],
        "assets": {
            p.name: {
                "href": f"./{p.name}",
                "type": _MEDIA_TYPES.get(p.name.rsplit(".", 1)[1], "application/octet-stream"),
                "roles": ["data"],
                "file:size": len(data),
                "file:checksum": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            }
        },
        "collection": COLLECTION_ID,
    }


def write_product(p: Product, folder: Path, seeds: Seeds, max_size: int | None) -> int:
    """Write ``p``'s file and item document (``<item id>.json``) into the existing ``folder``;
    its size in bytes. The bytes depend only on the product, the seed and ``max_size``."""
    # the item's random stream: its id is drawn first (see properties), then its size
    r = seeds.rng("item", p.name)
    r.getrandbits(128)
    target = r.randint(*p.rule.size)
    data = render(p, target if max_size is None else min(target, max_size), seeds)
    (folder / p.name).write_bytes(data)
    _json(folder / f"{p.item_id}.json", _item(p, data, seeds))
    return len(data)


def _collection(products: list[Product], start: date, end: date, seed: int) -> dict[str, Any]:
    summaries = {
        "product:type": sorted({p.rule.product_type for p in products}),
        "constellation": sorted({p.constellation for p in products}),
        "platform": sorted({p.stac_platform for p in products if p.stac_platform}),
    }
    return {
        "type": "Collection",
        "id": COLLECTION_ID,
        "stac_version": STAC_VERSION,
        "title": "AUXIP sample",
        "description": (
            "Synthetic, deterministic AUXIP-like sample of Copernicus Sentinel-1/2/3 auxiliary "
            f"data files serving the days {start} to {end} (exclusive), seed {seed}. Names, "
            "validities, cadences, lags and sizes follow real products; contents are synthetic."
        ),
        "links": [{"rel": "root", "href": "./collection.json", "type": "application/json"}]
        + [
            {"rel": "item", "href": f"./{i}/{i}.json", "type": "application/geo+json"}
            for i in sorted(p.item_id for p in products)
        ],
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {
                "interval": [
                    [
                        _iso(min(p.dates.start for p in products)),
                        _iso(max(p.dates.stop for p in products)),
                    ]
                ]
            },
        },
        "license": "other",
        "summaries": summaries,
    }


@dataclass(frozen=True)
class _Job:
    out: Path
    start: date
    end: date
    seed: int
    max_size: int | None
    product_types: tuple[str, ...]


def _workers(n_products: int) -> int:
    """Processes to write with: forked workers (about 200 products each), only from a
    single-threaded process, where forking is safe."""
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cpus or 1, 4, max(1, n_products // 200))


def _write_items(job: _Job, part: int, parts: int) -> int:
    """Write every ``parts``-th product from ``part`` (assets and item JSON); total bytes."""
    seeds = Seeds(job.seed)
    n_bytes = 0
    for p in plan(_rules(job.product_types), job.start, job.end, seeds)[part::parts]:
        folder = job.out / p.item_id
        folder.mkdir()
        n_bytes += write_product(p, folder, seeds, job.max_size)
    return n_bytes


def generate_sample(
    out: Path,
    start: date = DEFAULT_START,
    end: date = DEFAULT_END,
    *,
    seed: int = 0,
    max_size: int | None = DEFAULT_MAX_SIZE,
    product_types: Iterable[str] | None = None,
) -> SampleSummary:
    """Write the sample serving the days [start, end) into ``out`` (absent or empty).

    ``max_size`` clips every file to that many bytes (None: realistic sizes). Identical
    arguments give byte-identical trees.
    """
    if end <= start:
        raise ValueError(f"end {end} must be after start {start}")
    if max_size is not None and max_size < MIN_MAX_SIZE:
        raise ValueError(f"max_size {max_size} is below {MIN_MAX_SIZE} bytes; use None for real")
    rules = _rules(product_types)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory")
    types = tuple(dict.fromkeys(r.product_type for r in rules))
    products = plan(rules, start, end, Seeds(seed))
    out.mkdir(parents=True, exist_ok=True)
    job = _Job(out, start, end, seed, max_size, types)
    workers = _workers(len(products))
    if workers == 1:
        n_bytes = _write_items(job, 0, 1)
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = [pool.submit(_write_items, job, i, workers) for i in range(workers)]
            n_bytes = sum(part.result() for part in parts)
    _json(out / "collection.json", _collection(products, start, end, seed))
    summary = {
        "start": str(start),
        "end": str(end),
        "seed": seed,
        "max_size": max_size,
        "n_items": len(products),
        "n_bytes": n_bytes,
        "product_types": list(types),
    }
    _json(out / MARKER, summary)
    return SampleSummary(out, out / "collection.json", len(products), n_bytes, types)
