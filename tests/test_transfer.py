"""Transfer engine against real loopback HTTP servers with fault injection by path.

A path is ``/<flags>/<name>`` where ``<flags>`` joins fault flags with ``+`` (``ok`` for none),
e.g. ``/cut-once/a.bin`` or ``/cut-once+norange/a.bin``. The body of ``<name>`` is generated.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar
from unittest.mock import Mock

import aiohttp
import certifi
import pytest
from yarl import URL

from aux_assets.auth import StaticAuth
from aux_assets.staging.transfer import (
    TransferEngine,
    TransferError,
    TransferRequest,
    TransferResult,
    _describe,
    _tls_context,
)
from aux_assets.utils.checksums import Checksum
from aux_assets.utils.retry import RetryPolicy
from aux_assets.utils.urls import origin_of, redact_url
from tests.fixtures.servers_required import unavailable

SECRET = "s3cr3t-TOKEN-value"
API_KEY = "k3y-API-value"
SIZE = 200_000
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
T = TypeVar("T")


def content(name: str) -> bytes:
    return random.Random(name).randbytes(SIZE)


def etag(name: str) -> str:
    return '"' + hashlib.sha256(content(name)).hexdigest()[:16] + '"'


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FaultHandler)
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.active = 0
        self.max_active = 0
        self.other_base = ""
        self.thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def headers_for(self, path: str) -> list[dict[str, str]]:
        return [headers for seen_path, headers in self.seen if seen_path == path]

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hanging up are expected
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            server.hits[self.path] += 1
            hit = server.hits[self.path]
            server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            server.active += 1
            server.max_active = max(server.max_active, server.active)
        try:
            self.respond(hit)
        finally:
            with server.lock:
                server.active -= 1

    def respond(self, hit: int) -> None:
        path = self.path.removeprefix("http://files.invalid")  # as a proxy for that host
        _, flag_text, name = path.split("/", 2)
        flags = set(flag_text.split("+"))
        first = hit == 1
        if "404" in flags:
            return self.send(404, b"not here")
        if "500-always" in flags or ("500-once" in flags and first):
            return self.send(500, b"oops")
        if "429-once" in flags and first:
            return self.send(429, b"slow down", {"Retry-After": "1"})
        if "429-date-once" in flags and first:
            when = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
            return self.send(429, b"slow down", {"Retry-After": when})
        if "token" in flags and self.headers.get("Authorization") != "Bearer fresh":
            return self.send(401, b"who are you")
        if "html" in flags:
            return self.send(200, b"<html>Please log in</html>", {"Content-Type": "text/html"})
        redirects = {
            "redirect-other": f"{self.server.other_base}/ok/{name}",
            "redirect-same": f"/ok/{name}",
            "redirect-file": "file:///etc/passwd",
            "redirect-loop": self.path,
        }
        for flag, target in redirects.items():
            if flag in flags:
                return self.send(302, b"", {"Location": target})
        if "slow" in flags:
            time.sleep(0.15)
        if "stall" in flags:
            time.sleep(1.0)
        self.send_file(name, flags, first)

    def send_file(self, name: str, flags: set[str], first: bool) -> None:
        data, start, status = content(name), 0, 200
        headers = {"ETag": etag(name), "Last-Modified": LAST_MODIFIED}
        asked = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if asked and "norange" not in flags and if_range in (None, etag(name), LAST_MODIFIED):
            start, status = int(asked.removeprefix("bytes=").split("-")[0]), 206
            shown = 0 if "badrange" in flags else start
            stop = min(len(data), start + 65536) if "short206" in flags else len(data)
            headers["Content-Range"] = f"bytes {shown}-{stop - 1}/{len(data)}"
            data = data[:stop]
        body = data[start:]
        cut = "cut-always" in flags or ("cut-once" in flags and first)
        self.send(status, body[: len(body) // 2] if cut else body, headers, len(body))

    def send(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/octet-stream", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        if length is not None and length != len(body):
            self.close_connection = True


@dataclass
class Servers:
    main: FaultServer
    other: FaultServer

    def url(self, flags: str, name: str = "a.bin") -> str:
        return f"{self.main.base}/{flags}/{name}"


@pytest.fixture
def servers() -> Iterator[Servers]:
    other = FaultServer()
    main = FaultServer()
    main.other_base = other.base
    yield Servers(main, other)
    main.stop()
    other.stop()


@dataclass
class Sleeps:
    calls: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@dataclass
class RefreshingAuth:
    """Starts with a stale token; ``refresh`` switches to the one the server accepts."""

    origin: str
    renews: bool = True
    token: str = "stale"
    refreshes: int = 0

    def headers_for(self, url: str) -> dict[str, str]:
        if origin_of(url) != self.origin:
            return {}
        return {"Authorization": f"Bearer {self.token}"}

    async def aheaders_for(self, url: str) -> dict[str, str]:
        return self.headers_for(url)

    async def refresh(self) -> bool:
        self.refreshes += 1
        if self.renews:
            self.token = "fresh"
        return self.renews


def fetch_with(
    work: Callable[[TransferEngine], Awaitable[T]], sleeps: Sleeps | None = None, **options: object
) -> T:
    """Run ``work`` with a fresh engine (fast retries, small chunks, recorded sleeps)."""

    async def main() -> T:
        settings: dict[str, object] = {
            "retry": RetryPolicy(attempts=3, backoff_s=0.01),
            "chunk_size": 8192,
            "sleep": sleeps or Sleeps(),
            **options,
        }
        async with TransferEngine(**settings) as engine:  # type: ignore[arg-type]
            return await work(engine)

    return asyncio.run(main())


def fetch(
    request: TransferRequest, sleeps: Sleeps | None = None, **options: object
) -> TransferResult:
    return fetch_with(lambda engine: engine.fetch(request), sleeps, **options)


def fetch_error(
    request: TransferRequest, sleeps: Sleeps | None = None, **options: object
) -> TransferError:
    with pytest.raises(TransferError) as caught:
        fetch(request, sleeps, **options)
    return caught.value


def assert_complete(result: TransferResult, name: str = "a.bin") -> None:
    data = content(name)
    assert result.request.part_path.read_bytes() == data
    assert result.size == len(data)
    assert result.checksum == Checksum("sha256", hashlib.sha256(data).hexdigest())


# --- successful transfers and verification ---------------------------------------------------


def test_plain_download_streams_to_part_file_with_sha256(servers: Servers, tmp_path: Path) -> None:
    part = tmp_path / "deep" / "dir" / "a.bin.part"
    result = fetch(TransferRequest(servers.url("ok"), part))
    assert_complete(result)
    assert (result.attempts, result.resumed, result.bytes_received) == (1, False, SIZE)
    assert servers.main.headers_for("/ok/a.bin")[0]["accept-encoding"] == "identity"


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
@pytest.mark.parametrize("form", ["multihash", "hex"])
def test_expected_checksum_verified(
    servers: Servers, tmp_path: Path, algorithm: str, form: str
) -> None:
    digest = Checksum(algorithm, hashlib.new(algorithm, content("a.bin")).hexdigest())
    text = digest.multihash() if form == "multihash" else digest.hexdigest.upper()
    expected = Checksum.parse(text)
    request = TransferRequest(
        servers.url("ok"), tmp_path / "a.part", expected_size=SIZE, expected_checksum=expected
    )
    result = fetch(request)
    assert result.checksum == digest
    assert result.request.part_path.read_bytes() == content("a.bin")


def test_checksum_mismatch_fails_and_removes_part(servers: Servers, tmp_path: Path) -> None:
    wrong = Checksum("md5", "0" * 32)
    request = TransferRequest(servers.url("ok"), tmp_path / "a.part", expected_checksum=wrong)
    error = fetch_error(request)
    actual = hashlib.md5(content("a.bin")).hexdigest()
    assert f"checksum mismatch: expected md5 {'0' * 32}, got {actual}" in str(error)
    assert not request.part_path.exists()


def test_announced_size_mismatch_fails_fast(servers: Servers, tmp_path: Path) -> None:
    sleeps = Sleeps()
    request = TransferRequest(servers.url("ok"), tmp_path / "a.part", expected_size=SIZE + 1)
    error = fetch_error(request, sleeps)
    assert "size mismatch" in str(error) and str(SIZE) in str(error)
    assert not request.part_path.exists()
    assert servers.main.hits["/ok/a.bin"] == 1 and sleeps.calls == []


# --- retries and resume ------------------------------------------------------------------------


def test_cut_body_resumes_with_range_and_if_range(servers: Servers, tmp_path: Path) -> None:
    sleeps = Sleeps()
    result = fetch(TransferRequest(servers.url("cut-once"), tmp_path / "a.part"), sleeps)
    assert_complete(result)
    assert (result.attempts, result.resumed) == (2, True)
    assert result.bytes_received == SIZE  # the resumed request only fetched the rest
    first, second = servers.main.headers_for("/cut-once/a.bin")
    assert "range" not in first
    offset = int(second["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= SIZE // 2
    assert second["if-range"] == etag("a.bin")
    assert len(sleeps.calls) == 1


def test_resume_starts_exactly_where_the_cut_was_with_default_chunks(
    servers: Servers, tmp_path: Path
) -> None:
    result = fetch(
        TransferRequest(servers.url("cut-once"), tmp_path / "a.part"), chunk_size=1 << 20
    )
    assert_complete(result)
    assert result.resumed and result.bytes_received == SIZE
    second = servers.main.headers_for("/cut-once/a.bin")[1]
    assert second["range"] == f"bytes={SIZE // 2}-"  # nothing received was thrown away


def test_a_short_206_is_never_taken_for_the_whole_file(servers: Servers, tmp_path: Path) -> None:
    """A server answering a resume with less than the rest: keep resuming, never stop short."""
    request = TransferRequest(servers.url("cut-once+short206"), tmp_path / "a.part")
    result = fetch(request, retry=RetryPolicy(attempts=20, backoff_s=0.0))
    assert_complete(result)
    assert result.attempts > 2
    short = fetch_error(
        TransferRequest(servers.url("cut-once+short206", "b.bin"), tmp_path / "b.part"),
        retry=RetryPolicy(attempts=2, backoff_s=0.0),
    )
    assert "truncated" in str(short) and not (tmp_path / "b.part").exists()


def test_range_ignored_restarts_from_zero(servers: Servers, tmp_path: Path) -> None:
    request = TransferRequest(servers.url("cut-once+norange"), tmp_path / "a.part")
    result = fetch(request)
    assert_complete(result)
    assert (result.attempts, result.resumed) == (2, False)
    assert result.bytes_received > SIZE
    assert request.meter.count == SIZE  # progress takes back the bytes thrown away
    assert "range" in servers.main.headers_for("/cut-once+norange/a.bin")[1]


def test_wrong_content_range_restarts_from_zero(servers: Servers, tmp_path: Path) -> None:
    request = TransferRequest(servers.url("cut-once+badrange"), tmp_path / "a.part")
    result = fetch(request)
    assert_complete(result)
    assert request.meter.count == SIZE
    assert (result.attempts, result.resumed) == (3, False)
    assert "range" not in servers.main.headers_for("/cut-once+badrange/a.bin")[2]


def test_body_cut_every_time_gives_up(servers: Servers, tmp_path: Path) -> None:
    sleeps = Sleeps()
    request = TransferRequest(servers.url("cut-always"), tmp_path / "a.part")
    error = fetch_error(request, sleeps)
    assert "gave up after 3 attempts" in str(error)
    assert not request.part_path.exists()
    assert servers.main.hits["/cut-always/a.bin"] == 3 and len(sleeps.calls) == 2


def test_server_error_retried_with_capped_backoff(servers: Servers, tmp_path: Path) -> None:
    sleeps = Sleeps()
    result = fetch(TransferRequest(servers.url("500-once"), tmp_path / "a.part"), sleeps)
    assert_complete(result)
    assert result.attempts == 2

    sleeps = Sleeps()
    policy = RetryPolicy(attempts=4, backoff_s=1.0, max_backoff_s=1.5)
    request = TransferRequest(servers.url("500-always"), tmp_path / "b.part")
    error = fetch_error(request, sleeps, retry=policy)
    assert "HTTP 500" in str(error) and "gave up after 4 attempts" in str(error)
    assert 0.5 <= sleeps.calls[0] <= 1.0
    assert all(0.75 <= delay <= 1.5 for delay in sleeps.calls[1:])
    assert len(sleeps.calls) == 3 and not request.part_path.exists()


def test_429_honours_retry_after_seconds(servers: Servers, tmp_path: Path) -> None:
    sleeps = Sleeps()
    result = fetch(TransferRequest(servers.url("429-once"), tmp_path / "a.part"), sleeps)
    assert_complete(result)
    assert result.attempts == 2
    assert sleeps.calls == [pytest.approx(1.0)]


def test_429_retry_after_date_is_capped(servers: Servers, tmp_path: Path) -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=2, max_retry_after_s=5.0)
    result = fetch(
        TransferRequest(servers.url("429-date-once"), tmp_path / "a.part"), sleeps, retry=policy
    )
    assert_complete(result)
    assert sleeps.calls == [pytest.approx(5.0)]


def test_connection_refused_retried_then_reported(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    request = TransferRequest(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.part")
    error = fetch_error(request, sleeps)
    assert "ConnectError" in str(error) and "gave up after 3 attempts" in str(error)
    assert len(sleeps.calls) == 2 and not request.part_path.exists()


def test_read_timeout_retried(servers: Servers, tmp_path: Path) -> None:
    request = TransferRequest(servers.url("stall"), tmp_path / "a.part")
    error = fetch_error(request, retry=RetryPolicy(attempts=2), read_timeout=0.2)
    assert "ReadTimeout" in str(error) and "gave up after 2 attempts" in str(error)


def test_not_found_fails_fast(servers: Servers, tmp_path: Path) -> None:
    sleeps = Sleeps()
    request = TransferRequest(servers.url("404"), tmp_path / "a.part")
    error = fetch_error(request, sleeps)
    assert "HTTP 404" in str(error)
    assert servers.main.hits["/404/a.bin"] == 1 and sleeps.calls == []
    assert not request.part_path.exists()


def test_html_page_refused_without_retry(servers: Servers, tmp_path: Path) -> None:
    request = TransferRequest(
        servers.url("html"), tmp_path / "a.part", expected_media_type="application/zip"
    )
    error = fetch_error(request)
    assert "answered with an HTML page instead of the file" in str(error)
    assert servers.main.hits["/html/a.bin"] == 1 and not request.part_path.exists()

    wanted = TransferRequest(
        servers.url("html"), tmp_path / "p.part", expected_media_type="text/html"
    )
    assert fetch(wanted).request.part_path.read_bytes() == b"<html>Please log in</html>"


# --- credentials ---------------------------------------------------------------------------------


def test_401_refreshes_token_once(servers: Servers, tmp_path: Path) -> None:
    auth = RefreshingAuth(origin_of(servers.main.base))
    sleeps = Sleeps()
    result = fetch(TransferRequest(servers.url("token"), tmp_path / "a.part", auth=auth), sleeps)
    assert_complete(result)
    assert (result.attempts, auth.refreshes) == (2, 1)
    tokens = [h["authorization"] for h in servers.main.headers_for("/token/a.bin")]
    assert tokens == ["Bearer stale", "Bearer fresh"]


def test_401_without_new_credentials_fails(servers: Servers, tmp_path: Path) -> None:
    auth = RefreshingAuth(origin_of(servers.main.base), renews=False)
    request = TransferRequest(servers.url("token"), tmp_path / "a.part", auth=auth)
    error = fetch_error(request)
    assert "HTTP 401" in str(error) and auth.refreshes == 1
    assert servers.main.hits["/token/a.bin"] == 1 and not request.part_path.exists()

    static = StaticAuth(origin_of(servers.main.base), token=SECRET)
    error = fetch_error(TransferRequest(servers.url("token"), tmp_path / "b.part", auth=static))
    assert "HTTP 401" in str(error) and SECRET not in str(error) + repr(error)


def test_a_401_renewal_gets_its_resend_even_on_the_last_attempt(
    servers: Servers, tmp_path: Path
) -> None:
    """The 401 rule (auth.renewing) sits outside the retry loop: renewed credentials are always
    tried once, whatever the retries spent before."""
    auth = RefreshingAuth(origin_of(servers.main.base))
    request = TransferRequest(servers.url("token"), tmp_path / "a.part", auth=auth)
    result = fetch(request, retry=RetryPolicy(attempts=1))
    assert_complete(result)
    assert (result.attempts, auth.refreshes, servers.main.hits["/token/a.bin"]) == (2, 1, 2)


@dataclass
class BrokenRefresh(RefreshingAuth):
    """A refresh that crashes with a message quoting a secret."""

    async def refresh(self) -> bool:
        self.refreshes += 1
        raise RuntimeError(f"token endpoint answered client_secret={SECRET}")


def test_a_crashing_refresh_fails_the_file_naming_only_the_error_type(
    servers: Servers, tmp_path: Path
) -> None:
    auth = BrokenRefresh(origin_of(servers.main.base))
    request = TransferRequest(servers.url("token"), tmp_path / "a.part", auth=auth)
    error = fetch_error(request)
    assert error.reason == "credential refresh failed: RuntimeError"
    assert SECRET not in str(error) + repr(error) and auth.refreshes == 1
    assert not request.part_path.exists()


def test_redirect_to_other_origin_drops_credentials(servers: Servers, tmp_path: Path) -> None:
    auth = StaticAuth(origin_of(servers.main.base), api_key=API_KEY, token=SECRET)
    result = fetch(TransferRequest(servers.url("redirect-other"), tmp_path / "a.part", auth=auth))
    assert_complete(result)
    (sent,) = servers.main.headers_for("/redirect-other/a.bin")
    assert sent["authorization"] == f"Bearer {SECRET}" and sent["x-api-key"] == API_KEY
    (received,) = servers.other.headers_for("/ok/a.bin")
    assert "authorization" not in received and "x-api-key" not in received
    assert SECRET not in str(received) and API_KEY not in str(received)


def test_redirect_within_origin_keeps_credentials(servers: Servers, tmp_path: Path) -> None:
    auth = StaticAuth(origin_of(servers.main.base), api_key=API_KEY)
    fetch(TransferRequest(servers.url("redirect-same"), tmp_path / "a.part", auth=auth))
    (received,) = servers.main.headers_for("/ok/a.bin")
    assert received["x-api-key"] == API_KEY


def test_href_escapes_reach_the_server_byte_for_byte(servers: Servers, tmp_path: Path) -> None:
    # A signed query (S3 presigned URL style) must not be re-encoded or decoded on the way.
    signed = "a.bin?X-Amz-Credential=AKIA%2F20260101%2Fs3%2Faws4_request&X-Amz-Signature=ab%3D%3D"
    assert_complete(fetch(TransferRequest(servers.url("ok", signed), tmp_path / "a.part")), signed)
    assert servers.main.seen[-1][0] == f"/ok/{signed}"
    # Characters a URL may not hold are percent-encoded, the way a browser sends them.
    fetch(TransferRequest(servers.url("ok", "S1 file é.bin"), tmp_path / "b.part"))
    assert servers.main.seen[-1][0] == "/ok/S1%20file%20%C3%A9.bin"


def test_proxy_from_the_environment_and_no_proxy(
    servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", servers.other.base)  # "other" answers as the proxy
    monkeypatch.setenv("NO_PROXY", "localhost")
    result = fetch(TransferRequest("http://files.invalid/ok/a.bin", tmp_path / "a.part"))
    assert_complete(result)
    assert [path for path, _ in servers.other.seen] == ["http://files.invalid/ok/a.bin"]

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert_complete(fetch(TransferRequest(servers.url("ok"), tmp_path / "b.part")))
    assert len(servers.other.seen) == 1 and servers.main.hits["/ok/a.bin"] == 1


def test_a_netrc_entry_does_not_clash_with_our_credentials(
    servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password other-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    auth = StaticAuth(origin_of(servers.main.base), token=SECRET)
    assert_complete(fetch(TransferRequest(servers.url("ok"), tmp_path / "a.part", auth=auth)))
    (sent,) = servers.main.headers_for("/ok/a.bin")
    assert sent["authorization"] == f"Bearer {SECRET}"


def test_redirect_to_file_and_redirect_loops_refused(servers: Servers, tmp_path: Path) -> None:
    request = TransferRequest(
        servers.url("redirect-file"), tmp_path / "a.part", file_roots=(tmp_path,)
    )
    assert "redirect to file:///etc/passwd refused" in str(fetch_error(request))
    assert not request.part_path.exists()

    loop = TransferRequest(servers.url("redirect-loop"), tmp_path / "b.part")
    assert "more than 5 redirects" in str(fetch_error(loop))
    assert servers.main.hits["/redirect-loop/a.bin"] == 6


def test_secrets_never_in_messages_or_reprs(servers: Servers, tmp_path: Path) -> None:
    url = f"http://user:{SECRET}@127.0.0.1:{servers.main.server_address[1]}/404/a.bin?k={API_KEY}"
    auth = StaticAuth(origin_of(url), api_key=API_KEY, token=SECRET)
    request = TransferRequest(url, tmp_path / "a.part", auth=auth)
    error = fetch_error(request)
    assert str(error) == f"{servers.main.base}/404/a.bin: HTTP 404 Not Found"
    for text in (str(error), repr(error), repr(request), repr(auth), repr(error.args)):
        assert SECRET not in text and API_KEY not in text
    assert "***" in repr(auth)


# --- concurrency, batches, local files ---------------------------------------------------------


def test_pool_limit_bounds_concurrency(servers: Servers, tmp_path: Path) -> None:
    requests = [
        TransferRequest(servers.url("slow", f"f{i}.bin"), tmp_path / f"f{i}.part", pool="src")
        for i in range(6)
    ]
    results = fetch_with(lambda engine: engine.fetch_all(requests), limits={"src": 2})
    for i, result in enumerate(results):
        assert isinstance(result, TransferResult)
        assert_complete(result, f"f{i}.bin")
    assert servers.main.max_active == 2


def test_fetch_all_reports_each_failure_in_order(servers: Servers, tmp_path: Path) -> None:
    requests = [
        TransferRequest(servers.url("ok"), tmp_path / "a.part"),
        TransferRequest(servers.url("404"), tmp_path / "b.part"),
        TransferRequest(servers.url("ok", "c.bin"), tmp_path / "c.part"),
    ]
    first, second, third = fetch_with(lambda engine: engine.fetch_all(requests))
    assert isinstance(first, TransferResult) and isinstance(third, TransferResult)
    assert isinstance(second, TransferError) and "HTTP 404" in str(second)
    assert_complete(third, "c.bin")
    assert not (tmp_path / "b.part").exists()


def test_file_url_read_only_when_allowed(tmp_path: Path) -> None:
    source = tmp_path / "source dir" / "a.bin"
    source.parent.mkdir()
    source.write_bytes(content("a.bin"))
    result = fetch(
        TransferRequest(source.as_uri(), tmp_path / "out" / "a.part", file_roots=(tmp_path,))
    )
    assert_complete(result)
    assert (result.attempts, result.bytes_received) == (1, SIZE)

    refused = TransferRequest(source.as_uri(), tmp_path / "never" / "a.part")
    assert "only read from local sources" in str(fetch_error(refused))
    assert not (tmp_path / "never").exists()


def test_file_url_wrong_size_and_missing_file(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"12345")
    wrong = TransferRequest(
        source.as_uri(), tmp_path / "a.part", expected_size=4, file_roots=(tmp_path,)
    )
    assert "size mismatch: expected 4 bytes, 5 read" in str(fetch_error(wrong))
    assert not wrong.part_path.exists()

    missing = TransferRequest(
        (tmp_path / "nope").as_uri(), tmp_path / "b.part", file_roots=(tmp_path,)
    )
    assert "local I/O failed" in str(fetch_error(missing))
    assert not missing.part_path.exists()


# --- small pure helpers ---------------------------------------------------------------------------


def test_part_path_must_end_with_part(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.part"):
        TransferRequest("https://example.org/a.bin", tmp_path / "a.bin")


def test_unsupported_scheme_refused(tmp_path: Path) -> None:
    error = fetch_error(TransferRequest("ftp://example.org/a.bin", tmp_path / "a.part"))
    assert "unsupported scheme 'ftp'" in str(error)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Example.ORG/a?b=c", "https://example.org"),
        ("https://example.org:443/a", "https://example.org"),
        ("http://example.org:80/a", "http://example.org"),
        ("http://u:p@example.org:8080/a", "http://example.org:8080"),
        ("HTTPS://[::1]:8443/", "https://[::1]:8443"),
    ],
)
def test_origin_of(url: str, origin: str) -> None:
    assert origin_of(url) == origin


def test_redact_url() -> None:
    assert redact_url("https://u:pw@h.org:8443/p/a.zip?token=x#f") == "https://h.org:8443/p/a.zip"
    assert redact_url("file:///data/a.zip") == "file:///data/a.zip"


def test_static_auth_scoped_to_its_origin() -> None:
    auth = StaticAuth("https://data.example.org", api_key=API_KEY, token=SECRET)
    expected = {"x-api-key": API_KEY, "Authorization": f"Bearer {SECRET}"}
    assert auth.headers_for("https://DATA.example.org:443/x") == expected
    for other in (
        "http://data.example.org/x",
        "https://data.example.org:8443/x",
        "https://evil.example.org/x",
    ):
        assert auth.headers_for(other) == {}
    assert asyncio.run(auth.refresh()) is False


def test_a_malformed_response_is_described_without_its_url() -> None:
    info = Mock(real_url=URL("https://aux.example/f.zip?X-Amz-Signature=s1gnature"))
    exc = aiohttp.ClientResponseError(info, (), status=400, message="Invalid header")
    assert "s1gnature" in str(exc)  # what aiohttp itself would have shown
    described = _describe(exc, 10)
    assert described == "ClientResponseError: 400, Invalid header (after 10 bytes)"


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("openssl is not installed (it makes the TLS test's certificate)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1"
    san = "subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [openssl, *request.split(), "-addext", san, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_trusts_ssl_cert_file_and_refuses_an_unknown_ca_at_once(
    tls_cert: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls_cert
    server = FaultServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    url = f"https://127.0.0.1:{server.server_address[1]}/ok/a.bin"
    try:
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        sleeps = Sleeps()
        error = fetch_error(TransferRequest(url, tmp_path / "a.part"), sleeps)
        assert "certificate verify failed" in error.reason and "SSL_CERT_FILE" in error.reason
        assert sleeps.calls == []  # not retried

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert_complete(fetch(TransferRequest(url, tmp_path / "b.part")))
    finally:
        server.stop()


def test_tls_trusts_what_httpx_trusts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    bundle = ssl.create_default_context(cafile=certifi.where())
    assert _tls_context().cert_store_stats() == bundle.cert_store_stats()
    assert _tls_context() is _tls_context()  # made once
