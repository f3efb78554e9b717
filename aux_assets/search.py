"""STAC search: STAC APIs via pystac-client, and static catalogs on disk with the same filters."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import cql2
import pystac
import requests
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from pystac_client.warnings import DoesNotConformTo

from aux_assets.auth import AuthError
from aux_assets.filters import JsonDict, parse_filter
from aux_assets.sources import LTA_NOT_SUPPORTED
from aux_assets.transfer import Auth, origin_of, redact_url
from aux_assets.urls import file_path, local_path

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


class _RedactCredentials(logging.Filter):
    """Masks credential header values in log records (pystac-client logs request headers at
    DEBUG, ``Authorization`` included)."""

    _HEADER = re.compile(r"""(['"](?:authorization|x-api-key|cookie)['"]\s*:\s*['"])[^'"]*""", re.I)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self._HEADER.sub(r"\1***", message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


logging.getLogger("pystac_client.stac_api_io").addFilter(_RedactCredentials())


PAGE_SIZE = 500  # items per page asked of STAC APIs (servers default to as few as 10)


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

    def search(self, request: SearchRequest) -> list[pystac.Item]: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class UnconfiguredSource:
    """A source without a URL: every search fails with a message telling how to configure it."""

    name: str
    local: bool = False

    def message(self) -> str:
        if self.name == "lta":
            return LTA_NOT_SUPPORTED
        env = "AUX_CATALOG_URL" if self.name == "catalog" else f"AUX_{self.name.upper()}_URL"
        return (
            f"source '{self.name}' is not configured: set {env} to its STAC API root "
            "or to a file:// URL of a static STAC catalog"
        )

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        raise SearchError(self.message())

    def describe(self) -> str:
        return f"{self.name} (not configured)"


class _OriginBoundSession(requests.Session):
    """A session that drops every credential header when a redirect leaves the origin
    (requests itself only drops ``Authorization``, and only on a host change)."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        super().rebuild_auth(prepared_request, response)
        if origin_of(str(prepared_request.url)) != origin_of(str(response.request.url)):
            for name in ("Authorization", "x-api-key", "Cookie"):
                prepared_request.headers.pop(name, None)


class _Unauthorized(Exception):
    """A 401 from the API (the credentials may be renewed once)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StacApiSource:
    """A STAC API searched with POST through pystac-client, following every page."""

    local = False

    def __init__(
        self, name: str, url: str, auth: Auth | None = None, timeout_s: float = 30.0
    ) -> None:
        self.name = name
        self.url = url
        self._auth = auth
        self._timeout_s = timeout_s
        self._client: Client | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.name} at {redact_url(self.url)}"

    def _add_auth(self, request: requests.Request) -> requests.Request:
        if self._auth is not None:
            request.headers = {**request.headers, **self._auth.headers_for(str(request.url))}
        return request

    def _open(self) -> Client:
        with self._lock:
            if self._client is None:
                stac_io = StacApiIO()
                session = _OriginBoundSession()
                for prefix, adapter in stac_io.session.adapters.items():
                    session.mount(prefix, adapter)
                stac_io.session = session
                self._client = Client.open(
                    self.url,
                    stac_io=stac_io,
                    request_modifier=self._add_auth,
                    timeout=self._timeout_s,
                )
            return self._client

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        """All pages of the search; a 401 renews the credentials once and searches again."""
        try:
            return self._search(request)
        except _Unauthorized as exc:
            try:
                renewed = self._auth is not None and asyncio.run(self._auth.refresh())
            except AuthError as auth_error:
                raise SearchError(f"search in {self.describe()} failed: {auth_error}") from None
            if not renewed:
                raise SearchError(f"search in {self.describe()} failed: {exc.detail}") from None
            try:
                return self._search(request)
            except _Unauthorized as again:
                raise SearchError(f"search in {self.describe()} failed: {again.detail}") from None

    def _search(self, request: SearchRequest) -> list[pystac.Item]:
        deadline = None if request.timeout_s is None else time.monotonic() + request.timeout_s
        try:
            search = self._open().search(
                method="POST",
                filter=request.filter,
                max_items=request.limit,
                limit=min(request.limit or PAGE_SIZE, PAGE_SIZE),
                collections=list(request.collections) if request.collections else None,
                sortby=list(request.sortby) if request.sortby else None,
                datetime=request.datetime,
            )
            items: list[pystac.Item] = []
            for page in search.pages_as_dicts():
                items.extend(pystac.Item.from_dict(f) for f in page.get("features", []))
                if deadline is not None and time.monotonic() > deadline:
                    raise SearchError(
                        f"search in {self.describe()} exceeded its timeout of "
                        f"{request.timeout_s} s after {len(items)} items"
                    )
            return items[: request.limit] if request.limit is not None else items
        except SearchError:
            raise
        except AuthError as exc:
            raise SearchError(f"search in {self.describe()} failed: {exc}") from None
        except APIError as exc:
            detail = " ".join(str(exc).split())[:500]
            if getattr(exc, "status_code", None) == 401:
                raise _Unauthorized(detail) from None
            raise SearchError(f"search in {self.describe()} failed: {detail}") from None
        except requests.RequestException as exc:
            raise SearchError(f"search in {self.describe()} failed: {type(exc).__name__}") from None
        except (NotImplementedError, DoesNotConformTo):
            raise SearchError(
                f"search in {self.describe()} failed: the API does not conform to item search"
            ) from None
        except ValueError as exc:  # e.g. a root that answers HTML instead of STAC JSON
            raise SearchError(
                f"search in {self.describe()} failed: the answer is not STAC JSON ({exc})"
            ) from None


# cql2-rs cannot turn timestamps after 9999-12-30T22:00:00Z into Unix time (it raises), yet
# real open-ended files end on 9999-12-31T23:59:59; for matching only, such dates are clamped.
_CQL2_MAX = "9999-12-30T00:00:00Z"
_DATE_PROPS = ("datetime", "start_datetime", "end_datetime")


def _matchable(item: JsonDict) -> JsonDict:
    """The item as cql2 should see it: far-future dates clamped, and an instant item
    (``datetime`` only) given ``start_datetime = end_datetime = datetime``."""
    props = dict(item.get("properties") or {})
    if props.get("datetime") and not props.get("start_datetime"):
        props["start_datetime"] = props["datetime"]
    if props.get("datetime") and not props.get("end_datetime"):
        props["end_datetime"] = props["datetime"]
    for key in _DATE_PROPS:
        if str(props.get(key) or "") >= "9999-12-30T22":
            props[key] = _CQL2_MAX
    return {**item, "properties": props}


def _matches(expr: cql2.Expr, item: JsonDict) -> bool:
    try:
        return bool(expr.matches(_matchable(item)))
    except Exception:  # cql2 raises when a property the result depends on is missing
        return False


def _interval(value: str) -> tuple[datetime, datetime]:
    """A STAC ``datetime`` parameter (instant, or ``start/end`` with ``..`` open ends)."""
    start, _, end = value.partition("/") if "/" in value else (value, "", value)

    def parse(text: str, default: datetime) -> datetime:
        if text in {"", ".."}:
            return default
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    return parse(start, datetime.min.replace(tzinfo=UTC)), parse(
        end, datetime.max.replace(tzinfo=UTC)
    )


def _item_interval(item: JsonDict) -> tuple[datetime, datetime] | None:
    props = item.get("properties", {})
    start = props.get("start_datetime") or props.get("datetime")
    end = props.get("end_datetime") or start
    if not start:
        return None
    return _interval(f"{start}/{end}")


def _versions(paths: Iterable[Path]) -> dict[Path, tuple[int, int]]:
    """Inode and modification time of the catalog documents read (item links live in them;
    atomic rewrites give a new inode even within one clock tick)."""
    versions = {}
    for path in paths:
        try:
            stat = os.stat(path)
            versions[path] = (stat.st_ino, stat.st_mtime_ns)
        except FileNotFoundError:
            versions[path] = (-1, -1)
    return versions


def _sort_key(field: str, item: JsonDict) -> str:
    return str(item.get(field) or item.get("properties", {}).get(field) or "")


class LocalStacSource:
    """A static STAC catalog, collection or ItemCollection on disk, searched with cql2.

    Items are read once per process (and again when the root file changes); asset hrefs are
    made absolute ``file://`` URLs.
    """

    local = True

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._cache: tuple[dict[Path, tuple[int, int]], list[JsonDict]] | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.name} at {self.path.as_uri()}"

    def _root(self) -> Path:
        if self.path.is_dir():
            for name in ("catalog.json", "collection.json", "items.json"):
                if (self.path / name).exists():
                    return self.path / name
            raise SearchError(f"{self.describe()}: no catalog.json or collection.json in folder")
        if not self.path.exists():
            raise SearchError(f"{self.describe()}: file not found")
        return self.path

    def _walk(self, path: Path, seen: set[Path]) -> Iterator[JsonDict]:
        if path in seen:
            return
        seen.add(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SearchError(f"{self.describe()}: cannot read {path}: {exc}") from None
        kind = doc.get("type")
        if kind == "FeatureCollection":
            for feature in doc.get("features", []):
                yield self._absolute(feature, path.parent)
            return
        if kind == "Feature":
            yield self._absolute(doc, path.parent)
            return
        for link in doc.get("links", []):
            if link.get("rel") in {"child", "item"} and "href" in link:
                yield from self._walk(self._resolve(link["href"], path.parent), seen)

    @staticmethod
    def _resolve(href: str, base: Path) -> Path:
        if "://" not in href:
            return (base / href).resolve()
        path = file_path(href)
        if path is None:
            raise SearchError(f"static catalog link {href!r} is not a local file")
        return path

    def _absolute(self, item: JsonDict, base: Path) -> JsonDict:
        for asset in item.get("assets", {}).values():
            href = asset.get("href", "")
            if not urlparse(href).scheme:
                asset["href"] = self._resolve(href, base).as_uri()
        return item

    def _items(self) -> list[JsonDict]:
        root = self._root()
        with self._lock:
            if self._cache is None or self._cache[0] != _versions(self._cache[0]):
                seen: set[Path] = set()
                items = list(self._walk(root, seen))
                self._cache = (_versions(seen), items)
            return self._cache[1]

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        items = self._items()
        expr = cql2.Expr(request.filter) if request.filter else None
        window = _interval(request.datetime) if request.datetime else None
        found: list[JsonDict] = []
        for item in items:
            if request.collections and item.get("collection") not in request.collections:
                continue
            if window is not None:
                span = _item_interval(item)
                if span is None or span[0] > window[1] or span[1] < window[0]:
                    continue
            if expr is not None and not _matches(expr, item):
                continue
            found.append(item)
        for sort in reversed(request.sortby or ()):
            field = str(sort.get("field", "")).removeprefix("properties.")
            found.sort(key=partial(_sort_key, field), reverse=sort.get("direction") == "desc")
        if request.limit is not None:
            found = found[: request.limit]
        return [pystac.Item.from_dict(it) for it in found]


def open_source(
    name: str, url: str | None, auth: Auth | None = None, timeout_s: float = 30.0
) -> Source:
    """The source for ``url``: ``http(s)://`` STAC API, ``file://`` or a path on disk, or none."""
    if not url:
        return UnconfiguredSource(name)
    if urlparse(url).scheme in {"http", "https"}:
        return StacApiSource(name, url, auth=auth, timeout_s=timeout_s)
    path = local_path(url)
    if path is None:
        raise SearchError(
            f"source '{name}': URL scheme {urlparse(url).scheme!r} is not supported; "
            "use http(s):// for a STAC API or file:// for a static catalog"
        )
    return LocalStacSource(name, path)
