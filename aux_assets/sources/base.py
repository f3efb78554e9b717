"""What a source is: the :class:`Source` interface, the search it answers, its errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pystac

from aux_assets.filters import Dialect, JsonDict, parse_filter
from aux_assets.sources.profiles import profile

# pystac discovers its extension hooks lazily on the first migration, which races when the
# first items are parsed in several threads at once; parse one item here, in the importing thread.
pystac.Item.from_dict(
    {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "warm-up",
        "geometry": None,
        "properties": {"datetime": "2000-01-01T00:00:00Z"},
        "assets": {},
        "links": [],
    }
)


class SearchError(RuntimeError):
    """A search that failed; the message names the source and its URL, never credentials."""


@dataclass(frozen=True)
class SearchRequest:
    """A STAC search body. ``limit`` is the total cap on items, not a page size."""

    filter: JsonDict | None = None
    collections: tuple[str, ...] | None = None
    limit: int | None = None
    sortby: tuple[JsonDict, ...] | None = None
    datetime: str | None = None
    timeout_s: float | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any], timeout_s: float | None = None) -> SearchRequest:
        """Read the seed's search body (``filter``, ``limit``, ``collections``, ``sortby``,
        ``timestamp`` or ``datetime``); other keys are ignored, the filter is validated."""
        raw_filter = body.get("filter")
        collections = body.get("collections")
        sortby = body.get("sortby")
        return cls(
            filter=parse_filter(raw_filter) if raw_filter is not None else None,
            collections=tuple(collections) if collections else None,
            limit=body.get("limit"),
            sortby=tuple(sortby) if sortby else None,
            datetime=body.get("timestamp") or body.get("datetime"),
            timeout_s=timeout_s,
        )


class Source(Protocol):
    """Something that answers STAC searches with items."""

    @property
    def name(self) -> str: ...

    @property
    def local(self) -> bool:
        """True when its asset hrefs are ``file://`` and may be read."""
        ...

    @property
    def dialect(self) -> Dialect:
        """Which filters it takes (:data:`aux_assets.filters.Dialect`)."""
        ...

    def search(self, request: SearchRequest) -> list[pystac.Item]: ...

    def describe(self) -> str: ...

    def close(self) -> None:
        """Release connections and caches (a later search opens them again)."""
        ...


@dataclass(frozen=True)
class UnconfiguredSource:
    """A source without a URL: every search fails with a message telling how to configure it."""

    name: str
    local: bool = False
    dialect: Dialect = "stac"

    def message(self) -> str:
        return profile(self.name).unconfigured_message()

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        raise SearchError(self.message())

    def describe(self) -> str:
        return f"{self.name} (not configured)"

    def close(self) -> None:
        """Nothing to release."""
