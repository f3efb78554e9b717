"""The :class:`~aux_assets.catalog.base.Catalog` on the Reference System's catalog
(rs-server-catalog), a STAC API over pgstac whose collections belong to owners.

What differs from :class:`~aux_assets.catalog.stac_api.StacApiCatalog` (measured against
``rs-server-catalog==1.0a4``):

- collections are owner-scoped: created with ``owner`` in the body, addressed as
  ``owner:collection`` in paths and as ``owner_collection`` in ``POST /search`` (the catalog
  answers 404 for ``owner:collection`` there, and a bare id means the server's own user);
- every asset must be an ``s3://`` object whose file name is the asset key (else 400), so the key
  sent is the file name of the href, and staging must go to S3 (checked before any request);
- an asset that carries ``alternate`` is taken for one already in the catalog (400 on a new
  item), and the catalog replaces ``alternate`` with its own ``https`` link, so ours is not sent;
- outside its local mode the catalog copies each object from our bucket into its own and
  deletes ours: the registered href is the catalog's (read back by lookups);
- its ``bulk_items`` skips all of the above (no copy, no check), so items go one request each,
  ``max_in_flight`` at once;
- an insert answered 409 whose item already holds the same checksums is one the server did
  (a retry after a lost answer): left alone, since a replace would point at the object it
  moved; with other checksums the item is replaced (``PUT``), and the catalog then keeps the
  href we send, in our bucket, without copying.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlparse

import pystac

from aux_assets.auth import Auth
from aux_assets.catalog.base import CatalogError
from aux_assets.catalog.stac_api import StacApiCatalog
from aux_assets.utils.names import check_collection_id
from aux_assets.utils.urls import href_file_name

JsonDict = dict[str, Any]
# rs-client-libraries strips every other character from an owner, so it would not find ours
OWNER_RULE = (
    "give the owner of the rs-server-catalog collections we register in, in ASCII letters and "
    "digits only (e.g. AUX_CATALOG_OWNER=ops)"
)


class RsServerCatalog(StacApiCatalog):
    """Items registered in an rs-server-catalog, in the collections of ``owner``."""

    relocates = True  # outside its local mode it moves each object into its own bucket

    def __init__(
        self,
        url: str,
        owner: str,
        auth: Auth | None = None,
        timeout_s: float = 30.0,
        max_in_flight: int = 4,
    ) -> None:
        if not owner.isascii() or not owner.isalnum():
            raise CatalogError(f"AUX_CATALOG_OWNER={owner!r}: {OWNER_RULE}")
        super().__init__(
            url, auth=auth, timeout_s=timeout_s, bulk=False, max_in_flight=max_in_flight
        )
        self.owner = owner

    def describe(self) -> str:
        return f"{super().describe()} (rs-server-catalog, owner {self.owner!r})"

    def _collection_url(self, collection_id: str) -> str:
        owner, collection = quote(self.owner, safe=""), quote(collection_id, safe="")
        return f"{self.url}/collections/{owner}:{collection}"

    def _new_collection(self, collection_id: str) -> JsonDict:
        return {**super()._new_collection(collection_id), "owner": self.owner}

    def _search_collection(self, collection_id: str) -> str:
        return f"{self.owner}_{check_collection_id(collection_id)}"

    def _upsert_one(self, collection_id: str, doc: JsonDict) -> None:
        """Insert ``doc``; on 409, nothing when the catalog already holds the same files (a
        retried insert the server had done: it moved our objects already, so a replace would
        point at what it deleted), else replace it (``PUT``: the catalog then keeps our href)."""
        op = f"insert of item {doc['id']!r} into collection {collection_id!r}"
        items_url = f"{self._collection_url(collection_id)}/items"
        response = self._send("POST", items_url, op, doc)
        if response.status_code in (200, 201):
            return
        if response.status_code != 409:
            raise self._error(op, response)
        url = f"{items_url}/{quote(doc['id'], safe='')}"
        op = f"read of item {doc['id']!r} in collection {collection_id!r}"
        existing = self._send("GET", url, op)
        if existing.status_code == 200 and _same_files(self._json(op, existing), doc):
            return
        op = f"replace of item {doc['id']!r} in collection {collection_id!r}"
        response = self._send("PUT", url, op, doc)
        if response.status_code not in (200, 201, 204):
            raise self._error(op, response)

    def _document(self, item: pystac.Item, collection_id: str) -> JsonDict:
        doc = super()._document(item, collection_id)
        assets: JsonDict = {}
        for key, asset in doc["assets"].items():
            href = str(asset.get("href", ""))
            if urlparse(href).scheme != "s3":
                raise CatalogError(
                    f"{self.describe()}: asset {key!r} of item {item.id!r} is at {href!r}, but "
                    "rs-server-catalog takes only s3:// assets: set AUX_STORAGE_URL=s3://bucket/"
                    "prefix (and the AWS_* variables) to stage into S3"
                )
            name = href_file_name(href)
            if name in assets:
                raise CatalogError(
                    f"{self.describe()}: item {item.id!r} has two assets stored as {name!r}; "
                    "rs-server-catalog keys assets by file name"
                )
            assets[name] = {k: v for k, v in asset.items() if k != "alternate"}
        doc["assets"] = assets
        return doc


def _same_files(stored: JsonDict, doc: JsonDict) -> bool:
    """Whether the catalog's item has every asset of ``doc`` with the same checksum."""
    theirs = stored.get("assets") or {}
    return all(
        key in theirs
        and asset.get("file:checksum") is not None
        and theirs[key].get("file:checksum") == asset.get("file:checksum")
        for key, asset in (doc.get("assets") or {}).items()
    )
