"""Static STAC catalogs on disk (a catalog, collection or ItemCollection), searched with cql2
as a STAC API would be: the embedded sample and ``file://`` sources."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import cql2
import pystac

from aux_assets.filters import Dialect, JsonDict
from aux_assets.sources.base import SearchError, SearchRequest
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
