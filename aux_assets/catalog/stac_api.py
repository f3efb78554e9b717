"""The :class:`~aux_assets.catalog.base.Catalog` on a STAC API with the Transactions extension.

Written against stac-fastapi-pgstac (the catalog our tests run), whose constraints every item
we send satisfies:

- pgstac requires a geometry: an item without one (orbit files, most auxiliary data) is sent
  with a global polygon and bbox instead of ``null``;
- ``item.collection`` must equal the collection in the path, so it is set to it, as the local
  catalog does; links are dropped (the server makes its own);
- ids are checked with :func:`~aux_assets.utils.names.check_item_id` before any request, which also
  refuses every character pgstac refuses;
- an item sent to a missing collection is a 500 in pgstac, so :meth:`StacApiCatalog.upsert`
  makes sure the collection exists first.

Every write is idempotent (an upsert, or an insert that becomes a replace on 409), so transient
failures of any request (HTTP 429, 500, 502, 503, 504, dropped connections, timeouts) are
retried with jittered exponential backoff, or after ``Retry-After`` (capped). pgstac answers
500 when concurrent writers into one partition deadlock in ``check_partition`` or race on its
datetime constraints; a retry succeeds.

Credentials come from ``auth.headers_for(url)`` for each request, so they only reach the
catalog's own origin, and redirects are not followed. Errors are :class:`CatalogError` naming
the catalog (redacted URL), the operation, the HTTP status, the server's message and how many
attempts were made.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from itertools import islice
from types import TracebackType
from typing import Any
from urllib.parse import quote, urljoin

import httpx
import pystac

from aux_assets import tracing
from aux_assets.auth import Auth, AuthError, Unauthorized, renewing_blocking
from aux_assets.catalog.base import CatalogError, new_collection
from aux_assets.filters import ids_filter
from aux_assets.utils.names import check_collection_id, check_item_id
from aux_assets.utils.retry import RetryPolicy, retry_after
from aux_assets.utils.stac import read_item
from aux_assets.utils.text import shorten
from aux_assets.utils.urls import redact_url

JsonDict = dict[str, Any]

GLOBAL_BBOX = [-180.0, -90.0, 180.0, 90.0]
GLOBAL_GEOMETRY: JsonDict = {
    "type": "Polygon",
    "coordinates": [
        [[-180.0, -90.0], [180.0, -90.0], [180.0, 90.0], [-180.0, 90.0], [-180.0, -90.0]]
    ],
}
_NO_ROUTE = frozenset({404, 405, 501})  # what a server without bulk_items answers
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRIED_ERRORS = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.TimeoutException)
CATALOG_RETRY = RetryPolicy(attempts=4, backoff_s=0.5, max_backoff_s=8.0, max_retry_after_s=30.0)


class _NoBulkEndpoint(Exception):
    """The server has no ``bulk_items`` route."""


class StacApiCatalog:
    """Items registered in a STAC API (``POST /search`` lookups, Transactions to write)."""

    relocates = False

    def __init__(
        self,
        url: str,
        auth: Auth | None = None,
        timeout_s: float = 30.0,
        batch_size: int = 500,
        lookup_batch_size: int = 1000,
        bulk: bool | None = None,
        max_in_flight: int = 2,
        retry: RetryPolicy = CATALOG_RETRY,
    ) -> None:
        """``bulk``: use ``POST .../bulk_items`` (True), never (False), or if offered (None).

        ``max_in_flight``: bulk batches of one :meth:`upsert` sent at once (the server's
        database can then use more than one core); ``retry``: how transient failures of any
        request are retried.
        """
        if not url.startswith(("http://", "https://")):
            raise CatalogError(f"catalog URL {redact_url(url)!r} must be http(s)")
        if batch_size < 1 or lookup_batch_size < 1 or max_in_flight < 1:
            raise ValueError(
                "batch sizes and max_in_flight must be at least 1, got "
                f"{batch_size}, {lookup_batch_size} and {max_in_flight}"
            )
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.retry = retry
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
        return redact_url(f"{self._collection_url(collection_id)}/items/{quote(item_id, safe='')}")

    def _collection_url(self, collection_id: str) -> str:
        """Where the collection is addressed."""
        return f"{self.url}/collections/{quote(collection_id, safe='')}"

    def _new_collection(self, collection_id: str) -> JsonDict:
        """The collection we create when it is missing."""
        return new_collection(collection_id)

    def _search_collection(self, collection_id: str) -> str:
        """The collection's name in ``POST /search``."""
        return collection_id

    def _document(self, item: pystac.Item, collection_id: str) -> JsonDict:
        """The JSON we send for ``item`` (:func:`item_document`)."""
        return item_document(item, collection_id)

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
        response = self._send("GET", self._collection_url(collection_id), op)
        if response.status_code == 404:
            response = self._send(
                "POST", f"{self.url}/collections", op, self._new_collection(collection_id)
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
        """Insert or replace ``items``: ``bulk_items`` batches of ``batch_size`` items, up to
        ``max_in_flight`` at once, when the server has them (:meth:`_bulk_upserts`), else
        ``POST .../items`` per item and ``PUT`` on 409.

        Every id is checked before any request; the collection is created if missing. On a
        failure, :attr:`CatalogError.failed_ids` are the items not stored.
        """
        check_collection_id(collection_id)
        docs = {check_item_id(item.id): self._document(item, collection_id) for item in items}
        if not docs:
            return
        if collection_id not in self._ensured:
            self.ensure_collection(collection_id)
        stored: set[str] = set()
        refused: dict[str, str] = {}
        try:
            pending = list(docs.values())
            if self._bulk is not False:
                pending = self._bulk_upserts(collection_id, pending, stored, refused)
            self._upsert_each(collection_id, pending, stored, refused)
        except CatalogError as exc:
            raise CatalogError(str(exc), frozenset(docs) - stored) from None
        if refused:
            details = "; ".join(f"{i}: {m}" for i, m in list(refused.items())[:5])
            raise CatalogError(
                f"{self.describe()}: the server refused {len(refused)} item(s) of collection "
                f"{collection_id!r}, the others are stored: {shorten(details)}",
                frozenset(refused),
                refused,
            )

    def _lookup(self, collection_id: str, chunk: list[str], found: dict[str, pystac.Item]) -> None:
        op = f"lookup of {len(chunk)} ids in collection {collection_id!r}"
        body: JsonDict = {
            "collections": [self._search_collection(collection_id)],
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

    def _bulk_upserts(
        self,
        collection_id: str,
        docs: list[JsonDict],
        stored: set[str],
        refused: dict[str, str],
    ) -> list[JsonDict]:
        """Send ``docs`` in bulk batches, adding to ``stored`` and ``refused``; return the docs
        left to send one by one (all of them when the server has no bulk endpoint).

        The first batch goes alone: it learns whether there is a bulk endpoint, and in pgstac
        it creates the partition and its datetime constraints, so it holds just the (up to 4)
        items with the extreme datetimes (:func:`_split_bounds`). The others then go
        ``max_in_flight`` at once and stay within those constraints, so they do not rebuild
        them under an exclusive lock, on which they would deadlock each other (other writers
        still may: the retries cover that). After a failed batch no new batch is started; the
        first failure (in batch order) is raised once those in flight have finished.
        """
        chunks = [
            part[start : start + self.batch_size]
            for part in _split_bounds(docs)
            for start in range(0, len(part), self.batch_size)
        ]

        @tracing.in_current_context  # the worker threads send in the caller's span
        def send(index: int) -> dict[str, str]:
            batch = f" (batch {index + 1} of {len(chunks)})" if len(chunks) > 1 else ""
            op = (
                f"bulk upsert of {len(chunks[index])} items{batch} "
                f"into collection {collection_id!r}"
            )
            return self._bulk_upsert(collection_id, chunks[index], op)

        def record(index: int, chunk_refused: dict[str, str]) -> None:
            refused.update(chunk_refused)
            stored.update(d["id"] for d in chunks[index] if d["id"] not in chunk_refused)

        try:
            record(0, send(0))
        except _NoBulkEndpoint:
            return docs
        failures: dict[int, CatalogError] = {}
        queued = iter(range(1, len(chunks)))
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="stac-bulk") as pool:
            running = {pool.submit(send, i): i for i in islice(queued, self.max_in_flight)}
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    try:
                        record(index, future.result())
                    except CatalogError as exc:
                        failures[index] = exc
                if not failures:
                    running |= {pool.submit(send, i): i for i in islice(queued, len(done))}
        if failures:
            raise failures[min(failures)]
        return []

    def _bulk_upsert(self, collection_id: str, chunk: list[JsonDict], op: str) -> dict[str, str]:
        """Upsert ``chunk``: the items refused (id -> reason); raises :class:`_NoBulkEndpoint`
        if the server has no bulk endpoint.

        Sent as an insert first, and as an upsert only when that is a conflict (some items are
        there already): pgstac's upsert joins the batch with every item of every collection.
        """
        url = f"{self._collection_url(collection_id)}/bulk_items"
        items = {doc["id"]: doc for doc in chunk}
        response = self._send("POST", url, op, {"items": items, "method": "insert"})
        if self._bulk is None and response.status_code in _NO_ROUTE:
            self._bulk = False
            raise _NoBulkEndpoint
        if response.status_code == 409:
            response = self._send("POST", url, op, {"items": items, "method": "upsert"})
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

    def _upsert_each(
        self,
        collection_id: str,
        docs: list[JsonDict],
        stored: set[str],
        refused: dict[str, str],
    ) -> None:
        """Send ``docs`` one request each, adding to ``stored`` and ``refused``: those with the
        extreme datetimes one after the other (they set pgstac's partition constraints, which
        concurrent first inserts race on with a 500), then the others ``max_in_flight`` at
        once."""

        @tracing.in_current_context
        def send(doc: JsonDict) -> str | None:
            try:
                self._upsert_one(collection_id, doc)
            except CatalogError as exc:
                return str(exc)
            except Exception as exc:  # this item's failure: the others keep their outcome
                return f"{self.describe()}: {type(exc).__name__}: {self._scrub(str(exc))}"
            return None

        bounds, others = _split_bounds(docs)
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="stac-item") as pool:
            errors = [send(doc) for doc in bounds] + list(pool.map(send, others))
        for doc, error in zip(bounds + others, errors, strict=True):
            if error is None:
                stored.add(doc["id"])
            else:
                refused[doc["id"]] = error

    def _upsert_one(self, collection_id: str, doc: JsonDict) -> None:
        op = f"insert of item {doc['id']!r} into collection {collection_id!r}"
        items_url = f"{self._collection_url(collection_id)}/items"
        response = self._send("POST", items_url, op, doc)
        if response.status_code == 409:
            op = f"replace of item {doc['id']!r} in collection {collection_id!r}"
            url = f"{items_url}/{quote(doc['id'], safe='')}"
            response = self._send("PUT", url, op, doc)
        if response.status_code not in (200, 201, 204):
            raise self._error(op, response)

    def _send(self, method: str, url: str, op: str, body: JsonDict | None = None) -> httpx.Response:
        """One request, with the credentials ``auth`` gives for ``url``'s origin: the answer,
        unless it is still a transient failure after ``retry.attempts`` (then raised).

        A transient failure is retried after the policy's backoff, or the server's
        ``Retry-After`` (capped). A 401 renews the credentials once
        (:func:`~aux_assets.auth.renewing`); a redirect is an error, so credentials never follow
        one to another origin.
        """
        try:
            return renewing_blocking(lambda: self._retrying(method, url, op, body), self._auth)
        except Unauthorized as exc:
            raise CatalogError(exc.detail) from None
        except AuthError as exc:
            raise CatalogError(f"{self.describe()}: {op}: {exc}") from None

    def _retrying(self, method: str, url: str, op: str, body: JsonDict | None) -> httpx.Response:
        """:meth:`_send` without the renewal: a 401 raises :class:`Unauthorized`."""
        attempt = 1
        while True:
            try:
                response = self._request(method, url, body)
            except _RETRIED_ERRORS as exc:
                if attempt >= self.retry.attempts:
                    raise self._transport_error(op, exc, attempt) from None
                delay = self.retry.backoff(attempt)
            except httpx.HTTPError as exc:
                raise self._transport_error(op, exc, attempt) from None
            else:
                if response.status_code == 401:
                    raise Unauthorized(str(self._error(op, response)))
                if response.status_code not in _RETRIED_STATUSES:
                    break
                if attempt >= self.retry.attempts:
                    raise self._error(op, response, attempt)
                asked = retry_after(
                    response.headers.get("retry-after"), self.retry.max_retry_after_s
                )
                delay = self.retry.backoff(attempt) if asked is None else asked
            time.sleep(delay)
            attempt += 1
        if response.is_redirect:
            location = redact_url(response.headers.get("location", ""))
            raise CatalogError(
                f"{self.describe()}: {op}: HTTP {response.status_code} redirect to "
                f"{location!r} not followed; give the final address as the catalog URL"
            )
        return response

    def _request(self, method: str, url: str, body: JsonDict | None) -> httpx.Response:
        headers = {**self._auth.headers_for(url)} if self._auth is not None else {}
        tracing.inject(headers)
        return self._client.request(method, url, json=body, headers=headers)

    def _transport_error(self, op: str, exc: httpx.HTTPError, attempts: int) -> CatalogError:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return CatalogError(
            f"{self.describe()}: {op} failed{_after(attempts)}: {self._scrub(reason)}"
        )

    def _error(self, op: str, response: httpx.Response, attempts: int = 1) -> CatalogError:
        hint = " (check the catalog credentials)" if response.status_code in (401, 403) else ""
        message = self._scrub(_server_message(response))
        return CatalogError(
            f"{self.describe()}: {op} failed with HTTP {response.status_code}{hint}"
            f"{_after(attempts)}: {message}"
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
            return read_item(feature, copy=False)
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


def item_document(item: pystac.Item, collection_id: str) -> JsonDict:
    """The JSON we send for ``item``: no links, our collection, a global geometry if none."""
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    doc["collection"] = collection_id
    doc["links"] = []
    if doc.get("geometry") is None:
        doc["geometry"] = GLOBAL_GEOMETRY
        doc["bbox"] = GLOBAL_BBOX
    return doc


def _split_bounds(docs: list[JsonDict]) -> tuple[list[JsonDict], list[JsonDict]]:
    """The ``docs`` holding the earliest and latest start and end datetimes, and the others.

    pgstac keeps per-partition constraints on both; a batch outside them rebuilds them under an
    exclusive lock, which concurrent batches of the same partition would wait on or deadlock.
    """
    starts: list[tuple[datetime, int]] = []
    ends: list[tuple[datetime, int]] = []
    for index, doc in enumerate(docs):
        dated = _datetime_range(doc)
        if dated is not None:
            starts.append((dated[0], index))
            ends.append((dated[1], index))
    if not starts:
        return [], docs
    bounds = {min(starts)[1], max(starts)[1], min(ends)[1], max(ends)[1]}
    return [docs[i] for i in sorted(bounds)], [d for i, d in enumerate(docs) if i not in bounds]


def _datetime_range(doc: JsonDict) -> tuple[datetime, datetime] | None:
    """What pgstac partitions on: ``datetime``, else ``start_datetime`` and ``end_datetime``
    (``None`` when missing or unreadable: the server judges those)."""
    properties = doc.get("properties") or {}
    try:
        start, end = (
            datetime.fromisoformat(properties.get("datetime") or properties[key])
            for key in ("start_datetime", "end_datetime")
        )
    except (KeyError, TypeError, ValueError):
        return None
    return start.replace(tzinfo=start.tzinfo or UTC), end.replace(tzinfo=end.tzinfo or UTC)


def _after(attempts: int) -> str:
    return f" after {attempts} attempts" if attempts > 1 else ""


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
