"""The three asset documents: their typed shapes and the builders every producer uses.

One document per day (partition) and asset, stored as JSON under
``$AUX_ASSETS_HOME/io/<asset>/<day>.json``:

- :class:`SearchDocument` (``aux_search_results``): per product type, the candidates found, the
  filter sent and what the policy selected (or, in raw-filter mode, every match);
- :class:`StagedDocument` (``aux_staged_items``): per selected item, its staging outcome;
- :class:`CatalogDocument` (``aux_catalog_items``): the items as the catalog holds them, and the
  coverage of every mandatory product type.

All three share the envelope ``{"partition", "window", "products"}`` (:func:`day_document`).
A unit is a platform (``sentinel-1a``); ``"None"`` stands for items without a platform and
:data:`ANY_UNIT` for a product type that found nothing at all and lists no platforms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NotRequired, TypedDict

import pystac

from aux_assets.utils.urls import strip_userinfo

JsonDict = dict[str, Any]
ANY_UNIT = "*"
Status = Literal["staged", "present", "failed"]


class WindowJson(TypedDict):
    start: str
    end: str


class FeatureCollection(TypedDict):
    type: Literal["FeatureCollection"]
    features: list[JsonDict]


class Candidate(TypedDict):
    """A candidate of a product type, in short (raw-filter mode: ``id`` only)."""

    id: str
    start: NotRequired[str]
    end: NotRequired[str]
    generation: NotRequired[str]
    platform: NotRequired[str | None]


class EntryFields(TypedDict):
    """What a search entry records of its products-file entry."""

    product_type: str
    source: str
    collection: str
    policy: str | None
    margin_before_s: NotRequired[float]
    margin_after_s: NotRequired[float]
    mandatory: bool
    assets: list[str] | None
    unpack: bool


class Expected(TypedDict):
    """The product type expected first to fill a gap, and when at the latest."""

    product_type: str
    at: str


class GapFields(TypedDict, total=False):
    """Why units are uncovered: per unit, the spans (``gaps``) and, per span, which type is
    expected first and when (``expected``, judged at ``searched_at``); ``error``: the source
    failed."""

    gaps: dict[str, list[list[str]]]
    expected: dict[str, list[Expected]]
    searched_at: str
    error: str | None


class SearchProduct(EntryFields, GapFields):
    """What one product type (``"cql2"`` in raw-filter mode) found and selected in a window."""

    filter: JsonDict
    n_candidates: int
    candidates: list[Candidate]
    invalid_candidates: NotRequired[list[JsonDict]]
    used_types: dict[str, list[str]]
    missing_units: list[str]
    selected: FeatureCollection


class StagedAsset(TypedDict):
    key: str
    href: str
    size: int
    checksum: str
    source_href: str


class StagedItem(TypedDict):
    """The outcome of one selected item; ``reason`` says why it failed; ``superseded`` names
    the storage folders of the previous version this one replaced (removed)."""

    item_id: str
    collection: str
    source: str
    status: Status
    reason: str | None
    bytes_transferred: int
    assets: list[StagedAsset]
    superseded: NotRequired[list[str]]


class StagedProduct(GapFields):
    """The staging outcome of a product type's selection (:class:`GapFields` as the search
    found them)."""

    product_type: str
    policy: str | None
    mandatory: bool
    collection: str
    missing_units: list[str]
    items: list[StagedItem]


class CatalogProduct(TypedDict):
    product_type: str
    policy: str | None
    mandatory: bool
    collection: str
    items: FeatureCollection
    item_urls: dict[str, str]


class SearchDocument(TypedDict):
    partition: str
    window: WindowJson
    products: list[SearchProduct]


class StagedDocument(TypedDict):
    partition: str
    window: WindowJson
    products: list[StagedProduct]


class CatalogDocument(TypedDict):
    """``replaced``: per product type whose selection changed since the day's previous
    document, which items replace which."""

    partition: str
    window: WindowJson
    products: list[CatalogProduct]
    coverage: dict[str, bool]
    replaced: NotRequired[dict[str, str]]


def day_document(key: str, window: WindowJson, products: list[Any]) -> Any:
    """The envelope every document of a day has (the caller types it)."""
    return {"partition": key, "window": window, "products": products}


def feature(item: pystac.Item) -> JsonDict:
    """An item as a GeoJSON Feature dict, its hrefs as given but without userinfo: a password
    written into a source's href is neither sent (see ``transfer``) nor shown in a document."""
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    for entry in [*doc.get("assets", {}).values(), *doc.get("links", [])]:
        entry["href"] = strip_userinfo(entry["href"])
    return doc


def feature_collection(items: Iterable[pystac.Item]) -> FeatureCollection:
    return {"type": "FeatureCollection", "features": [feature(i) for i in items]}


def staged_document(
    search: SearchDocument, outcome: Callable[[str, str], StagedItem]
) -> StagedDocument:
    """The staged document of a searched day: ``outcome(collection, item id)`` for each
    selected item, in the order of the search document."""
    products: list[StagedProduct] = [
        {
            "product_type": p["product_type"],
            "policy": p["policy"],
            "mandatory": p["mandatory"],
            "collection": p["collection"],
            "missing_units": p["missing_units"],
            "items": [outcome(p["collection"], f["id"]) for f in p["selected"]["features"]],
        }
        for p in search["products"]
    ]
    for staged, found in zip(products, search["products"], strict=True):  # why units lack
        if "gaps" in found:
            staged["gaps"] = found["gaps"]
        if "expected" in found:
            staged["expected"] = found["expected"]
        if "searched_at" in found:
            staged["searched_at"] = found["searched_at"]
        if "error" in found:
            staged["error"] = found["error"]
    doc: StagedDocument = day_document(search["partition"], search["window"], products)
    return doc


def catalog_document(
    staged: StagedDocument,
    held: Mapping[str, Mapping[str, pystac.Item]],
    item_url: Callable[[str, str], str],
) -> CatalogDocument:
    """The catalog document of a staged day, from the items the catalog ``held`` (by
    collection and id): a mandatory product type is covered when it has a selection, every
    selected item is held and no unit was left uncovered."""
    products: list[CatalogProduct] = []
    coverage: dict[str, bool] = {}
    for product in staged["products"]:
        collection = product["collection"]
        found = [held[collection].get(i["item_id"]) for i in product["items"]]
        items = [item for item in found if item is not None]
        complete = bool(items) and len(items) == len(found) and not product["missing_units"]
        if product["mandatory"]:
            ptype = product["product_type"]
            coverage[ptype] = coverage.get(ptype, True) and complete
        products.append(
            {
                "product_type": product["product_type"],
                "policy": product["policy"],
                "mandatory": product["mandatory"],
                "collection": collection,
                "items": feature_collection(items),
                "item_urls": {i.id: item_url(collection, i.id) for i in items},
            }
        )
    doc: CatalogDocument = day_document(staged["partition"], staged["window"], products)
    doc["coverage"] = coverage
    return doc


def wanted_items(documents: Iterable[StagedDocument]) -> dict[str, list[str]]:
    """The item ids of staged documents by collection (sorted): what to read back."""
    wanted: dict[str, set[str]] = {}
    for doc in documents:
        for product in doc["products"]:
            ids = wanted.setdefault(product["collection"], set())
            ids.update(item["item_id"] for item in product["items"])
    return {collection: sorted(ids) for collection, ids in sorted(wanted.items())}


def empty_selections(documents: Mapping[str, SearchDocument]) -> list[str]:
    """``<day> <product type>`` for every product type that selected nothing."""
    return [
        f"{key} {p['product_type']}"
        for key, doc in documents.items()
        for p in doc["products"]
        if not p["selected"]["features"]
    ]


@dataclass(frozen=True)
class Gap:
    """What a product type lacks on a day, in words; ``awaited`` when all of it is only not
    yet published (its files are expected later: no failure of ours)."""

    text: str
    awaited: bool


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _state(
    product: SearchProduct | StagedProduct, unit: str, searched: datetime | None
) -> tuple[str, bool]:
    """Why ``unit`` is uncovered, in words, and whether it only waits for a publication."""
    due = [
        (datetime.fromisoformat(e["at"]), e["product_type"])
        for e in (product.get("expected") or {}).get(unit, [])
    ]
    if not due or searched is None:
        return ("no candidate at all" if unit == ANY_UNIT else "not covered"), False
    waiting = min(due)[0] > searched  # else a span whose files should be out never was
    when, ptype = max(due) if waiting else min(due)
    label = "" if ptype == product["product_type"] else f"{ptype} "
    state = "not yet published" if waiting else "never published"
    return f"{state} ({label}expected by {_when(when)})", waiting


def describe_gap(product: SearchProduct | StagedProduct, day: str = "") -> Gap:
    """Why a product type's units are uncovered: its source was unreachable; or per unit,
    nothing is published yet (and when it is expected), it never was though expected by
    then, or it is not covered (no delay known for the type). With ``day``, the spans of the
    day left uncovered."""
    if product.get("error"):
        return Gap(f"source unreachable: {product.get('error')}", False)
    spans = product.get("gaps") or {}
    searched_text = product.get("searched_at")
    searched = datetime.fromisoformat(searched_text) if searched_text else None
    states: dict[str, list[str]] = {}
    awaited = bool(product["missing_units"])
    for unit in product["missing_units"]:
        shown = "" if unit in ("None", ANY_UNIT) else unit
        if day and spans.get(unit):
            bounds = ", ".join(f"{_clock(a, day)}..{_clock(b, day)}" for a, b in spans[unit])
            shown = f"{shown} (uncovered {bounds})".strip()
        state, waiting = _state(product, unit, searched)
        awaited = awaited and waiting
        states.setdefault(state, []).append(shown)
    parts = []
    for state, units in states.items():
        named = [u for u in units if u]
        parts.append(f"{state} for {', '.join(named)}" if named else state)
    return Gap("; ".join(parts) or "not covered", awaited)


def _clock(text: str, day: str) -> str:
    """A span bound within ``day`` as ``HH:MM:SS`` (its end as ``24:00:00``), else as given."""
    if text.startswith(day) and day:
        return text[11:19]
    if day and text[11:19] == "00:00:00" and text[:10] == _next_day(day):
        return "24:00:00"
    return text


def _next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def mandatory_gaps(doc: SearchDocument) -> dict[str, Gap]:
    """Per mandatory product type of a day with a unit left uncovered: which units, which
    spans of the day no selection covers, and why (:func:`describe_gap`)."""
    gaps: dict[str, list[Gap]] = {}
    for p in doc["products"]:
        if p["mandatory"] and p["missing_units"]:
            gaps.setdefault(p["product_type"], []).append(describe_gap(p, doc["partition"]))
    return {ptype: _joined(found) for ptype, found in gaps.items()}


def unreachable_optional(doc: SearchDocument) -> dict[str, str]:
    """``{"<type> (optional)": "source unreachable: <error>"}`` for each optional product type of
    a day whose source failed (nothing of it is staged)."""
    return {
        f"{p['product_type']} (optional)": describe_gap(p).text
        for p in doc["products"]
        if not p["mandatory"] and p.get("error")
    }


def _joined(gaps: list[Gap]) -> Gap:
    """Several entries' gaps of one product type as one."""
    return Gap("; ".join(g.text for g in gaps), all(g.awaited for g in gaps))


def failed_items(doc: StagedDocument) -> dict[str, str | None]:
    """``{<product type> <collection>/<item id>: reason}`` of every failed item of a day."""
    return {
        f"{p['product_type']} {o['collection']}/{o['item_id']}": o["reason"]
        for p in doc["products"]
        for o in p["items"]
        if o["status"] == "failed"
    }


def coverage_gaps(staged: StagedDocument, catalog: CatalogDocument) -> dict[str, Gap]:
    """Per mandatory product type the catalog does not cover on a day: what is missing (units
    without a selection, and why; selected items the catalog does not hold, and why)."""
    reasons: dict[str, list[Gap]] = {}
    for product, held in zip(staged["products"], catalog["products"], strict=True):
        ptype = product["product_type"]
        if catalog["coverage"].get(ptype, True):
            continue
        found = {f["id"] for f in held["items"]["features"]}
        why = reasons.setdefault(ptype, [])
        if product["missing_units"]:
            why.append(describe_gap(product, staged["partition"]))
        for item in product["items"]:
            if item["item_id"] not in found:
                status = item["status"] + (f": {item['reason']}" if item["reason"] else "")
                why.append(Gap(f"{item['item_id']} not in the catalog ({status})", False))
    return {
        ptype: _joined(why) if why else Gap("nothing selected", False)
        for ptype, why in reasons.items()
    }


def replacements(previous: CatalogDocument | None, current: CatalogDocument) -> dict[str, str]:
    """Per product type (and collection, when the type is kept in several) of a day whose
    selection changed since the ``previous`` document of the day: which new items serve it
    instead of which (a precise orbit replacing restituted ones). Items that merely went
    missing replace nothing: the coverage check reports them."""
    if previous is None:
        return {}

    def selections(doc: CatalogDocument) -> dict[tuple[str, str], set[str]]:
        ids: dict[tuple[str, str], set[str]] = {}
        for product in doc["products"]:
            key = (product["product_type"], product["collection"])
            ids.setdefault(key, set()).update(f["id"] for f in product["items"]["features"])
        return ids

    before, now = selections(previous), selections(current)
    collections: dict[str, int] = {}
    for ptype, _ in now:
        collections[ptype] = collections.get(ptype, 0) + 1
    changes: dict[str, str] = {}
    for (ptype, collection), ids in now.items():
        gone, new = (
            before.get((ptype, collection), set()) - ids,
            ids - before.get((ptype, collection), set()),
        )
        if gone and new:
            name = ptype if collections[ptype] == 1 else f"{ptype} ({collection})"
            changes[name] = f"{', '.join(sorted(new))} replaces {', '.join(sorted(gone))}"
    return changes


def search_numbers(doc: SearchDocument) -> dict[str, int]:
    """What a searched day plots: candidates, selections, product types, mandatory gaps."""
    products = doc["products"]
    return {
        "n_candidates": sum(len(p["candidates"]) for p in products),
        "n_selected": sum(len(p["selected"]["features"]) for p in products),
        "n_product_types": len({p["product_type"] for p in products}),
        "n_missing_mandatory": sum(bool(p["mandatory"] and p["missing_units"]) for p in products),
    }


def staged_numbers(
    documents: Mapping[str, StagedDocument], bytes_moved: Mapping[tuple[str, str], int]
) -> dict[str, dict[str, int]]:
    """Per day: item outcomes, and the bytes moved (``bytes_moved`` by collection and id) for
    the items it is the first day of."""
    counted: set[tuple[str, str]] = set()
    per_day: dict[str, dict[str, int]] = {}
    for key, doc in sorted(documents.items()):
        items = [o for p in doc["products"] for o in p["items"]]
        moved = 0
        for item in items:
            ident = (item["collection"], item["item_id"])
            if ident in bytes_moved and ident not in counted:
                counted.add(ident)
                moved += bytes_moved[ident]
        per_day[key] = {
            **{f"n_{s}": sum(i["status"] == s for i in items) for s in ("staged", "present")},
            "n_failed": sum(i["status"] == "failed" for i in items),
            "bytes_staged": moved,
        }
    return per_day


def catalog_features(doc: CatalogDocument) -> tuple[int, FeatureCollection]:
    """How many distinct items a catalog document holds, and them as one collection."""
    features = {
        (f["collection"], f["id"]): f for p in doc["products"] for f in p["items"]["features"]
    }
    collection: FeatureCollection = {
        "type": "FeatureCollection",
        "features": list(features.values()),
    }
    return len(features), collection
