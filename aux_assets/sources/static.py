"""Static STAC catalogs on disk (a catalog, collection or ItemCollection), searched with cql2
as a STAC API would be: the embedded sample and ``file://`` sources."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import quote_from_bytes, urlparse

import cql2
import pystac

from aux_assets.filters import Dialect, JsonDict
from aux_assets.sources.base import SearchError, SearchRequest
from aux_assets.utils.stac import read_item
from aux_assets.utils.times import parse_utc
from aux_assets.utils.urls import file_path

# cql2-rs cannot turn timestamps after 9999-12-30T22:00:00Z into Unix time (it raises), yet
# real open-ended files end on 9999-12-31T23:59:59; for matching only, such dates are clamped.
_CQL2_MAX = "9999-12-30T00:00:00Z"
_DATE_PROPS = ("datetime", "start_datetime", "end_datetime")
_UNQUERIED = ("assets", "links")  # not queryables of item search: cql2 need not convert them


def _matchable(item: JsonDict) -> JsonDict:
    """The item as cql2 should see it: far-future dates clamped, an instant item (``datetime``
    only) given ``start_datetime = end_datetime = datetime``, without assets and links."""
    props = dict(item.get("properties") or {})
    if props.get("datetime") and not props.get("start_datetime"):
        props["start_datetime"] = props["datetime"]
    if props.get("datetime") and not props.get("end_datetime"):
        props["end_datetime"] = props["datetime"]
    for key in _DATE_PROPS:
        if str(props.get(key) or "") >= "9999-12-30T22":
            props[key] = _CQL2_MAX
    return {k: v for k, v in item.items() if k not in _UNQUERIED} | {"properties": props}


def _matches(expr: cql2.Expr, matchable: JsonDict) -> bool:
    """Whether the item (as :func:`_matchable` made it) matches."""
    try:
        return bool(expr.matches(matchable))
    except Exception:  # cql2 raises when a property the result depends on is missing
        return False


def interval(value: str) -> tuple[datetime, datetime]:
    """A STAC ``datetime`` parameter (instant, or ``start/end`` with ``..`` open ends)."""
    start, _, end = value.partition("/") if "/" in value else (value, "", value)

    def parse(text: str, default: datetime) -> datetime:
        if text in {"", ".."}:
            return default
        return parse_utc(text)

    return parse(start, datetime.min.replace(tzinfo=UTC)), parse(
        end, datetime.max.replace(tzinfo=UTC)
    )


def item_interval(item: JsonDict) -> tuple[datetime, datetime] | None:
    props = item.get("properties", {})
    start = props.get("start_datetime") or props.get("datetime")
    end = props.get("end_datetime") or start
    if not start:
        return None
    return interval(f"{start}/{end}")


def _version(path: str) -> tuple[int, int]:
    """Inode and modification time of a document (atomic rewrites give a new inode even
    within one clock tick); ``(-1, -1)`` when it is gone."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return (-1, -1)
    return (stat.st_ino, stat.st_mtime_ns)


def _read(path: str) -> tuple[str, tuple[int, int]]:
    """A document's text and its version, taken from the open file before reading it (a
    change while reading shows next time)."""
    with open(path, encoding="utf-8") as file:
        stat = os.fstat(file.fileno())
        return file.read(), (stat.st_ino, stat.st_mtime_ns)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SLACK = timedelta(seconds=1)


def _micros(value: datetime | None) -> int | None:
    """``value`` as exact integer microseconds since 1970 (how the index compares times)."""
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def wanted_types(cql: JsonDict | None) -> frozenset[str] | None:
    """The product types a filter can match, when it says so at its top (``product:type`` with
    ``=`` or ``in``, alone or in an ``and``); ``None`` when it does not (any type may match).
    Used to look only at those types' items: the filter still decides."""
    for term in top_terms(cql or {}):
        op, args = term.get("op"), term.get("args") or []
        if op not in ("=", "in") or len(args) != 2 or args[0] != {"property": "product:type"}:
            continue
        value = args[1]
        if op == "=" and isinstance(value, str):
            return frozenset({value})
        if op == "in" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return frozenset(value)
    return None


def top_terms(cql: JsonDict) -> list[JsonDict]:
    """The terms a filter requires all of: the arguments of a top ``and``, or itself."""
    if cql.get("op") == "and":
        return [arg for arg in cql.get("args") or [] if isinstance(arg, dict)]
    return [cql]


def timestamp_terms(cql: JsonDict | None) -> Iterator[tuple[str, str, datetime]]:
    """``(op, property, T)`` of each term a filter requires (at its top) that compares a
    property with a timestamp, e.g. ``("<=", "start_datetime", T)``."""
    for term in top_terms(cql or {}):
        args = term.get("args") or []
        if len(args) != 2 or not isinstance(args[1], dict) or "timestamp" not in args[1]:
            continue
        if not isinstance(args[0], dict) or not isinstance(args[0].get("property"), str):
            continue
        try:
            when = parse_utc(str(args[1]["timestamp"]))
        except ValueError:
            continue
        yield str(term.get("op")), args[0]["property"], when


def time_bounds(cql: JsonDict | None) -> tuple[datetime | None, datetime | None]:
    """The latest start and earliest end a filter allows, when it requires them with a
    timestamp (``start_datetime <= T``, ``end_datetime >= T``, as window filters say), each
    widened by a second (the index keeps a superset: cql2 still decides)."""
    latest_start = earliest_end = None
    for op, prop, when in timestamp_terms(cql):
        if op in ("<=", "<") and prop == "start_datetime":
            latest_start = when + _SLACK
        elif op in (">=", ">") and prop == "end_datetime":
            earliest_end = when - _SLACK
    return latest_start, earliest_end


_SCHEMA = """
CREATE TABLE items (
    pos INTEGER PRIMARY KEY,  -- catalog order
    kind TEXT, collection TEXT, t0 INTEGER, t1 INTEGER,  -- product type, validity (us)
    base TEXT NOT NULL,  -- the folder relative asset hrefs start from
    doc TEXT NOT NULL,  -- the item's JSON
    path TEXT UNIQUE, ino INTEGER, mtime INTEGER  -- its own document and version, if any
);
CREATE INDEX items_kind ON items (kind, t0);
"""
_INSERT = "INSERT OR IGNORE INTO items VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_BATCH = 1000  # rows per executemany


@dataclass(frozen=True)
class _Row:
    """One item as read: parsed, as text, where from (and its own document's version)."""

    item: JsonDict
    text: str
    base: str
    path: str | None = None  # the item's own document, when it has one
    version: tuple[int, int] = (-1, -1)

    def values(self) -> tuple[str | int | None, ...]:
        """The row's columns after ``pos``."""
        kind = (self.item.get("properties") or {}).get("product:type")
        try:
            span = item_interval(self.item)
        except ValueError:  # a validity that is not a timestamp: found by no window
            span = None
        t0, t1 = (_micros(t) for t in span or (None, None))
        collection = self.item.get("collection")
        kind_text = None if kind is None else str(kind)
        return (kind_text, collection, t0, t1, self.base, self.text, self.path, *self.version)


class _Index:
    """The items of a static catalog in a private on-disk SQLite database, deleted when closed:
    product type, collection and validity indexed, each item's JSON kept as text and parsed
    again only when a search may return it. Memory does not grow with the number of items."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", check_same_thread=False)  # "": temporary, on disk
        self._db.executescript(_SCHEMA)

    @classmethod
    def build(cls, rows: Iterable[_Row]) -> _Index:
        """The index of ``rows``, written in one transaction, :data:`_BATCH` rows at a time (an
        item document linked twice is stored once: its path is unique)."""
        index = cls()
        try:
            with index._db:
                batch: list[tuple[str | int | None, ...]] = []
                for row in rows:
                    batch.append(row.values())
                    if len(batch) == _BATCH:
                        index._db.executemany(_INSERT, batch)
                        batch.clear()
                index._db.executemany(_INSERT, batch)
        except BaseException:
            index.close()
            raise
        return index

    def close(self) -> None:
        self._db.close()

    def changed(self) -> bool:
        """Whether an item document was changed, replaced or removed since it was read."""
        rows = self._db.execute("SELECT path, ino, mtime FROM items WHERE path IS NOT NULL")
        return any(_version(path) != (ino, mtime) for path, ino, mtime in rows)

    def candidates(
        self, request: SearchRequest, window: tuple[datetime, datetime] | None
    ) -> list[tuple[str, str]]:
        """Folder and JSON text of the items of the request's product types and validity bounds
        (when its filter says them), collections and window, in catalog order: the filter
        still decides."""
        where: list[str] = []
        params: list[str | int | None] = []
        types = wanted_types(request.filter)
        if types is not None:
            where.append("kind IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(sorted(types)))
        if request.collections:
            where.append("collection IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(request.collections)))
        latest_start, earliest_end = time_bounds(request.filter)
        if window is not None:
            where.append("t0 <= ? AND t1 >= ?")
            params += [_micros(window[1]), _micros(window[0])]
        if latest_start is not None:
            where.append("t0 <= ?")
            params.append(_micros(latest_start))
        if earliest_end is not None:
            where.append("t1 >= ?")
            params.append(_micros(earliest_end))
        sql = "SELECT base, doc FROM items" + (" WHERE " + " AND ".join(where) if where else "")
        return self._db.execute(sql + " ORDER BY pos", params).fetchall()


ITEM_RECHECK_S = 1.0


@dataclass
class _Cache:
    """What was read, and the versions of the documents it came from."""

    links: dict[str, tuple[int, int]]  # catalogs, collections, item collections
    index: _Index  # with the versions of the item documents
    checked: float  # when the item documents were last checked (monotonic)


def _sort_key(field: str, item: JsonDict) -> str:
    return str(item.get(field) or item.get("properties", {}).get(field) or "")


def matching(request: SearchRequest, items: Iterable[JsonDict]) -> list[JsonDict]:
    """The ``items`` the request's filter matches (evaluated with cql2), sorted by its
    ``sortby`` and cut at its ``limit``."""
    expr = cql2.Expr(request.filter) if request.filter else None
    found = [it for it in items if expr is None or _matches(expr, _matchable(it))]
    for sort in reversed(request.sortby or ()):
        field = str(sort.get("field", "")).removeprefix("properties.")
        found.sort(key=partial(_sort_key, field), reverse=sort.get("direction") == "desc")
    return found if request.limit is None else found[: request.limit]


class LocalStacSource:
    """A static STAC catalog, collection or ItemCollection on disk, searched with cql2.

    Items are read once per process (and again when a document changes) into an index on disk;
    asset hrefs are made absolute ``file://`` URLs, staged only from inside :attr:`root`.
    """

    local = True
    dialect: Dialect = "stac"  # filters are evaluated here, with cql2: any of them works

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._cache: _Cache | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.name} at {self.path.as_uri()}"

    def close(self) -> None:
        """Delete the index (a later search builds it again)."""
        with self._lock:
            if self._cache is not None:
                self._cache.index.close()
                self._cache = None

    @property
    def root(self) -> Path:
        """The folder of its catalog, collection or ItemCollection document, symlinks resolved:
        its ``file://`` hrefs are read only from inside it (and ``AUX_LOCAL_FILE_ROOTS``)."""
        return Path(os.path.realpath(self.path if self.path.is_dir() else self.path.parent))

    def _root(self) -> Path:
        if self.path.is_dir():
            for name in ("catalog.json", "collection.json", "items.json"):
                if (self.path / name).exists():
                    return self.path / name
            raise SearchError(f"{self.describe()}: no catalog.json or collection.json in folder")
        if not self.path.exists():
            raise SearchError(f"{self.describe()}: file not found")
        return self.path

    def _walk(self, path: str, seen: dict[str, tuple[int, int]]) -> Iterator[_Row]:
        """The items under the absolute ``path``; ``seen`` gets the versions of the other
        documents read (item documents are leaves: the index keeps theirs). Paths are strings:
        a catalog of one file per item has thousands."""
        if path in seen:
            return
        try:
            text, version = _read(path)
            doc = json.loads(text)
        except (OSError, ValueError) as exc:
            raise SearchError(f"{self.describe()}: cannot read {path}: {exc}") from None
        kind, folder = doc.get("type"), os.path.dirname(path)
        if kind == "Feature":
            yield _Row(doc, text, folder, path, version)
            return
        seen[path] = version
        if kind == "FeatureCollection":
            for feature in doc.get("features", []):
                yield _Row(feature, json.dumps(feature), folder)
            return
        for link in doc.get("links", []):
            rel = link.get("rel")
            if rel in {"child", "item"} and "href" in link:
                target = self._resolve(link["href"], folder, follow=rel == "child")
                yield from self._walk(target, seen)

    @staticmethod
    def _resolve(href: str, base: str, follow: bool = True) -> str:
        """The path ``href`` names from the folder ``base``: symlinks resolved when ``follow``
        (catalog links, which could loop); items and assets are leaves, normalised only (a
        transfer opens the path it is given)."""
        if "://" not in href:
            joined = os.path.join(base, href)
            return os.path.realpath(joined) if follow else os.path.normpath(joined)
        path = file_path(href)
        if path is None:
            raise SearchError(f"static catalog link {href!r} is not a local file")
        return str(path)

    @staticmethod
    def _absolute(item: JsonDict, base: str) -> JsonDict:
        """``item`` with relative asset hrefs made ``file://`` URLs from the folder ``base``
        (normalised as :meth:`_resolve` does leaves; quoted as ``Path.as_uri`` does)."""
        for asset in item.get("assets", {}).values():
            href = asset.get("href", "")
            if not urlparse(href).scheme:
                path = os.path.normpath(os.path.join(base, href))
                asset["href"] = "file://" + quote_from_bytes(os.fsencode(path))
        return item

    def _index(self) -> _Index:
        """The index, built again when a document that links items changed (checked on every
        search: items added or removed change one) or an item document changed (checked at
        most every :data:`ITEM_RECHECK_S`: a catalog of one file per item has thousands).
        Called with the lock held."""
        root = self._root()
        cache, now = self._cache, time.monotonic()
        if cache is not None and all(_version(p) == v for p, v in cache.links.items()):
            if now - cache.checked < ITEM_RECHECK_S:
                return cache.index
            if not cache.index.changed():
                cache.checked = now
                return cache.index
        seen: dict[str, tuple[int, int]] = {}
        index = _Index.build(self._walk(str(root.absolute()), seen))
        if cache is not None:
            cache.index.close()
        self._cache = _Cache(seen, index, now)
        return index

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        window = interval(request.datetime) if request.datetime else None
        with self._lock:
            rows = self._index().candidates(request, window)
        found = matching(request, (self._absolute(json.loads(text), base) for base, text in rows))
        return [read_item(it, copy=False) for it in found]
