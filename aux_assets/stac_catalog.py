"""The :class:`~aux_assets.catalog.Catalog` on a STAC API with the Transactions extension.

Written against stac-fastapi-pgstac (the catalog our tests run), whose constraints every item
we send satisfies:

- pgstac requires a geometry: an item without one (orbit files, most auxiliary data) is sent
  with a global polygon and bbox instead of ``null``;
- ``item.collection`` must equal the collection in the path, so it is set to it, as the local
  catalog does; links are dropped (the server makes its own);
- ids are checked with :func:`~aux_assets.names.check_item_id` before any request, which also
  refuses every character pgstac refuses;
- an item sent to a missing collection is a 500 in pgstac, so :meth:`StacApiCatalog.upsert`
  makes sure the collection exists first.

Credentials come from ``auth.headers_for(url)`` for each request, so they only reach the
catalog's own origin, and redirects are not followed. Errors are :class:`CatalogError` naming
the catalog (redacted URL), the operation, the HTTP status and the server's message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote, urljoin

import httpx
import pystac

from aux_assets.auth import AuthError
from aux_assets.catalog import CatalogError, new_collection
from aux_assets.filters import ids_filter
from aux_assets.names import check_collection_id, check_item_id
from aux_assets.transfer import Auth, redact_url, shorten

JsonDict = dict[str, Any]

GLOBAL_BBOX = [-180.0, -90.0, 180.0, 90.0]
GLOBAL_GEOMETRY: JsonDict = {
    "type": "Polygon",
    "coordinates": [
        [[-180.0, -90.0], [180.0, -90.0], [180.0, 90.0], [-180.0, 90.0], [-180.0, -90.0]]
    ],
}
_NO_ROUTE = frozenset({404, 405, 501})  # what a server without bulk_items answers
_RETRIED = (httpx.NetworkError, httpx.RemoteProtocolError)  # e.g. a dropped keep-alive


class StacApiCatalog:
    """Items registered in a STAC API (``POST /search`` lookups, Transactions to write)."""

    def __init__(
        self,
        url: str,
        auth: Auth | None = None,
        timeout_s: float = 30.0,
        batch_size: int = 500,
        lookup_batch_size: int = 1000,
        bulk: bool | None = None,
    ) -> None:
        """``bulk``: use ``POST .../bulk_items`` (True), never (False), or if offered (None)."""
        if not url.startswith(("http://", "https://")):
            raise CatalogError(f"catalog URL {redact_url(url)!r} must be http(s)")
        if batch_size < 1 or lookup_batch_size < 1:
            raise ValueError(
                f"batch sizes must be at least 1, got {batch_size} and {lookup_batch_size}"
            )
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.lookup_batch_size = lookup_batch_size  # at most 1 lookup per 1,000 items
        self.lookups = 0  # batched lookup requests made, for tests and benchmarks
        self._auth = auth
        self._bulk = bulk
        self._ensured: set[str] = set()
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def describe(self) -> str:
        return f"STAC API catalog at {redact_url(self.url)}"

    def close(self) -> None:
        self._client.close()

    def item_url(self, collection_id: str, item_id: str) -> str:
        return (
            f"{redact_url(self.url)}/collections/{quote(collection_id, safe='')}"
            f"/items/{quote(item_id, safe='')}"
        )

    def __enter__(self) -> StacApiCatalog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def ensure_collection(self, collection_id: str) -> None:
        """Create the collection unless the server already has it (409 counts as there)."""
        check_collection_id(collection_id)
        op = f"ensure collection {collection_id!r}"
        response = self._send("GET", f"{self.url}/collections/{collection_id}", op)
        if response.status_code == 404:
            response = self._send(
                "POST", f"{self.url}/collections", op, new_collection(collection_id)
            )
            if response.status_code not in (200, 201, 409):
                raise self._error(op, response)
        elif response.status_code != 200:
            raise self._error(op, response)
        self._ensured.add(collection_id)

    def get_items(self, collection_id: str, ids: Sequence[str]) -> dict[str, pystac.Item]:
        """The items of ``ids`` in the collection: one ``POST /search`` per ``lookup_batch_size``
        ids.

        Ids go in a CQL2-JSON ``in`` filter (values, never text) with ``limit`` set to the
        chunk size; next links (a server may cap pages) are followed until every id of the
        chunk is found or there are no more pages.
        """
        check_collection_id(collection_id)
        unique = list(dict.fromkeys(check_item_id(item_id) for item_id in ids))
        found: dict[str, pystac.Item] = {}
        for start in range(0, len(unique), self.lookup_batch_size):
            chunk = unique[start : start + self.lookup_batch_size]
            self._lookup(collection_id, chunk, found)
        return found

    def upsert(self, collection_id: str, items: Sequence[pystac.Item]) -> None:
        """Insert or replace ``items``: ``bulk_items`` upserts of ``batch_size`` items when the
        server has them, else ``POST .../items`` per item and ``PUT`` on 409.

        Every id is checked before any request; the collection is created if missing.
        """
        check_collection_id(collection_id)
        docs = {check_item_id(item.id): _item_doc(item, collection_id) for item in items}
        if not docs:
            return
        if collection_id not in self._ensured:
            self.ensure_collection(collection_id)
        stored: set[str] = set()
        refused: dict[str, str] = {}
        try:
            pending = list(docs.values())
            while pending and self._bulk is not False:
                chunk, pending = pending[: self.batch_size], pending[self.batch_size :]
                chunk_refused = self._bulk_upsert(collection_id, chunk)
                if chunk_refused is None:  # no bulk endpoint: one by one below
                    pending = chunk + pending
                    continue
                refused.update(chunk_refused)
                stored.update(doc["id"] for doc in chunk if doc["id"] not in chunk_refused)
            for doc in pending:
                try:
                    self._upsert_one(collection_id, doc)
                    stored.add(doc["id"])
                except CatalogError as exc:
                    refused[doc["id"]] = str(exc)
        except CatalogError as exc:
            raise CatalogError(str(exc), frozenset(docs) - stored) from None
        if refused:
            details = "; ".join(f"{i}: {m}" for i, m in list(refused.items())[:5])
            raise CatalogError(
                f"{self.describe()}: the server refused {len(refused)} item(s) of collection "
                f"{collection_id!r}, the others are stored: {shorten(details)}",
                frozenset(refused),
            )

    def _lookup(self, collection_id: str, chunk: list[str], found: dict[str, pystac.Item]) -> None:
        op = f"lookup of {len(chunk)} ids in collection {collection_id!r}"
        body: JsonDict = {
            "collections": [collection_id],
            "filter": ids_filter(chunk),
            "filter-lang": "cql2-json",
            "limit": len(chunk),
        }
        wanted = set(chunk)
        method, url = "POST", f"{self.url}/search"
        payload: JsonDict | None = body
        while True:
            response = self._send(method, url, op, payload)
            self.lookups += 1
            if response.status_code != 200:
                raise self._error(op, response)
            page = self._json(op, response)
            features = page.get("features")
            if not isinstance(features, list):
                raise CatalogError(f"{self.describe()}: {op}: the answer has no 'features' list")
            for feature in features:
                if isinstance(feature, dict) and feature.get("id") in wanted:
                    found[feature["id"]] = self._item(op, feature)
            link = _next_link(page)
            if link is None or not features or wanted.issubset(found):
                return
            method = str(link.get("method", "GET")).upper()
            url = urljoin(str(response.url), str(link["href"]))
            if method == "POST":  # merged: some servers send only the token
                extra = link.get("body")
                payload = {**body, **extra} if isinstance(extra, dict) else body
            else:
                payload = None

    def _bulk_upsert(self, collection_id: str, chunk: list[JsonDict]) -> dict[str, str] | None:
        """Upsert ``chunk`` in one request: the items refused (id -> reason), or ``None`` if
        the server has no bulk endpoint."""
        op = f"bulk upsert of {len(chunk)} items into collection {collection_id!r}"
        body = {"items": {doc["id"]: doc for doc in chunk}, "method": "upsert"}
        response = self._send(
            "POST", f"{self.url}/collections/{collection_id}/bulk_items", op, body
        )
        if self._bulk is None and response.status_code in _NO_ROUTE:
            self._bulk = False
            return None
        if response.status_code not in (200, 201):
            raise self._error(op, response)
        self._bulk = True
        refused: dict[str, str] = {}
        for error in self._json(op, response).get("errors") or []:
            item_id = error.get("id") if isinstance(error, dict) else None
            reason = str(error.get("msg") if isinstance(error, dict) else error)
            if item_id is None:  # not attributable to one item: count the chunk as refused
                return {doc["id"]: reason for doc in chunk}
            refused[str(item_id)] = reason
        return refused

    def _upsert_one(self, collection_id: str, doc: JsonDict) -> None:
        op = f"insert of item {doc['id']!r} into collection {collection_id!r}"
        response = self._send("POST", f"{self.url}/collections/{collection_id}/items", op, doc)
        if response.status_code == 409:
            op = f"replace of item {doc['id']!r} in collection {collection_id!r}"
            url = f"{self.url}/collections/{collection_id}/items/{doc['id']}"
            response = self._send("PUT", url, op, doc)
        if response.status_code not in (200, 201, 204):
            raise self._error(op, response)

    def _send(self, method: str, url: str, op: str, body: JsonDict | None = None) -> httpx.Response:
        """One request, with the credentials ``auth`` gives for ``url``'s origin.

        A dropped connection is retried once (every write we make is an upsert, so this is
        safe); a redirect is an error, so credentials never follow one to another origin.
        """
        response = self._request(method, url, op, body)
        if response.status_code == 401 and self._auth is not None:
            try:
                renewed = asyncio.run(self._auth.refresh())
            except AuthError as exc:
                raise CatalogError(f"{self.describe()}: {op}: {exc}") from None
            if renewed:
                response = self._request(method, url, op, body)
        if response.is_redirect:
            location = redact_url(response.headers.get("location", ""))
            raise CatalogError(
                f"{self.describe()}: {op}: HTTP {response.status_code} redirect to "
                f"{location!r} not followed; give the final address as the catalog URL"
            )
        return response

    def _request(self, method: str, url: str, op: str, body: JsonDict | None) -> httpx.Response:
        try:
            headers = self._auth.headers_for(url) if self._auth is not None else {}
        except AuthError as exc:
            raise CatalogError(f"{self.describe()}: {op}: {exc}") from None
        try:
            return self._client.request(method, url, json=body, headers=headers)
        except _RETRIED:  # a dropped connection: once more (every write is an upsert)
            try:
                return self._client.request(method, url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                raise self._transport_error(op, exc) from None
        except httpx.HTTPError as exc:
            raise self._transport_error(op, exc) from None

    def _transport_error(self, op: str, exc: httpx.HTTPError) -> CatalogError:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return CatalogError(f"{self.describe()}: {op} failed: {self._scrub(reason)}")

    def _error(self, op: str, response: httpx.Response) -> CatalogError:
        hint = " (check the catalog credentials)" if response.status_code in (401, 403) else ""
        message = self._scrub(_server_message(response))
        return CatalogError(
            f"{self.describe()}: {op} failed with HTTP {response.status_code}{hint}: {message}"
        )

    def _json(self, op: str, response: httpx.Response) -> JsonDict:
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise CatalogError(f"{self.describe()}: {op}: the answer is not a JSON object")
        return doc

    def _item(self, op: str, feature: JsonDict) -> pystac.Item:
        try:
            return pystac.Item.from_dict(feature, preserve_dict=False)
        except (pystac.STACError, KeyError, TypeError, ValueError) as exc:
            raise CatalogError(
                f"{self.describe()}: {op}: item {feature['id']!r} is not a valid STAC item: "
                f"{shorten(str(exc))}"
            ) from None

    def _scrub(self, text: str) -> str:
        """``text`` without any credential we would send to the catalog."""
        if self._auth is None:
            return text
        try:
            sent = self._auth.headers_for(self.url)
        except AuthError:
            return text
        for value in sent.values():
            for secret in (value, value.rpartition(" ")[2]):
                if secret:
                    text = text.replace(secret, "***")
        return text


def _item_doc(item: pystac.Item, collection_id: str) -> JsonDict:
    """The JSON we send for ``item``: no links, our collection, a global geometry if none."""
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    doc["collection"] = collection_id
    doc["links"] = []
    if doc.get("geometry") is None:
        doc["geometry"] = GLOBAL_GEOMETRY
        doc["bbox"] = GLOBAL_BBOX
    return doc


def _next_link(page: JsonDict) -> JsonDict | None:
    for link in page.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
            return link
    return None


def _server_message(response: httpx.Response) -> str:
    """The server's error message: stac-fastapi's ``description``, else the body."""
    try:
        doc = response.json()
    except ValueError:
        return shorten(response.text) or "(empty body)"
    if isinstance(doc, dict):
        for key in ("description", "detail", "message"):
            if doc.get(key):
                value = doc[key]
                return shorten(value if isinstance(value, str) else json.dumps(value))
    return shorten(json.dumps(doc))
