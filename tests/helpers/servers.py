"""Loopback HTTP servers for tests: static files and a minimal paging STAC API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Handler = Callable[[BaseHTTPRequestHandler], None]


class CountingServer(ThreadingHTTPServer):
    """A threading HTTP server that knows how many client connections are open."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._count_lock = threading.Lock()
        self.open_connections = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            self.open_connections += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:  # once the client closed the connection
        super().shutdown_request(request)
        with self._count_lock:
            self.open_connections -= 1

    def wait_closed(self, timeout_s: float = 5.0) -> bool:
        """Whether every client connection is closed within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.open_connections


@contextmanager
def serve(handler: Handler) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serve ``handler`` on 127.0.0.1, port 0; yield (base URL, request log)."""
    with serve_counting(handler) as (url, log, _):
        yield url, log


@contextmanager
def serve_counting(handler: Handler) -> Iterator[tuple[str, list[dict[str, Any]], CountingServer]]:
    """:func:`serve`, also yielding the server (its open connections)."""
    log: list[dict[str, Any]] = []

    class _H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            log.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
            handler(self)

        do_GET = do_POST = do_HEAD = _handle

    server = CountingServer(("127.0.0.1", 0), _H)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log, server
    finally:
        server.shutdown()
        server.server_close()


def send(
    h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "application/json"
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def file_handler(root: Path, corrupt: set[str] | None = None) -> Handler:
    """Serve files under ``root`` at ``/files/<rel>``; paths in ``corrupt`` get flipped bytes."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        rel = h.path.split("?")[0].removeprefix("/files/")
        path = (root / rel).resolve()
        if not path.is_file() or root.resolve() not in path.parents:
            send(h, 404, b"not found", "text/plain")
            return
        data = path.read_bytes()
        if corrupt and rel in corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        send(h, 200, data, "application/octet-stream")

    return handle


def slow_file_handler(root: Path, bytes_per_s: int, chunk: int = 16 << 10) -> Handler:
    """Serve files under ``root`` at ``/files/<rel>`` at about ``bytes_per_s`` per connection,
    in ``chunk``-byte writes."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        path = root / h.path.split("?")[0].removeprefix("/files/")
        if not path.is_file():
            send(h, 404, b"not found", "text/plain")
            return
        data = path.read_bytes()
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for start in range(0, len(data), chunk):
            h.wfile.write(data[start : start + chunk])
            h.wfile.flush()
            time.sleep(chunk / bytes_per_s)

    return handle


def stac_api_handler(features: list[dict[str, Any]], page_size: int = 2) -> Handler:
    """A minimal STAC API: landing page, conformance, POST /search paged with a token.

    It ignores filters (the tests check what was sent, not server-side filtering).
    """

    def handle(h: BaseHTTPRequestHandler) -> None:
        host = f"http://{h.headers['Host']}"
        path = h.path.split("?")[0]
        if path in {"/", ""}:
            send(
                h,
                200,
                json.dumps(
                    {
                        "type": "Catalog",
                        "id": "test",
                        "stac_version": "1.1.0",
                        "description": "t",
                        "conformsTo": [
                            "https://api.stacspec.org/v1.0.0/core",
                            "https://api.stacspec.org/v1.0.0/item-search",
                            "https://api.stacspec.org/v1.0.0/item-search#filter",
                            "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
                            "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
                        ],
                        "links": [
                            {"rel": "self", "href": f"{host}/"},
                            {"rel": "root", "href": f"{host}/"},
                            {
                                "rel": "search",
                                "href": f"{host}/search",
                                "method": "POST",
                                "type": "application/geo+json",
                            },
                        ],
                    }
                ).encode(),
            )
            return
        if path == "/search" and h.command == "POST":
            length = int(h.headers.get("Content-Length", 0))
            body = json.loads(h.rfile.read(length) or b"{}")
            start = int(body.get("token", 0))
            page = features[start : start + page_size]
            links = []
            if start + page_size < len(features):
                links.append(
                    {
                        "rel": "next",
                        "href": f"{host}/search",
                        "method": "POST",
                        "body": {**body, "token": str(start + page_size)},
                        "merge": False,
                    }
                )
            send(
                h,
                200,
                json.dumps(
                    {
                        "type": "FeatureCollection",
                        "features": page,
                        "links": links,
                    }
                ).encode(),
                "application/geo+json",
            )
            return
        send(h, 500, b'{"code":"Boom","description":"server exploded"}')

    return handle


class ConnectionMeter:
    """Wraps a handler: each request is held ``delay_s`` before it is answered; records how many
    requests were in flight at most, and when each file request started and ended."""

    def __init__(self, handler: Handler, delay_s: float) -> None:
        self._handler = handler
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.spans: list[tuple[str, float, float]] = []

    def __call__(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        started = time.monotonic()
        try:
            time.sleep(self._delay_s)
            self._handler(h)
        finally:
            with self._lock:
                self.in_flight -= 1
                self.spans.append((h.path, started, time.monotonic()))
