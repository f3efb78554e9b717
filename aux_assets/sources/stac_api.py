"""STAC APIs searched with POST through pystac-client, every page followed."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import pystac
import requests
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from pystac_client.warnings import DoesNotConformTo

from aux_assets import tracing
from aux_assets.auth import Auth, AuthError, Unauthorized, renewing_blocking
from aux_assets.filters import Dialect, operators
from aux_assets.sources.base import SearchError, SearchRequest
from aux_assets.sources.profiles import PROFILES
from aux_assets.utils.stac import read_item
from aux_assets.utils.urls import origin_of, redact_url


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


class _OriginBoundSession(requests.Session):
    """A session that drops every credential header when a redirect leaves the origin
    (requests itself only drops ``Authorization``, and only on a host change)."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        super().rebuild_auth(prepared_request, response)
        if origin_of(str(prepared_request.url)) != origin_of(str(response.request.url)):
            for name in ("Authorization", "x-api-key", "Cookie"):
                prepared_request.headers.pop(name, None)


class StacApiSource:
    """A STAC API searched with POST through pystac-client, following every page."""

    local = False

    def __init__(
        self,
        name: str,
        url: str,
        auth: Auth | None = None,
        timeout_s: float = 30.0,
        dialect: Dialect = "stac",
        owner: str | None = None,
    ) -> None:
        """``owner``: on an rs-server-catalog, whose collections to search (asked as
        ``owner_collection``)."""
        self.name = name
        self.url = url
        self.dialect = dialect
        self.owner = owner
        self._auth = auth
        self._timeout_s = timeout_s
        self._client: Client | None = None
        self._session: requests.Session | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.name} at {redact_url(self.url)}"

    def _add_auth(self, request: requests.Request) -> requests.Request:
        """The credentials for the request's origin, and the current span's ``traceparent``."""
        if self._auth is not None:
            request.headers = {**request.headers, **self._auth.headers_for(str(request.url))}
        if tracing.tracer() is not None:
            traced: dict[str, str] = {}
            tracing.inject(traced)
            request.headers = {**request.headers, **traced}
        return request

    def _open(self) -> Client:
        with self._lock:
            if self._client is None:
                stac_io = StacApiIO()
                session = _OriginBoundSession()
                for prefix, adapter in stac_io.session.adapters.items():
                    session.mount(prefix, adapter)
                stac_io.session = self._session = session
                self._client = Client.open(
                    self.url,
                    stac_io=stac_io,
                    request_modifier=self._add_auth,
                    timeout=self._timeout_s,
                )
            return self._client

    def close(self) -> None:
        """Close the connections of the searches (a later search opens new ones)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
            self._client = self._session = None

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        """All pages of the search; a 401 renews the credentials once and searches again."""
        try:
            return renewing_blocking(lambda: self._search(request), self._auth)
        except (Unauthorized, AuthError) as exc:
            detail = exc.detail if isinstance(exc, Unauthorized) else str(exc)
            raise SearchError(f"search in {self.describe()} failed: {detail}") from None

    def _refused(self, request: SearchRequest, detail: str) -> str:
        """Why a 422 happened, in words: the operators we sent and how to send others."""
        used = ", ".join(f"'{op}'" for op in operators(request.filter)) or "none"
        special = PROFILES.get(self.name)
        hint = ""
        if special is not None and self.dialect != "rs-server":
            hint = (
                f"; if this is an rs-server, set {special.env_prefix}_DIALECT=rs-server (it "
                "sends only '=', 'and' and t_intersects)"
            )
        return (
            f"search in {self.describe()} failed: the server refused the filter (HTTP 422: "
            f"{detail}); its operators: {used}{hint}"
        )

    def _collection(self, name: str) -> str:
        """A collection as the server names it in a search."""
        return f"{self.owner}_{name}" if self.owner else name

    def _search(self, request: SearchRequest) -> list[pystac.Item]:
        deadline = None if request.timeout_s is None else time.monotonic() + request.timeout_s
        try:
            search = self._open().search(
                method="POST",
                filter=request.filter,
                max_items=request.limit,
                limit=min(request.limit or PAGE_SIZE, PAGE_SIZE),
                collections=[self._collection(c) for c in request.collections]
                if request.collections
                else None,
                sortby=list(request.sortby) if request.sortby else None,
                datetime=request.datetime,
            )
            items: list[pystac.Item] = []
            for page in search.pages_as_dicts():
                items.extend(read_item(f, copy=False) for f in page.get("features", []))
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
            status = getattr(exc, "status_code", None)
            if status == 401:
                raise Unauthorized(detail) from None
            if status == 422:
                raise SearchError(self._refused(request, detail)) from None
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
