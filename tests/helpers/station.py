"""An ESA OData station (ADGS, the AUXIP upstream, or a PRIP production station) on loopback,
as rs-server asks it.

No package provides one, so this follows the interface rs-server-adgs and rs-server-prip 1.0a4
use (a product may also carry what PRIP reads: ``GeoFootprint``, ``OriginDate`` and integer
attributes such as ``orbitNumber``):

- ``POST /oauth2/token``: password grant, form fields and an ``Authorization: Basic ...`` header
  (what ``rs-server.yaml`` configures); answers a bearer token;
- ``GET /Products?$filter=F&$orderby=PublicationDate desc&$top=N&$skip=K&$expand=Attributes``
  with the bearer token: ``{"value": [...]}``. F joins with ``and`` the clauses rs-server writes:
  product type (``eq`` or ``in``), ``ContentDate/Start|End`` and ``PublicationDate`` compared with
  unquoted timestamps, ``contains(Name, '...')``; any other clause is a 400, so a filter this stub
  does not understand fails loudly instead of matching everything;
- ``GET /Products(<Id>)/$value`` with the bearer token: the product's bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from aux_assets.auth import OAuth2Settings

USERNAME, PASSWORD = "station-user", "station-password"
CLIENT_ID, CLIENT_SECRET = "station-client", "station-client-secret"
BASIC = "Basic c3RhdGlvbg=="

_TIME = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)"
_ATTRIBUTE = (
    r"Attributes/OData\.CSC\.StringAttribute/any\(att:att/Name eq '(\w+)' and "
    r"att/OData\.CSC\.StringAttribute/Value (eq|in) \(?([^)]*?)\)?\)"
)
_CLAUSES = {
    "attribute": re.compile(_ATTRIBUTE),
    "content": re.compile(rf"ContentDate/(Start|End) (lt|lte|gt|gte|eq) {_TIME}"),
    "published_or_equal": re.compile(
        rf"\(PublicationDate (gt|lt) {_TIME} or PublicationDate eq {_TIME}\)"
    ),
    "published": re.compile(rf"PublicationDate (lt|lte|gt|gte|eq) {_TIME}"),
    "name": re.compile(r"contains\(Name, '([^']*)'\)"),
}
_COMPARE = {
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _odata_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Product:
    """One file the station serves."""

    name: str
    product_type: str
    start: datetime
    end: datetime
    published: datetime
    generated: datetime
    platform: tuple[str, str] | None = None  # (short name, serial): ("SENTINEL-1", "A")
    evicted: datetime | None = None
    data: bytes = b""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # what a PRIP station adds: the footprint (GeoJSON), the downlink time (OriginDate), and
    # attributes such as orbitNumber (int: IntegerAttribute) or orbitDirection (str)
    footprint: dict[str, Any] | None = None
    origin: datetime | None = None
    extra: dict[str, str | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = self.data or f"{self.name}\n".encode() * 64

    def attributes(self) -> dict[str, str]:
        """The string attributes, which filters can name."""
        values = {"productType": self.product_type}
        if self.platform is not None:
            values["platformShortName"], values["platformSerialIdentifier"] = self.platform
        values |= {k: v for k, v in self.extra.items() if isinstance(v, str)}
        return values

    def odata(self) -> dict[str, Any]:
        typed = [
            {"@odata.type": "#OData.CSC.StringAttribute", "Name": k, "Value": v}
            for k, v in self.attributes().items()
        ]
        typed += [
            {"@odata.type": "#OData.CSC.IntegerAttribute", "Name": k, "Value": v}
            for k, v in self.extra.items()
            if isinstance(v, int)
        ]
        typed.append(
            {
                "@odata.type": "#OData.CSC.DateTimeOffsetAttribute",
                "Name": "processingDate",
                "Value": _odata_time(self.generated),
            }
        )
        doc: dict[str, Any] = {
            "Id": self.id,
            "Name": self.name,
            "ContentType": "application/octet-stream",
            "ContentLength": len(self.data),
            "PublicationDate": _odata_time(self.published),
            "EvictionDate": _odata_time(self.evicted) if self.evicted else None,
            "ContentDate": {"Start": _odata_time(self.start), "End": _odata_time(self.end)},
            "Checksum": [{"Algorithm": "MD5", "Value": hashlib.md5(self.data).hexdigest().upper()}],
            "Attributes": typed,
        }
        if self.footprint is not None:
            doc["GeoFootprint"] = self.footprint
        if self.origin is not None:
            doc["OriginDate"] = _odata_time(self.origin)
        return doc


def account(url: str, **changes: Any) -> OAuth2Settings:
    """Our OAuth2 settings for the station at ``url`` (``changes`` replace fields)."""
    fields: dict[str, Any] = {
        "token_url": f"{url}/oauth2/token",
        "origin": url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "username": USERNAME,
        "password": PASSWORD,
        "token_authorization": BASIC,
    }
    return OAuth2Settings(**(fields | changes))


class FilterNotUnderstood(ValueError):
    """A ``$filter`` clause the stub cannot evaluate."""


def matcher(text: str) -> Any:
    """A predicate on :class:`Product` for an OData ``$filter`` as rs-server writes it."""
    tests: list[Any] = []
    rest = text
    for kind, pattern in _CLAUSES.items():
        for match in pattern.finditer(rest):
            tests.append(_test(kind, match.groups()))
        rest = pattern.sub(" ", rest)
    if re.sub(r"[()\s]|\band\b", "", rest):
        raise FilterNotUnderstood(f"cannot evaluate {rest.strip()!r} in $filter {text!r}")
    return lambda product: all(test(product) for test in tests)


def _test(kind: str, groups: tuple[str, ...]) -> Any:
    if kind == "attribute":
        name, op, values = groups
        wanted = {v.strip().strip("'") for v in values.split(",")}
        return lambda p: p.attributes().get(name) in wanted
    if kind == "content":
        edge, op, when = groups
        return lambda p: _COMPARE[op](p.start if edge == "Start" else p.end, _time(when))
    if kind == "published_or_equal":
        op, when, _ = groups
        return lambda p: _COMPARE[op + "e"](p.published, _time(when))
    if kind == "published":
        op, when = groups
        return lambda p: _COMPARE[op](p.published, _time(when))
    (part,) = groups
    return lambda p: part in p.name


class Station:
    """The station's products and what it was asked (``searches``, ``downloads``, tokens)."""

    def __init__(self, products: list[Product]) -> None:
        self.products = {p.id: p for p in products}
        self.tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self.searches: list[str] = []  # the $filter of each search
        self.queries: list[dict[str, str]] = []  # each search's whole query ($orderby, $top...)
        self.downloads: list[str] = []
        self.refuse_downloads = False  # answer 401 to every download, fresh token or not
        self.url = ""

    def revoke(self) -> None:
        """Forget every access token issued (refresh tokens stay valid)."""
        self.tokens.clear()

    def add(self, product: Product) -> None:
        self.products[product.id] = product

    def search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        text = query.get("$filter", [""])[0]
        self.searches.append(text)
        self.queries.append({k: v[0] for k, v in query.items()})
        match = matcher(text) if text else (lambda _: True)
        found = sorted(
            (p for p in self.products.values() if match(p)),
            key=lambda p: p.published,
            reverse="desc" in query.get("$orderby", ["PublicationDate desc"])[0],
        )
        skip = int(query.get("$skip", ["0"])[0])
        top = int(query.get("$top", ["1000"])[0])
        return [p.odata() for p in found[skip : skip + top]]


@contextmanager
def serve_station(products: list[Product]) -> Iterator[Station]:
    """Serve a station on 127.0.0.1 (port 0) until the block ends."""
    station = Station(products)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes, media: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, doc: Any) -> None:
            self._answer(status, json.dumps(doc).encode())

        def _authorized(self) -> bool:
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if token not in station.tokens:
                self._json(401, {"detail": "a valid bearer token is required"})
                return False
            return True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if self.path != "/oauth2/token":
                self._json(404, {"detail": "not found"})
                return
            with lock:
                station.token_requests.append(form)
            client = (form.get("client_id"), form.get("client_secret")) == (
                CLIENT_ID,
                CLIENT_SECRET,
            ) and self.headers.get("Authorization") == BASIC
            if form.get("grant_type") == "refresh_token":
                granted = form.get("refresh_token") in station.refresh_tokens
            else:
                granted = form.get("grant_type") == "password" and (
                    form.get("username"),
                    form.get("password"),
                ) == (USERNAME, PASSWORD)
            if not (client and granted):
                self._json(401, {"error": "invalid_grant"})
                return
            token, refresh = uuid.uuid4().hex, uuid.uuid4().hex
            with lock:
                station.tokens.add(token)
                station.refresh_tokens.add(refresh)
            self._json(200, {"access_token": token, "refresh_token": refresh, "expires_in": 3600})

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if not self._authorized():
                return
            if parts.path == "/Products":
                try:
                    found = station.search(parse_qs(parts.query))
                except FilterNotUnderstood as exc:
                    self._json(400, {"detail": str(exc)})
                    return
                self._json(200, {"value": found})
                return
            value = re.fullmatch(r"/Products\(([^)]+)\)/\$value", unquote(parts.path))
            product = station.products.get(value[1]) if value else None
            if station.refuse_downloads:
                self._json(401, {"detail": "this account may not download"})
                return
            if product is None:
                self._json(404, {"detail": "no such product"})
                return
            with lock:
                station.downloads.append(product.id)
            self._answer(200, product.data, "application/octet-stream")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    station.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield station
    finally:
        server.shutdown()
        server.server_close()


def station_env(prefix: str, api_url: str, station_url: str) -> dict[str, str]:
    """The variables of a source ``prefix`` (``AUX_AUXIP``) whose STAC API is ``api_url`` and
    whose assets a station at ``station_url`` serves with its own token."""
    return {
        f"{prefix}_URL": api_url,
        f"{prefix}_ASSET_URL": station_url,
        f"{prefix}_ASSET_TOKEN_URL": f"{station_url}/oauth2/token",
        f"{prefix}_ASSET_CLIENT_ID": CLIENT_ID,
        f"{prefix}_ASSET_CLIENT_SECRET": CLIENT_SECRET,
        f"{prefix}_ASSET_USERNAME": USERNAME,
        f"{prefix}_ASSET_PASSWORD": PASSWORD,
        f"{prefix}_ASSET_TOKEN_AUTHORIZATION": BASIC,
    }


def evicted_product(name: str, product_type: str, start: datetime) -> Product:
    """A Sentinel-1A file of three hours from ``start``, published then and already evicted
    (on 2026-02-01)."""
    end = start + timedelta(hours=3)
    evicted = datetime(2026, 2, 1, tzinfo=UTC)
    return Product(name, product_type, start, end, start, start, ("SENTINEL-1", "A"), evicted)
