"""A fault-injecting HTTP file server on 127.0.0.1 (port 0) for the fault and abuse suite.

``GET /files/<rel>`` serves the files under ``root`` with a strong ETag and ``Range`` /
``If-Range`` support (206). Whether a request is faulty is drawn from an RNG seeded with (seed,
path, hit number), with probability ``rate``, so it does not depend on thread scheduling; the
faulty requests take the kinds in turn, so that every kind occurs:

- ``cut``: ``Content-Length`` announces the whole body, part of it is sent, the connection closes;
- ``500``, ``503``: server errors;
- ``429``: Too Many Requests with ``Retry-After: <retry_after_s>``;
- ``401``: the bearer token presented is refused for this path from now on (once per path, so a
  client that renews its token then succeeds);
- ``stall``: part of the body, then silence for ``stall_s`` (longer than the client's read
  timeout), then the connection closes;
- ``html``: an HTML login page with status 200 instead of the file.

``POST /token`` is an OAuth2 client-credentials endpoint; with ``require_token`` every file request
needs a bearer token it issued. ``redirects`` maps a path to the ``Location`` of a 302.
Every request is logged (:class:`Hit`) with its headers, status and fault.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

FAULTS: tuple[str, ...] = ("cut", "500", "503", "429", "401", "stall", "html")
TRANSIENT_FAULTS: tuple[str, ...] = ("cut", "500", "503", "429", "401")
CLIENT_ID = "aux-assets-faults"
CLIENT_SECRET = "fault-client-s3cr3t"
HTML_PAGE = b"<!DOCTYPE html><html><body><h1>Sign in</h1><form>...</form></body></html>"
_CHUNK = 16 * 1024


@dataclass(frozen=True)
class Hit:
    """One request as the server saw and answered it."""

    method: str
    path: str
    headers: dict[str, str]
    status: int
    fault: str | None
    at: float  # time.monotonic() when it arrived


@dataclass
class _State:
    hits: Counter[str] = field(default_factory=Counter)
    log: list[Hit] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    refused: dict[str, set[str]] = field(default_factory=dict)  # path -> tokens refused there
    had_401: set[str] = field(default_factory=set)


class FaultServer(ThreadingHTTPServer):
    """The server; attributes are its knobs, :attr:`state` its logs. Use as a context manager."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 drops concurrent connects (1 s SYN retransmits)

    def __init__(
        self,
        root: Path,
        *,
        rate: float = 0.2,
        seed: int = 0,
        faults: tuple[str, ...] = FAULTS,
        require_token: bool = False,
        stall_s: float = 1.5,
        retry_after_s: int = 1,
        throttle_s: float = 0.0,
        redirects: dict[str, str] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self.rate = rate
        self.seed = seed
        self.faults = faults if require_token else tuple(f for f in faults if f != "401")
        self.require_token = require_token
        self.stall_s = stall_s
        self.retry_after_s = retry_after_s
        self.throttle_s = throttle_s  # sleep between 16 KiB chunks of a body
        self.redirects = dict(redirects or {})
        self.lock = threading.Lock()
        self.state = _State()
        self._turn = 0
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
        self.server_close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    def url(self, rel: str) -> str:
        """The URL of ``root / rel``."""
        return f"{self.base}/files/{rel}"

    def file_hits(self) -> list[Hit]:
        with self.lock:
            return [h for h in self.state.log if h.path.startswith("/files/")]

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hanging up are expected
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def draw(self, path: str) -> str | None:
        """The fault for this request of ``path`` (None: a healthy answer)."""
        with self.lock:
            self.state.hits[path] += 1
            rng = random.Random(f"{self.seed}:{path}:{self.state.hits[path]}")
            if not self.faults or rng.random() >= self.rate:
                return None
            kind: str | None = self.faults[self._turn % len(self.faults)]
            self._turn += 1
            if kind == "401" and path in self.state.had_401:
                kind = self.faults[self._turn % len(self.faults)] if len(self.faults) > 1 else None
                self._turn += 1
            if kind == "401":
                self.state.had_401.add(path)
            return kind

    def issue_token(self) -> str:
        token = f"tok-{secrets.token_hex(12)}"
        with self.lock:
            self.state.tokens.add(token)
            self.state.token_requests += 1
        return token

    def token_ok(self, path: str, authorization: str | None) -> str | None:
        """The bearer token if it is valid for ``path``, else None."""
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self.lock:
            if token in self.state.tokens and token not in self.state.refused.get(path, set()):
                return token
        return None

    def refuse(self, path: str, token: str) -> None:
        with self.lock:
            self.state.refused.setdefault(path, set()).add(token)


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _log(self, status: int, fault: str | None, at: float) -> None:
        hit = Hit(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            status,
            fault,
            at,
        )
        with self.server.lock:
            self.server.state.log.append(hit)
            if fault is not None:
                self.server.state.faults[fault] += 1

    def _head(self, status: int, headers: dict[str, str], length: int) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _simple(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        ctype = "text/html" if body.startswith(b"<!DOCTYPE") else "text/plain"
        self._head(status, {"Content-Type": ctype, **(headers or {})}, len(body))
        self.wfile.write(body)

    def do_POST(self) -> None:
        at = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if urlsplit(self.path).path != "/token":
            self._log(404, None, at)
            return self._simple(404, b"not found")
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            self._log(401, None, at)
            body = json.dumps({"error": "invalid_client"}).encode()
            return self._simple(401, body, {"Content-Type": "application/json"})
        answer = {"access_token": self.server.issue_token(), "token_type": "Bearer"}
        self._log(200, None, at)
        body = json.dumps({**answer, "expires_in": 300}).encode()
        self._simple(200, body, {"Content-Type": "application/json"})

    def do_GET(self) -> None:
        at = time.monotonic()
        server = self.server
        path = urlsplit(self.path).path
        if path in server.redirects:
            self._log(302, None, at)
            return self._simple(302, b"", {"Location": server.redirects[path]})
        target = (server.root / unquote(path.removeprefix("/files/"))).resolve()
        if not path.startswith("/files/") or server.root not in target.parents:
            self._log(404, None, at)
            return self._simple(404, b"not found")
        token = self.server.token_ok(path, self.headers.get("Authorization"))
        if server.require_token and token is None:
            self._log(401, None, at)
            return self._simple(401, b"invalid token", {"WWW-Authenticate": "Bearer"})
        fault = server.draw(path)
        if fault is not None and fault not in {"cut", "stall"}:
            self._log(int(fault) if fault.isdigit() else 200, fault, at)
            if fault == "401":
                assert token is not None
                server.refuse(path, token)
                return self._simple(401, b"token expired", {"WWW-Authenticate": "Bearer"})
            if fault == "429":
                return self._simple(429, b"slow down", {"Retry-After": str(server.retry_after_s)})
            if fault == "html":
                return self._simple(200, HTML_PAGE)
            return self._simple(int(fault), b"server trouble")
        if not target.is_file():
            self._log(404, None, at)
            return self._simple(404, b"not found")
        self._send_file(target.read_bytes(), fault, at)

    def _send_file(self, data: bytes, fault: str | None, at: float) -> None:
        etag = etag_of(data)
        headers = {"Content-Type": "application/octet-stream", "ETag": etag}
        start, status = 0, 200
        asked, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        if asked and asked.startswith("bytes=") and if_range in (None, etag):
            first = asked.removeprefix("bytes=").split("-")[0]
            start = int(first) if first.isdigit() else 0
            if start >= len(data):
                self._log(416, fault, at)
                headers["Content-Range"] = f"bytes */{len(data)}"
                return self._simple(416, b"", headers)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if len(body) < 2:
            fault = None  # nothing to cut
        self._log(status, fault, at)
        self._head(status, headers, len(body))
        if fault is not None:
            rng = random.Random(f"{self.server.seed}:{self.path}:{start}:cut")
            self.wfile.write(body[: rng.randint(1, len(body) - 1)])
            self.wfile.flush()
            if fault == "stall":
                time.sleep(self.server.stall_s)
            self.close_connection = True
            return
        for offset in range(0, len(body), _CHUNK):
            self.wfile.write(body[offset : offset + _CHUNK])
            if self.server.throttle_s:
                self.wfile.flush()
                time.sleep(self.server.throttle_s)
