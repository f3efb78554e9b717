"""Search and select, per window: what each product type of the products file gets.

For a run over several windows (a backfill range), each product type is searched once over
the union of the windows with an inclusive prefilter (``intersect`` for cover and intersect
policies: a superset of the candidates of every window and sub-window; for closest policies
the windows widened by :data:`LOOKAROUND` first, and the product type alone only when that
cannot prove the closest file; the product type alone for latest policies), and the policy is
then applied to each window on the client.
Selection is made per platform (unit), so a unit-dependent type yields one file per unit.

A day is longer than many validities (ECMWFD: 12 h, RESORB: 3 h 17 m), and a newer file may
start inside it (a calibration valid from 12:00). For cover policies, :func:`select_covering`
therefore also applies the policy to every elementary sub-window of the day (the window split
at the candidates' validity edges) and unites the selections: the files processors would use
for a processing window inside any of those sub-windows. Sub-windows nothing covers are
reported as gaps. Gaps (or a unit with nothing selected) are filled from the entry's
``alternatives``, in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pystac

from aux_assets import settings, tracing
from aux_assets.documents import (
    ANY_UNIT,
    Candidate,
    EntryFields,
    Expected,
    SearchDocument,
    SearchProduct,
    WindowJson,
    day_document,
    feature_collection,
)
from aux_assets.filters import JsonDict, WindowKind, window_filter
from aux_assets.products import ProductSpec
from aux_assets.publication import expected_by
from aux_assets.selection import (
    CLOSEST_EDGE,
    Margins,
    Validity,
    generation_time,
    item_unit,
    policy_window_kind,
    selection_of,
    served_units,
    validity,
)
from aux_assets.sources.base import SearchError, SearchRequest, Source
from aux_assets.utils.times import parse_utc


@dataclass(frozen=True)
class Window:
    """A processing window, named by its partition key."""

    key: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(
                f"window {self.key}: end {self.end.isoformat()} is before start "
                f"{self.start.isoformat()}"
            )

    def to_json(self) -> WindowJson:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    def widened(self, margins: Margins) -> Validity:
        """This window's processing window W (with the margins)."""
        return margins.widen(self.start, self.end)


def _parse_time(text: str, field: str) -> datetime:
    try:
        return parse_utc(text)
    except ValueError:
        raise ValueError(
            f"{field}={text!r} is not an ISO 8601 datetime; use e.g. 2026-01-05T10:00:00Z"
        ) from None


def windows_of(
    keys: Sequence[str], window_start: str | None = None, window_end: str | None = None
) -> list[Window]:
    """The windows of daily partition keys (``YYYY-MM-DD``: the UTC day), or of one key given
    the ISO datetimes ``window_start`` and ``window_end`` (naive ones are UTC)."""
    if window_start is None and window_end is None:
        days = [datetime.fromisoformat(key).replace(tzinfo=UTC) for key in keys]
        return [
            Window(key, day, day + timedelta(days=1)) for key, day in zip(keys, days, strict=True)
        ]
    if not (window_start and window_end) or len(keys) != 1:
        raise ValueError("window_start and window_end go together, on a single-partition run")
    start = _parse_time(window_start, "window_start")
    end = _parse_time(window_end, "window_end")
    if end < start:
        raise ValueError(
            f"window_end {end.isoformat()} is before window_start {start.isoformat()}; "
            "swap them or fix the dates"
        )
    return [Window(keys[0], start, end)]


def _summary(item: pystac.Item, v: Validity) -> Candidate:
    return {
        "id": item.id,
        "start": v.start.isoformat(),
        "end": v.end.isoformat(),
        "generation": generation_time(item).isoformat(),
        "platform": item.properties.get("platform"),
    }


# Closest policies compare one validity edge with the window centre; they are searched within
# LOOKAROUND of the window first, and without bound only when that cannot prove the nearest.
LOOKAROUND = timedelta(days=7)


class _Searcher:
    """Searches a product type over the union of the windows, once per type (memoised, also
    when several threads ask for the same type at once)."""

    def __init__(
        self, sources: Mapping[str, Source], windows: Sequence[Window], timeout_s: float | None
    ) -> None:
        self.sources = sources
        self.windows = windows
        self.timeout_s = timeout_s
        self._cache: dict[tuple[Any, ...], _Found] = {}
        self._locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._lock = threading.Lock()

    def candidates(self, spec: ProductSpec, bounded: bool = True) -> _Found:
        """The valid items found for ``spec``, the filter sent, and the items refused.

        Closest policies are first searched within :data:`LOOKAROUND` of the windows
        (``bounded``); see :func:`_closest_proven`.
        """
        key = (
            bounded,
            spec.source,
            spec.source_collections,
            spec.product_type,
            spec.policy,
            spec.platforms,
            spec.margin_before_s,
            spec.margin_after_s,
        )
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._cache:
                self._cache[key] = self._search(spec, bounded)
        return self._cache[key]

    def _search(self, spec: ProductSpec, bounded: bool) -> _Found:
        # Cover candidates of any sub-window intersect the window: ask for those, decide the
        # exact (inclusive) cover on the client.
        kind: WindowKind = policy_window_kind(spec.policy)
        around = timedelta(0)
        if kind == "cover":
            kind = "intersect"
        elif bounded and spec.policy in CLOSEST_EDGE:
            kind, around = "intersect", LOOKAROUND
        first, last = min(w.start for w in self.windows), max(w.end for w in self.windows)
        span = spec.margins.widen(first, last)
        source = self.sources[spec.source]
        start, end = span.start - around, span.end + around
        cql = window_filter(spec.product_type, start, end, kind, spec.platforms, source.dialect)
        request = SearchRequest(
            filter=cql, collections=spec.source_collections, timeout_s=self.timeout_s
        )
        found = _Found(cql)
        attributes: tracing.Attributes = {
            "aux.source": spec.source,
            "aux.product_type": spec.product_type,
            "aux.collection": spec.collection,
            "aux.source_collections": list(spec.source_collections or ()),
            "aux.policy": spec.policy,
            "aux.bounded": bounded,
        }
        with tracing.span("aux.search", attributes) as opened:
            items = source.search(request)
            tracing.annotate(opened, {"aux.items_found": len(items)})
        for item in items:
            if spec.platforms and not served_units(item, spec.platforms):
                continue  # a dialect without 'in' cannot ask for the platforms
            try:
                found.validity[id(item)] = validity(item)
            except ValueError as exc:  # one broken record must not hide the others
                found.invalid.append({"id": item.id, "reason": str(exc)})
                continue
            found.items.append(item)
        return found


@dataclass
class _Found:
    """What a search returned: usable items, the filter sent, and the items refused."""

    filter: JsonDict
    items: list[pystac.Item] = field(default_factory=list)
    invalid: list[JsonDict] = field(default_factory=list)
    validity: dict[int, Validity] = field(default_factory=dict)  # by id() of each item
    _summaries: dict[int, Candidate] = field(default_factory=dict)
    _units: dict[tuple[str, ...], dict[str | None, list[pystac.Item]]] = field(default_factory=dict)

    def summary(self, item: pystac.Item) -> Candidate:
        """The candidate's summary in a search document (made once, copied per window)."""
        made = self._summaries.get(id(item))
        if made is None:
            made = self._summaries[id(item)] = _summary(item, self.validity[id(item)])
        return {**made}

    def units(self, spec: ProductSpec) -> dict[str | None, list[pystac.Item]]:
        """:func:`_by_unit` of the items (made once per list of platforms; do not change it)."""
        key = tuple(spec.platforms or ())
        made = self._units.get(key)
        if made is None:
            made = self._units[key] = _by_unit(spec, self.items)
        return made

    def touching(self, spec: ProductSpec, window: Window) -> list[pystac.Item]:
        """The items whose validity meets ``window`` widened by the margins (all of them for
        a policy that takes any validity)."""
        if policy_window_kind(spec.policy) == "any":
            return list(self.items)
        w = window.widened(spec.margins)
        return [
            i for i in self.items if (v := self.validity[id(i)]).start <= w.end and v.end >= w.start
        ]


Gap = tuple[datetime, datetime]


def select_covering(
    items: Sequence[pystac.Item],
    policy: str,
    start: datetime,
    end: datetime,
    margin_before_s: float = 0,
    margin_after_s: float = 0,
    known: Mapping[int, Validity] | None = None,
) -> tuple[list[pystac.Item], list[Gap]]:
    """The policy's selection for ``[start, end]``, and the parts of it left uncovered.

    For cover policies the policy is also applied to each elementary sub-window (the window
    split where a candidate starts or stops covering) and the selections are united: a newer
    file valid from the afternoon on, or files shorter than the window, are what processors
    use for windows inside it. Sub-windows with no selection are returned as gaps (merged).
    ``known``: the items' validities already read, by ``id()`` (see :func:`selection_of`).
    """
    pick = selection_of(items, policy, margin_before_s, margin_after_s, known)
    known = known or {}

    def validity_of(item: pystac.Item) -> Validity:
        return known.get(id(item)) or validity(item)

    chosen = pick(start, end)
    if policy_window_kind(policy) != "cover":
        return chosen, ([] if chosen else [(start, end)])
    margins = Margins(margin_before_s, margin_after_s)
    edges = {start, end}
    for item in items:
        covered = margins.covering(validity_of(item))
        for edge in (covered.start, covered.end):
            if start < edge < end:
                edges.add(edge)
    points = sorted(edges)
    picked = {(item.collection_id, item.id): item for item in chosen}
    gaps: list[Gap] = []
    for low, high in pairwise(points):
        sub = pick(low, high)
        for item in sub:
            picked[(item.collection_id, item.id)] = item
        if not sub:
            if gaps and gaps[-1][1] == low:
                gaps[-1] = (gaps[-1][0], high)
            else:
                gaps.append((low, high))
    ordered = sorted(picked.values(), key=lambda i: (validity_of(i).start, i.id))
    return ordered, gaps


def _by_unit(
    spec: ProductSpec, items: Sequence[pystac.Item]
) -> dict[str | None, list[pystac.Item]]:
    """The items of each unit: per listed platform (a file that names no unit is in each
    listed unit of its mission), else per unit found (``None``: no unit)."""
    units: dict[str | None, list[pystac.Item]] = {platform: [] for platform in spec.platforms or ()}
    for item in items:
        if spec.platforms:
            for unit in served_units(item, spec.platforms):
                units[unit].append(item)
        else:
            units.setdefault(item_unit(item), []).append(item)
    return units


def _closest_proven(spec: ProductSpec, window: Window, found: _Found) -> bool:
    """True when no file outside the look-around can be closer than one found inside it:
    every unit has a file whose compared edge lies within :data:`LOOKAROUND` of the centre
    (files not found have both edges farther than that)."""
    w = window.widened(spec.margins)
    centre = w.start + (w.end - w.start) / 2
    edge = CLOSEST_EDGE[spec.policy]
    units = found.units(spec)
    return bool(units) and all(
        any(abs(getattr(found.validity[id(i)], edge) - centre) <= LOOKAROUND for i in group)
        for group in units.values()
    )


def _plan_product(
    spec: ProductSpec, searcher: _Searcher, window: Window, now: datetime
) -> SearchProduct:
    found = searcher.candidates(spec)
    if spec.policy in CLOSEST_EDGE and not _closest_proven(spec, window, found):
        found = searcher.candidates(spec, bounded=False)
    candidates = found.items
    units = found.units(spec) or {ANY_UNIT: []}  # from all: a unit may lack this day
    touching = found.touching(spec, window)  # the only ones a cover or intersect can take
    near = {id(i) for i in touching} if len(touching) < len(candidates) else None
    selected: list[pystac.Item] = []
    picked: set[tuple[str | None, str]] = set()
    used: dict[str, list[str]] = {}
    missing: dict[str, list[list[str]]] = {}
    expected: dict[str, list[Expected]] = {}  # per unit and gap: the type expected first, when
    for unit, group in units.items():
        chosen, gaps = select_covering(
            group if near is None else [i for i in group if id(i) in near],
            spec.policy,
            window.start,
            window.end,
            spec.margin_before_s,
            spec.margin_after_s,
            found.validity,
        )
        types = [spec.product_type] if chosen else []
        for alt_type in spec.alternatives:
            if not gaps:
                break
            alt = spec.alternative(alt_type)
            alt_found = searcher.candidates(alt)
            alt_units = alt_found.units(alt)
            alt_items = [i for u, g in alt_units.items() if unit in (ANY_UNIT, u) for i in g]
            remaining: list[Gap] = []
            for low, high in gaps:
                more, left = select_covering(
                    alt_items,
                    alt.policy,
                    low,
                    high,
                    alt.margin_before_s,
                    alt.margin_after_s,
                    alt_found.validity,
                )
                chosen += more
                remaining += left
                if more and alt_type not in types:
                    types.append(alt_type)
            gaps = remaining
        selected += [i for i in chosen if (i.collection_id, i.id) not in picked]
        picked.update((i.collection_id, i.id) for i in chosen)  # a file of several units
        used[str(unit)] = types
        if gaps:
            missing[str(unit)] = [[low.isoformat(), high.isoformat()] for low, high in gaps]
            kinds = (spec.product_type, *spec.alternatives)
            due = [expected_by(kinds, high) for _, high in gaps]
            if all(due):
                expected[str(unit)] = [
                    {"product_type": ptype, "at": when.isoformat()}
                    for ptype, when in filter(None, due)
                ]
    return {
        **_spec_fields(spec),
        "filter": found.filter,
        "n_candidates": len(candidates),
        "candidates": [found.summary(i) for i in touching],
        "invalid_candidates": found.invalid,
        "used_types": used,
        "missing_units": sorted(missing),
        "gaps": missing,
        "expected": expected,
        "error": None,
        "searched_at": now.isoformat(),
        "selected": feature_collection(selected),
    }


def _spec_fields(spec: ProductSpec) -> EntryFields:
    """What a search entry records of its products-file entry."""
    return {
        "product_type": spec.product_type,
        "source": spec.source,
        "collection": spec.collection,
        "policy": spec.policy,
        "margin_before_s": spec.margin_before_s,
        "margin_after_s": spec.margin_after_s,
        "mandatory": spec.mandatory,
        "assets": list(spec.assets) if spec.assets is not None else None,
        "unpack": spec.unpack,
    }


def _unreachable(spec: ProductSpec, window: Window, error: str, now: datetime) -> SearchProduct:
    """The entry of a product type whose source failed: nothing found, the error kept."""
    return {
        **_spec_fields(spec),
        "filter": {},
        "n_candidates": 0,
        "candidates": [],
        "invalid_candidates": [],
        "used_types": {},
        "missing_units": [ANY_UNIT],
        "gaps": {ANY_UNIT: [[window.start.isoformat(), window.end.isoformat()]]},
        "expected": {},
        "error": error,
        "searched_at": now.isoformat(),
        "selected": feature_collection([]),
    }


def plan_windows(
    specs: Sequence[ProductSpec],
    windows: Sequence[Window],
    sources: Mapping[str, Source],
    *,
    timeout_s: float | None = None,
    max_workers: int = 8,
    log: Callable[[str], None] = lambda _: None,
    now: datetime | None = None,
) -> dict[str, SearchDocument]:
    """For each window, each product type: candidates, the policy's selection, what is missing
    (and, at ``now``, default the project's clock, when its files are expected). A product type
    whose search fails is recorded with the error, the others go on.

    Searches run in parallel (I/O bound), one per product type and source; in this thread
    when every source is local (read under the GIL, threads would only contend).
    """
    searcher = _Searcher(sources, windows, timeout_s)
    at = now or settings.now()

    def run(spec: ProductSpec) -> list[SearchProduct]:
        try:
            return [_plan_product(spec, searcher, window, at) for window in windows]
        except SearchError as exc:  # the other types go on; the checks name the cause
            return [_unreachable(spec, window, str(exc), at) for window in windows]

    if all(sources[spec.source].local for spec in specs if spec.source in sources):
        per_spec = [run(spec) for spec in specs]
    else:
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            per_spec = list(pool.map(tracing.in_current_context(run), specs))
    documents: dict[str, SearchDocument] = {}
    for i, window in enumerate(windows):
        products = [entries[i] for entries in per_spec]
        documents[window.key] = day_document(window.key, window.to_json(), products)
        lines = [
            f"{window.key} {product['product_type']}: "
            + (
                f"source {product['source']} unreachable: {product['error']}"
                if product.get("error")
                else f"{product['n_candidates']} candidates, "
                f"{len(product['selected']['features'])} selected by {product['policy']}"
            )
            for product in products
        ]
        if lines:  # one message per window: each message is an event the orchestrator stores
            log("\n".join(lines))
    return documents


def plan_raw(
    cql: JsonDict,
    source: Source,
    *,
    source_name: str,
    collection: str,
    windows: Sequence[Window],
    search_collections: Sequence[str] | None = None,
    assets: Sequence[str] | None = None,
    limit: int | None = None,
    unpack: bool = False,
    timeout_s: float | None = None,
) -> dict[str, SearchDocument]:
    """The seed's generic mode: every item matching a raw CQL2 filter is to be staged.

    The filter is sent as given (the windows only name the partitions it is recorded under).
    """
    request = SearchRequest(
        filter=cql,
        collections=tuple(search_collections) if search_collections else None,
        limit=limit,
        timeout_s=timeout_s,
    )
    attributes: tracing.Attributes = {
        "aux.source": source_name,
        "aux.product_type": "cql2",
        "aux.collection": collection,
        "aux.source_collections": list(search_collections or ()),
    }
    with tracing.span("aux.search", attributes) as opened:
        items = source.search(request)
        tracing.annotate(opened, {"aux.items_found": len(items)})
    entry: SearchProduct = {
        "product_type": "cql2",
        "source": source_name,
        "collection": collection,
        "policy": None,
        "mandatory": False,
        "assets": list(assets) if assets is not None else None,
        "unpack": unpack,
        "filter": cql,
        "n_candidates": len(items),
        "candidates": [{"id": i.id} for i in items],
        "used_types": {},
        "missing_units": [] if items else [ANY_UNIT],
        "selected": feature_collection(items),
    }
    return {w.key: day_document(w.key, w.to_json(), [entry]) for w in windows}
