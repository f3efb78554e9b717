"""The static STAC catalog on disk: the embedded default catalog.

It is a self-contained static STAC catalog readable by pystac:
``catalog.json`` -> ``<collection>/collection.json`` -> ``<collection>/<id>/<id>.json``.
Every file is written to a temporary name and renamed (atomic); writers hold a file lock so
that two runs updating the same collection never lose each other's links.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pystac

from aux_assets.catalog.base import STAC_VERSION, new_collection
from aux_assets.utils.jsonfiles import temp_name, write_json
from aux_assets.utils.locks import exclusive_lock
from aux_assets.utils.names import check_collection_id, check_item_id, utf8_size
from aux_assets.utils.stac import read_item

_FAR = "9999-12-31T23:59:59Z"
ITEM_FILE_BYTES = utf8_size(temp_name(".json"))  # what <id>.json's temporary name adds to <id>


def _read_json(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


class LocalCatalog:
    """The static STAC catalog on disk that is the embedded default."""

    relocates = False

    def __init__(self, root: Path, title: str = "aux_assets catalog") -> None:
        self.root = root.resolve()
        self.title = title
        self.lookups = 0  # batched id lookups made, for tests and benchmarks

    def describe(self) -> str:
        return f"local catalog at {self.root}"

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its files."""

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.json"

    def _collection_path(self, collection_id: str) -> Path:
        return self.root / check_collection_id(collection_id) / "collection.json"

    def _item_path(self, collection_id: str, item_id: str) -> Path:
        check_item_id(item_id, ITEM_FILE_BYTES)
        return self.root / check_collection_id(collection_id) / item_id / f"{item_id}.json"

    def item_url(self, collection_id: str, item_id: str) -> str:
        return self._item_path(collection_id, item_id).as_uri()

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive_lock(self.root / ".lock")

    def _ensure_root(self, collection_id: str) -> None:
        path = self.catalog_path
        doc: dict[str, Any] = (
            _read_json(path)
            if path.exists()
            else {
                "type": "Catalog",
                "stac_version": STAC_VERSION,
                "id": "aux-assets",
                "title": self.title,
                "description": "Auxiliary data staged by aux_assets",
                "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"}],
            }
        )
        href = f"./{collection_id}/collection.json"
        if not any(link.get("rel") == "child" and link["href"] == href for link in doc["links"]):
            doc["links"].append({"rel": "child", "href": href, "type": "application/json"})
            write_json(path, doc)

    def _new_collection(self, collection_id: str) -> dict[str, Any]:
        doc = new_collection(collection_id)
        doc["links"] = [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
        ]
        return doc

    def ensure_collection(self, collection_id: str) -> None:
        path = self._collection_path(collection_id)
        if path.exists():
            return
        with self._locked():
            if not path.exists():
                write_json(path, self._new_collection(collection_id))
            self._ensure_root(collection_id)

    def get_items(self, collection_id: str, ids: Sequence[str]) -> dict[str, pystac.Item]:
        """The items of ``ids`` that the collection links: the link, written last by
        :meth:`upsert`, is what registers an item (an item file without it was left by an
        interrupted upsert, and is upserted again)."""
        self.lookups += 1
        paths = {item_id: self._item_path(collection_id, item_id) for item_id in dict.fromkeys(ids)}
        coll_path = self._collection_path(collection_id)
        if not coll_path.exists():
            return {}
        linked = {
            link["href"] for link in _read_json(coll_path)["links"] if link.get("rel") == "item"
        }
        found: dict[str, pystac.Item] = {}
        for item_id, path in paths.items():
            if f"./{item_id}/{item_id}.json" in linked and path.exists():
                found[item_id] = read_item(_read_json(path), copy=False)
        return found

    def upsert(self, collection_id: str, items: Sequence[pystac.Item]) -> None:
        if not items:
            return
        coll_path = self._collection_path(collection_id)
        paths = [self._item_path(collection_id, item.id) for item in items]  # all ids checked first
        with self._locked():
            collection = (
                _read_json(coll_path) if coll_path.exists() else self._new_collection(collection_id)
            )
            linked = {link["href"] for link in collection["links"] if link.get("rel") == "item"}
            interval = collection["extent"]["temporal"]["interval"][0]
            for item, path in zip(items, paths, strict=True):
                doc = item.to_dict(include_self_link=False, transform_hrefs=False)
                doc["collection"] = collection_id
                doc["links"] = [
                    {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                    {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                    {"rel": "collection", "href": "../collection.json", "type": "application/json"},
                ]
                write_json(path, doc)
                href = f"./{item.id}/{item.id}.json"
                if href not in linked:
                    linked.add(href)
                    collection["links"].append(
                        {"rel": "item", "href": href, "type": "application/geo+json"}
                    )
                props = doc["properties"]
                start = props.get("start_datetime") or props.get("datetime")
                end = props.get("end_datetime") or start or _FAR
                if start and (interval[0] is None or start < interval[0]):
                    interval[0] = start
                if interval[1] is None or end > interval[1]:
                    interval[1] = end
            write_json(coll_path, collection)
            self._ensure_root(collection_id)
