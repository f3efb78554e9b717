"""Newly published aux products: what to search, which days they serve, which runs to request.

Used by :mod:`aux_assets.defs.sensors` on every tick; no Dagster here.

Days an item can serve (a day ``d`` is the window ``[d, d + 1 day]``, widened by the entry's
margins). Bounds are inclusive: a file ending exactly at midnight also names the next day, at
worst one run too many, never one missing.

* cover and intersect policies: the days whose window meets the item's validity. For cover
  policies this is a superset on purpose: the day's sub-windows are also selected
  (:func:`aux_assets.planning.select_covering`), and any of them inside the validity may now pick
  the item.
* closest policies (``ClosestStartValidity``, ``ClosestStopValidity``,
  ``LatestValidityClosest``): the days whose window meets [edge - 1 day, edge + 1 day], the edge
  being the validity bound the policy compares (the stop for ``ClosestStopValidity``, else the
  start). A new file mainly changes the choice of the days near that edge (a monitoring file
  valid from 2000 to yesterday serves the last days, not every day since 2000); for a sparse
  product it can also become the closest file of days further away, which are not requested
  (a backfill re-selects them).
* latest policies (``LatestValidity``, ``LatestStopValidity``, ``LatestGeneration``): the choice
  ignores the window, so a new file can change every day. Requested: the days from [validity
  start - 1 day] on, and not before ``latest_from`` (the sensor passes the start of its
  look-back): older days keep the file chosen when they ran, re-selecting them is a deliberate
  backfill.

An item counts for an entry when its ``product:type`` is the entry's type or one of its
``alternatives``, its platform is one of the entry's ``platforms`` (when listed) and its collection
one of the entry's ``source_collections`` (when listed), as the planning search would find it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import pystac
from pystac.utils import str_to_datetime

from aux_assets.filters import Dialect, JsonDict, product_type_value, timestamp
from aux_assets.products import ProductSpec
from aux_assets.selection import CLOSEST_EDGE, Validity, policy_family, served_units, validity
from aux_assets.sources.base import SearchRequest
from aux_assets.utils.times import utc_text

RUN_KEY_PREFIX = "aux_new_products"
PUBLISHED_ASCENDING: tuple[JsonDict, ...] = ({"field": "properties.published", "direction": "asc"},)
CREATED_ASCENDING: tuple[JsonDict, ...] = ({"field": "created", "direction": "asc"},)
_DAY = timedelta(days=1)
_MIN = datetime.min.replace(tzinfo=UTC)
_DIGEST_CHARS = 16


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = str_to_datetime(value)
    except (ValueError, OverflowError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def published_time(item: pystac.Item) -> datetime | None:
    """``published``, else ``created``, in UTC; ``None`` when neither is a timestamp."""
    return published_at(item.properties)


def published_at(properties: Mapping[str, object]) -> datetime | None:
    """:func:`published_time` of an item's ``properties`` (a document's feature)."""
    return _parse_time(properties.get("published")) or _parse_time(properties.get("created"))


def new_items_request(
    specs: Sequence[ProductSpec], since: datetime, limit: int, dialect: Dialect = "stac"
) -> SearchRequest:
    """One search for the items of ``specs``' types (and alternatives) published after ``since``.

    ``specs`` all have the same source. Sorted by ``published`` ascending, ``limit`` in total;
    ``collections`` is the union of the specs' ``source_collections`` when each has them.
    rs-server takes neither ``in`` nor ``>`` nor a sort on ``published``: the types go as one
    comma-separated ``=`` (EOPF types by their legacy types:
    :func:`~aux_assets.filters.product_type_value`), the publication as the STAC ``datetime``
    (its ``PublicationDate``, from ``since`` on, inclusive: :func:`settled_batch` drops what is
    not newer) and the order by ``created`` (AUXIP: its ``PublicationDate`` too; PRIP: the
    station's ``processingDate`` attribute).
    """
    sources = {spec.source for spec in specs}
    if len(sources) != 1:
        raise ValueError(f"give the entries of exactly one source, got {sorted(sources)}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    types = sorted({t for spec in specs for t in (spec.product_type, *spec.alternatives)})
    collections: tuple[str, ...] | None = None
    if all(spec.source_collections for spec in specs):
        collections = tuple(sorted({c for spec in specs for c in spec.source_collections or ()}))
    if dialect == "rs-server":
        return SearchRequest(
            filter={
                "op": "=",
                "args": [{"property": "product:type"}, product_type_value(types, dialect)],
            },
            collections=collections,
            limit=limit,
            sortby=CREATED_ASCENDING,
            datetime=f"{utc_text(since)}/..",
        )
    cql: JsonDict = {
        "op": "and",
        "args": [
            {"op": "in", "args": [{"property": "product:type"}, types]},
            {"op": ">", "args": [{"property": "published"}, timestamp(since)]},
        ],
    }
    return SearchRequest(
        filter=cql, collections=collections, limit=limit, sortby=PUBLISHED_ASCENDING
    )


@dataclass(frozen=True)
class Batch:
    """The items a tick acts on; ``truncated`` when more were published than the cap."""

    items: list[pystac.Item]
    truncated: bool


def settled_batch(items: Sequence[pystac.Item], cap: int, since: datetime | None = None) -> Batch:
    """The items to act on, oldest first, from a search asked for ``cap + 1`` items; with
    ``since``, only those published after it (a search may include its bound).

    Beyond ``cap`` the search was cut; the items published at the instant of the cut may be
    incomplete, so they are left to the next tick (whose search starts after the last instant
    kept), unless every item shares that instant.
    """
    keyed = sorted((published_time(item) or _MIN, n) for n, item in enumerate(items))
    if since is not None:
        keyed = [(t, n) for t, n in keyed if t > since]
    ordered = [items[n] for _, n in keyed]
    if len(ordered) <= cap:
        return Batch(ordered, truncated=False)
    cut = keyed[cap][0]
    kept = [items[n] for t, n in keyed[:cap] if t < cut]
    return Batch(kept or ordered[:cap], truncated=True)


def _floor(t: datetime) -> int:
    return t.toordinal()


def _ceil(t: datetime) -> int:
    return t.toordinal() + (1 if t.time() != time() else 0)


def _span(
    item: pystac.Item, spec: ProductSpec, first: int, last: int, latest_from: int
) -> tuple[int, int] | None:
    """The day ordinals (inclusive, within [first, last]) ``item`` can serve for ``spec``."""
    family = policy_family(spec.policy)
    slack = _DAY if family in ("closest", "latest") else timedelta(0)
    span = validity(item)
    if family == "closest":  # only the compared edge counts (a monitoring file starts in 2000)
        edge = span.start if CLOSEST_EDGE[spec.policy] == "start" else span.end
        span = Validity(edge, edge)
    reach = spec.margins.meeting(span)
    try:
        low = _ceil(reach.start - slack - _DAY)
    except OverflowError:
        low = first
    if family == "latest":
        low, high = max(low, latest_from), last
    else:
        try:
            high = _floor(reach.end + slack)
        except OverflowError:
            high = last
    low, high = max(low, first), min(high, last)
    return (low, high) if low <= high else None


def _serves(spec: ProductSpec, item: pystac.Item) -> bool:
    props = item.properties
    if props.get("product:type") not in (spec.product_type, *spec.alternatives):
        return False
    if spec.platforms and not served_units(item, spec.platforms):
        return False
    return not spec.source_collections or item.collection_id in spec.source_collections


def _spans(
    item: pystac.Item, specs: Iterable[ProductSpec], first: int, last: int, latest_from: int
) -> list[tuple[int, int]]:
    spans = (_span(item, spec, first, last, latest_from) for spec in specs if _serves(spec, item))
    return [s for s in spans if s is not None]


def _bounds(first_day: date, last_day: date, latest_from: date | None) -> tuple[int, int, int]:
    first = first_day.toordinal()
    start = max(first, latest_from.toordinal()) if latest_from else first
    return first, last_day.toordinal(), start


def affected_days(
    item: pystac.Item,
    specs_for_type: Sequence[ProductSpec],
    first_day: date,
    last_day: date,
    *,
    latest_from: date | None = None,
) -> set[date]:
    """The days in [first_day, last_day] whose selection ``item`` can change (module docstring).

    ``latest_from`` bounds the days requested for latest policies (default: ``first_day``).
    Raises ValueError when the item's validity dates are unusable.
    """
    first, last, start = _bounds(first_day, last_day, latest_from)
    return {
        date.fromordinal(d)
        for low, high in _spans(item, specs_for_type, first, last, start)
        for d in range(low, high + 1)
    }


@dataclass(frozen=True)
class DayRun:
    """A partition to re-materialize, its idempotency key, and the new items behind it."""

    partition_key: str
    run_key: str
    item_ids: tuple[str, ...]


@dataclass(frozen=True)
class SkippedItem:
    """An item left out, and why."""

    source: str
    item_id: str
    reason: str


@dataclass(frozen=True)
class RunsToRequest:
    """The runs to request; the items skipped; how many items serve no existing day."""

    runs: list[DayRun]
    skipped: list[SkippedItem] = field(default_factory=list)
    n_unmapped: int = 0


def runs_to_request(
    items_by_source: Mapping[str, Sequence[pystac.Item]],
    specs: Sequence[ProductSpec],
    first_day: date,
    last_day: date,
    *,
    latest_from: date | None = None,
) -> RunsToRequest:
    """One run per day some item can serve, sorted by day.

    The run key is ``aux_new_products:<day>:<digest>``, the digest a short sha256 of the sorted
    (item id, source, published) of the items serving that day: a re-published file (new
    ``published``) requests the day again, the same set of items never twice.
    """
    first, last, start = _bounds(first_day, last_day, latest_from)
    by_type: dict[tuple[str, str], list[ProductSpec]] = {}
    for spec in specs:
        for product_type in (spec.product_type, *spec.alternatives):
            by_type.setdefault((spec.source, product_type), []).append(spec)
    keys: dict[tuple[str, str, str], set[int]] = {}
    skipped: list[SkippedItem] = []
    n_unmapped = 0
    for source, items in items_by_source.items():
        for item in items:
            candidates = by_type.get((source, str(item.properties.get("product:type"))), [])
            try:
                spans = _spans(item, candidates, first, last, start)
            except ValueError as exc:
                skipped.append(SkippedItem(source, item.id, str(exc)))
                continue
            if not spans:
                n_unmapped += 1
                continue
            published = item.properties.get("published") or item.properties.get("created")
            days = keys.setdefault((item.id, source, str(published or "")), set())
            for low, high in spans:
                days.update(range(low, high + 1))
    ordered = sorted(keys)
    encoded = [json.dumps(key).encode() + b"\n" for key in ordered]
    per_day: dict[int, list[int]] = {}
    for rank, key in enumerate(ordered):
        for day in keys[key]:
            per_day.setdefault(day, []).append(rank)
    runs = []
    for day, ranks in sorted(per_day.items()):
        digest = hashlib.sha256(b"".join(encoded[r] for r in ranks)).hexdigest()[:_DIGEST_CHARS]
        partition_key = date.fromordinal(day).isoformat()
        ids = tuple(dict.fromkeys(ordered[r][0] for r in ranks))
        runs.append(DayRun(partition_key, f"{RUN_KEY_PREFIX}:{partition_key}:{digest}", ids))
    return RunsToRequest(runs, skipped, n_unmapped)


@dataclass(frozen=True)
class Cursor:
    """The last ``published`` seen per source; sources not seen start at ``default_since``."""

    default_since: datetime
    published: Mapping[str, datetime] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None, default_since: datetime) -> Cursor:
        """Read :meth:`to_text`'s JSON; ``None`` or empty is a fresh cursor."""
        if not text:
            return cls(default_since)
        try:
            published: dict[str, datetime] = {}
            for source, value in json.loads(text)["published"].items():
                parsed = _parse_time(value)
                if parsed is None:
                    raise ValueError(value)
                published[str(source)] = parsed
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(
                f"sensor cursor {text[:200]!r} is not this sensor's JSON "
                '({"published": {"<source>": "<RFC 3339>"}}); fix or delete it'
            ) from None
        return cls(default_since, published)

    def to_text(self) -> str:
        return json.dumps(
            {"published": {k: utc_text(v) for k, v in sorted(self.published.items())}}
        )

    def since(self, source: str) -> datetime:
        return self.published.get(source, self.default_since)

    def advance(self, source: str, items: Iterable[pystac.Item]) -> Cursor:
        """This cursor with ``source`` moved to the latest ``published`` (else ``created``) of
        ``items``; never backwards."""
        newest = max(filter(None, map(published_time, items)), default=None)
        if newest is None or newest <= self.since(source):
            return self
        return Cursor(self.default_since, {**self.published, source: newest})
