"""The embedded default source: the living sample (:mod:`aux_assets.sample.living`) searched as
a STAC API would be, at the project's clock (``AUX_NOW``, else the system clock).

A search sees the products serving the days its filter bounds (validity bounds, a STAC
``datetime``, or a ``published`` lower bound), from the sample's first day to today, published
by now; files are written on first use, only for the items a search returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pystac

from aux_assets.filters import Dialect, JsonDict
from aux_assets.sample.generator import COLLECTION_ID
from aux_assets.sample.living import MAX_PUBLICATION_DELAY, DayRange, LivingSample
from aux_assets.settings import now as clock_now
from aux_assets.sources.base import SearchRequest
from aux_assets.sources.static import (
    interval,
    item_interval,
    matching,
    time_bounds,
    timestamp_terms,
    wanted_types,
)
from aux_assets.utils.stac import read_item


def published_after(cql: JsonDict | None) -> datetime | None:
    """The instant a filter requires ``published`` to be after (``>`` or ``>=`` a timestamp at
    its top), else ``None``."""
    for op, prop, when in timestamp_terms(cql):
        if op in (">", ">=") and prop == "published":
            return when
    return None


def _overlaps(item: JsonDict, window: tuple[datetime, datetime] | None) -> bool:
    if window is None:
        return True
    span = item_interval(item)
    return span is not None and span[0] <= window[1] and span[1] >= window[0]


class LivingSampleSource:
    """The living sample as a source: files on disk, read as ``file://`` hrefs."""

    local = True
    dialect: Dialect = "stac"  # filters are evaluated here, with cql2: any of them works

    def __init__(
        self, name: str, sample: LivingSample, clock: Callable[[], datetime] = clock_now
    ) -> None:
        self.name = name
        self.sample = sample
        self.clock = clock

    @property
    def root(self) -> Path:
        """The folder its files are read from (``file://`` reads are confined to it)."""
        return Path(os.path.realpath(self.sample.root))

    def describe(self) -> str:
        return f"{self.name} (embedded sample at {self.sample.root.as_uri()})"

    def close(self) -> None:
        """Nothing to release."""

    def days(self, request: SearchRequest, now: datetime) -> DayRange | None:
        """The days whose products the search can find: those the validity window of its
        filter meets (``end_datetime >= T`` and ``start_datetime <= T``, either alone leaving
        that side open), else those of its STAC ``datetime``; from ``T - MAX_PUBLICATION_DELAY``
        on for a ``published > T`` filter."""
        latest_start, earliest_end = time_bounds(request.filter)
        low: datetime | None = earliest_end
        high: datetime | None = latest_start
        if latest_start is not None and earliest_end is not None:  # cover or intersect
            low, high = min(latest_start, earliest_end), max(latest_start, earliest_end)
        if low is None and high is None and request.datetime:
            low, high = interval(request.datetime)
        since = published_after(request.filter)
        if since is not None and since.year > 1:
            first = since - MAX_PUBLICATION_DELAY
            low = first if low is None else max(low, first)
        return self.sample.days(_day(low), _day(high), now)

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        now = self.clock()
        days = self.days(request, now)
        if days is None or (request.collections and COLLECTION_ID not in request.collections):
            return []
        products = self.sample.products(days, wanted_types(request.filter), now)
        window = interval(request.datetime) if request.datetime else None
        by_id = {p.item_id: p for p in products}
        docs = (
            {
                "type": "Feature",
                "id": p.item_id,
                "collection": COLLECTION_ID,
                "properties": self.sample.properties(p),
            }
            for p in products
        )
        found = matching(request, (doc for doc in docs if _overlaps(doc, window)))
        return [read_item(self.sample.item(by_id[doc["id"]]), copy=False) for doc in found]


def _day(value: datetime | None) -> date | None:
    """The UTC day of ``value``; ``None`` when unbounded or at the ends of the calendar."""
    if value is None or not date(1, 1, 2) <= value.date() <= date(9999, 12, 30):
        return None
    return value.astimezone(UTC).date()
