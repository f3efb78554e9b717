"""Static STAC catalogs on disk (a catalog, collection or ItemCollection), searched with cql2
as a STAC API would be: the embedded sample and ``file://`` sources."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

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


def _matches(expr: cql2.Expr, matchable: JsonDict) -> bool:
    """Whether the item (as :func:`_matchable` made it) matches."""
    try:
        return bool(expr.matches(matchable))
    except Exception:  # cql2 raises when a property the result depends on is missing
        return False


def _interval(value: str) -> tuple[datetime, datetime]:
    """A STAC ``datetime`` parameter (instant, or ``start/end`` with ``..`` open ends)."""
    start, _, end = value.partition("/") if "/" in value else (value, "", value)

    def parse(text: str, default: datetime) -> datetime:
        if text in {"", ".."}:
            return default
        return parse_utc(text)

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


def _wanted_types(cql: JsonDict | None) -> frozenset[str] | None:
    """The product types a filter can match, when it says so at its top (``product:type`` with
    ``=`` or ``in``, alone or in an ``and``); ``None`` when it does not (any type may match).
    Used to look only at those types' items: the filter still decides."""
    if not cql:
        return None
    op, args = cql.get("op"), cql.get("args") or []
    if op == "and":
        for arg in args:
            found = _wanted_types(arg) if isinstance(arg, dict) else None
            if found is not None:
                return found
        return None
    if op in ("=", "in") and len(args) == 2 and args[0] == {"property": "product:type"}:
        value = args[1]
        if op == "=" and isinstance(value, str):
            return frozenset({value})
        if op == "in" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return frozenset(value)
    return None


class _Index:
    """The items of a static catalog as read, as cql2 sees them, and by product type."""

    def __init__(self, items: list[JsonDict]) -> None:
        self.items = items
        self.matchable = [_matchable(item) for item in items]
        self.by_type: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            kind = (item.get("properties") or {}).get("product:type")
            self.by_type.setdefault(str(kind), []).append(i)

    def candidates(self, cql: JsonDict | None) -> Iterable[int]:
        """The positions of the items ``cql`` may match, in catalog order."""
        types = _wanted_types(cql)
        if types is None:
            return range(len(self.items))
        return sorted(i for kind in types for i in self.by_type.get(kind, ()))


ITEM_RECHECK_S = 1.0


@dataclass
class _Cache:
    """What was read, and the versions of the documents it came from."""

    links: dict[Path, tuple[int, int]]  # catalogs, collections, item collections
    items: dict[Path, tuple[int, int]]  # one document per item
    index: _Index
    checked: float  # when the item documents were last checked (monotonic)


def _sort_key(field: str, item: JsonDict) -> str:
    return str(item.get(field) or item.get("properties", {}).get(field) or "")


class LocalStacSource:
    """A static STAC catalog, collection or ItemCollection on disk, searched with cql2.

    Items are read once per process (and again when the root file changes); asset hrefs are
    made absolute ``file://`` URLs.
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

    def _root(self) -> Path:
        if self.path.is_dir():
            for name in ("catalog.json", "collection.json", "items.json"):
                if (self.path / name).exists():
                    return self.path / name
            raise SearchError(f"{self.describe()}: no catalog.json or collection.json in folder")
        if not self.path.exists():
            raise SearchError(f"{self.describe()}: file not found")
        return self.path

    def _walk(self, path: Path, seen: set[Path], item_docs: set[Path]) -> Iterator[JsonDict]:
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
            item_docs.add(path)
            yield self._absolute(doc, path.parent)
            return
        for link in doc.get("links", []):
            rel = link.get("rel")
            if rel in {"child", "item"} and "href" in link:
                target = self._resolve(link["href"], path.parent, follow=rel == "child")
                yield from self._walk(target, seen, item_docs)

    @staticmethod
    def _resolve(href: str, base: Path, follow: bool = True) -> Path:
        """The path ``href`` names from ``base``: symlinks resolved when ``follow`` (catalog
        links, which could loop); items and assets are leaves, normalised only (a catalog of
        one file per item has thousands; a transfer opens the path it is given)."""
        if "://" not in href:
            joined = base / href
            return joined.resolve() if follow else Path(os.path.normpath(joined))
        path = file_path(href)
        if path is None:
            raise SearchError(f"static catalog link {href!r} is not a local file")
        return path

    def _absolute(self, item: JsonDict, base: Path) -> JsonDict:
        for asset in item.get("assets", {}).values():
            href = asset.get("href", "")
            if not urlparse(href).scheme:
                asset["href"] = self._resolve(href, base, follow=False).as_uri()
        return item

    def _index(self) -> _Index:
        """The items, read again when a document that links them changed (checked on every
        search: items added or removed change one) or an item document changed (checked at
        most every :data:`ITEM_RECHECK_S`: a catalog of one file per item has thousands)."""
        root = self._root()
        with self._lock:
            cache, now = self._cache, time.monotonic()
            if (
                cache is None
                or cache.links != _versions(cache.links)
                or (now - cache.checked >= ITEM_RECHECK_S and cache.items != _versions(cache.items))
            ):
                seen: set[Path] = set()
                item_docs: set[Path] = set()
                items = list(self._walk(root, seen, item_docs))
                cache = _Cache(
                    _versions(seen - item_docs), _versions(item_docs), _Index(items), now
                )
            elif now - cache.checked >= ITEM_RECHECK_S:
                cache.checked = now
            self._cache = cache
            return cache.index

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        index = self._index()
        expr = cql2.Expr(request.filter) if request.filter else None
        window = _interval(request.datetime) if request.datetime else None
        found: list[JsonDict] = []
        for i in index.candidates(request.filter):
            item = index.items[i]
            if request.collections and item.get("collection") not in request.collections:
                continue
            if window is not None:
                span = _item_interval(item)
                if span is None or span[0] > window[1] or span[1] < window[0]:
                    continue
            if expr is not None and not _matches(expr, index.matchable[i]):
                continue
            found.append(item)
        for sort in reversed(request.sortby or ()):
            field = str(sort.get("field", "")).removeprefix("properties.")
            found.sort(key=partial(_sort_key, field), reverse=sort.get("direction") == "desc")
        if request.limit is not None:
            found = found[: request.limit]
        return [read_item(it) for it in found]
