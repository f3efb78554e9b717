"""Streaming downloads over HTTP(S) and ``file://``: bounded pools, retries, resume, verification.

Bytes go to a ``.part`` file while they are hashed; the caller renames it once the transfer
succeeded. On any failure the ``.part`` file is removed and a :class:`TransferError` names the
redacted URL and the reason, never a credential. A ``file://`` URL is read only inside the
folders its request names (symlinks resolved right before opening); a file whose size is not
known is bounded in bytes, and every transfer (all its attempts) in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlsplit

import aiohttp
import certifi
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from aux_assets import tracing
from aux_assets.auth import Auth, AuthError, Unauthorized, renewing
from aux_assets.settings import (
    DEFAULT_MAX_UNSIZED_BYTES,
    DEFAULT_TRANSFER_TIMEOUT_S,
    MAX_UNSIZED_BYTES_ENV,
    TRANSFER_TIMEOUT_ENV,
)
from aux_assets.staging.progress import ByteMeter
from aux_assets.utils.checksums import Checksum, Hasher, new_hasher
from aux_assets.utils.retry import RetryPolicy, retry_after
from aux_assets.utils.tasks import run_all
from aux_assets.utils.text import shorten
from aux_assets.utils.urls import LocalURLError, confined_path, redact_url, strip_userinfo

_REMOTE_SCHEMES = frozenset({"http", "https"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"  # reserved characters and '%': left as written
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_TRANSIENT = (
    aiohttp.ClientConnectionError,  # resets, refused, socket timeouts
    aiohttp.ClientPayloadError,  # a body cut short
    aiohttp.ClientResponseError,  # a malformed response
    TimeoutError,
)


class TransferError(Exception):
    """A transfer that failed; ``url`` is redacted and ``reason`` says why."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(redact_url(url), reason)
        self.url: str = self.args[0]
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


@dataclass(frozen=True, repr=False)
class TransferRequest:
    """One file to fetch from ``url`` into ``part_path`` (which must end with ``.part``); a
    ``file://`` url only from inside the folders ``file_roots`` (none: no ``file://``). Each
    chunk's length is added to ``meter`` as it arrives (progress; several requests may share
    one)."""

    url: str
    part_path: Path
    expected_size: int | None = None
    expected_checksum: Checksum | None = None
    pool: str = "default"
    file_roots: tuple[Path, ...] = ()
    auth: Auth | None = None
    expected_media_type: str | None = None
    meter: ByteMeter = field(default_factory=ByteMeter, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "part_path", Path(self.part_path))
        if self.part_path.suffix != ".part":
            raise ValueError(f"part_path {str(self.part_path)!r} must end with '.part'")

    def __repr__(self) -> str:
        return (
            f"TransferRequest(url={redact_url(self.url)!r}, part_path={str(self.part_path)!r}, "
            f"pool={self.pool!r})"
        )


@dataclass(frozen=True)
class TransferResult:
    """A verified ``.part`` file: its size and the checksum computed while streaming."""

    request: TransferRequest
    size: int
    checksum: Checksum
    attempts: int
    resumed: bool
    seconds: float
    bytes_received: int


class _Retry(Exception):
    """A transient failure; ``delay`` (seconds) overrides the backoff when the server set one."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class _PartFile:
    """The ``.part`` file being written and the running digest of its bytes.

    Every file operation (making the folder, opening, writing, hashing, fsync, closing) runs in
    a worker thread, so a small file costs the event loop a single thread hop."""

    def __init__(self, path: Path, algorithm: str) -> None:
        self._path = path
        self._file: BinaryIO | None = None
        self._opened = False
        self._algorithm = algorithm
        self._hasher: Hasher = new_hasher(algorithm)
        self.size = 0
        self._synced = False

    async def write(self, chunks: list[bytes], *, last: bool = False) -> None:
        """Append and hash ``chunks`` off the event loop (no copy is made on the loop); with
        ``last``, also fsync and close the file, in the same worker-thread call."""
        await asyncio.to_thread(self._append, chunks, last)

    def _append(self, chunks: list[bytes], last: bool = False) -> None:
        file = self._open()
        self._synced = False
        for chunk in chunks:
            file.write(chunk)
            self._hasher.update(chunk)
            self.size += len(chunk)
        if last:
            self._sync()

    def _open(self) -> BinaryIO:
        """The open file: created (empty) the first time, appended to after a ``last`` write."""
        if self._file is None:
            if not self._opened:
                self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._path.open("ab" if self._opened else "wb")
            self._opened = True
        return self._file

    def reset(self) -> None:
        """Start again from zero bytes."""
        file = self._open()
        file.seek(0)
        file.truncate()
        self._hasher = new_hasher(self._algorithm)
        self.size = 0
        self._synced = False

    async def sync(self) -> None:
        """Flush, fsync and close the file (nothing to do after a ``last`` write)."""
        if not self._synced:
            await asyncio.to_thread(self._sync)

    def _sync(self) -> None:
        file = self._open()
        file.flush()
        os.fsync(file.fileno())
        self.close()
        self._synced = True

    def checksum(self) -> Checksum:
        return Checksum(self._algorithm, self._hasher.hexdigest())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class _Progress:
    """What the attempts of one HTTP transfer have achieved so far."""

    part: _PartFile
    attempts: int = 0
    resumed: bool = False
    received: int = 0
    validator: str | None = None


class TransferEngine:
    """Fetches :class:`TransferRequest` s with one shared HTTP client and a semaphore per pool.

    ``read_timeout`` bounds a server's silence, ``total_timeout`` a whole transfer (all its
    attempts, from when it has a slot of its pool), ``max_unsized_bytes`` a file whose request
    gives no ``expected_size`` (announced or received).
    """

    def __init__(
        self,
        *,
        limits: Mapping[str, int] | None = None,
        default_limit: int = 8,
        retry: RetryPolicy = RetryPolicy(),
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        total_timeout: float = DEFAULT_TRANSFER_TIMEOUT_S,
        max_unsized_bytes: int = DEFAULT_MAX_UNSIZED_BYTES,
        chunk_size: int = 1 << 20,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limits = dict(limits or {})
        bad = {pool: n for pool, n in {**self._limits, "": default_limit}.items() if n < 1}
        if bad:
            raise ValueError(f"pool limits must be at least 1, got {bad}")
        self._default_limit = default_limit
        self._retry = retry
        self._total_timeout = total_timeout
        self._max_unsized_bytes = max_unsized_bytes
        self._chunk_size = chunk_size
        self._sleep = sleep
        self._pools: dict[str, asyncio.Semaphore] = {}
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None  # made in the event loop, on first use
        self._proxies: dict[str, tuple[URL | None, aiohttp.BasicAuth | None]] = {}
        self._tracer = tracing.tracer()  # None when tracing is off: no span, no header

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                auto_decompress=False,  # the bytes as served: they are what is verified
                cookie_jar=aiohttp.DummyCookieJar(),
                read_bufsize=1 << 20,
            )
        return self._session

    async def __aenter__(self) -> TransferEngine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the shared HTTP client."""
        if self._session is not None:
            await self._session.close()

    async def fetch_all(
        self, requests: Sequence[TransferRequest]
    ) -> list[TransferResult | TransferError]:
        """Fetch all ``requests`` concurrently within the pool limits; results keep their order."""
        return await run_all(self._fetch_or_error(r) for r in requests)

    async def _fetch_or_error(self, request: TransferRequest) -> TransferResult | TransferError:
        try:
            return await self.fetch(request)
        except TransferError as error:
            return error

    async def fetch(self, request: TransferRequest) -> TransferResult:
        """Fetch and verify ``request`` into its ``.part`` file; raises :class:`TransferError`.
        With tracing on, in a span ``aux.transfer`` (redacted URL, pool, bytes, status)."""
        if self._tracer is None:
            return await self._fetch_admitted(request)
        attributes = {"url.full": redact_url(request.url), "aux.pool": request.pool}
        with tracing.span("aux.transfer", attributes) as opened:
            try:
                result = await self._fetch_admitted(request)
            except TransferError:
                tracing.annotate(opened, {"aux.status": "failed"})
                raise
            done: tracing.Attributes = {
                "aux.status": "transferred",
                "aux.bytes": result.bytes_received,
            }
            if result.attempts > 1 or result.resumed:  # the usual case costs two attributes less
                done = {**done, "aux.attempts": result.attempts, "aux.resumed": result.resumed}
            tracing.annotate(opened, done)
            return result

    async def _fetch_admitted(self, request: TransferRequest) -> TransferResult:
        """:meth:`fetch` without its span: check the URL, wait for a slot of the pool, fetch
        within the total timeout."""
        scheme = _check_url(request, request.url)
        async with self._pool(request.pool):
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._total_timeout):
                    return await self._fetch(request, scheme == "file", started)
            except TimeoutError:  # the total timeout (a read timeout is retried, then reported)
                _discard(request.part_path)
                raise TransferError(
                    request.url,
                    f"not done after {self._total_timeout:g} s, the limit for one file with all "
                    f"its attempts (raise {TRANSFER_TIMEOUT_ENV} to allow more)",
                ) from None
            except OSError as exc:
                _discard(request.part_path)
                raise TransferError(request.url, f"local I/O failed: {exc}") from None
            except BaseException:
                _discard(request.part_path)
                raise

    def _pool(self, name: str) -> asyncio.Semaphore:
        if name not in self._pools:
            self._pools[name] = asyncio.Semaphore(self._limits.get(name, self._default_limit))
        return self._pools[name]

    async def _fetch(self, request: TransferRequest, local: bool, started: float) -> TransferResult:
        algorithm = request.expected_checksum.algorithm if request.expected_checksum else "sha256"
        part = _PartFile(request.part_path, algorithm)
        progress = _Progress(part)
        try:
            if local:
                await self._copy_local(request, part)
                progress.attempts, progress.received = 1, part.size
            else:
                await self._download(request, progress)
            await part.sync()
        finally:
            part.close()
        _verify(request, part)
        return TransferResult(
            request=request,
            size=part.size,
            checksum=part.checksum(),
            attempts=progress.attempts,
            resumed=progress.resumed,
            seconds=time.monotonic() - started,
            bytes_received=progress.received,
        )

    async def _copy_local(self, request: TransferRequest, part: _PartFile) -> None:
        """Copy the file, checked to be inside the request's folders right before it is opened;
        the resolved path is opened with ``O_NOFOLLOW`` (a link swapped in for the file since is
        refused; one swapped in for a folder above it is not seen)."""
        try:
            source_path = confined_path(request.url, request.file_roots)
        except LocalURLError as exc:
            raise TransferError(request.url, str(exc)) from None
        meter = request.meter
        with os.fdopen(os.open(source_path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as source:
            while chunk := await asyncio.to_thread(source.read, self._chunk_size):
                meter.count += len(chunk)
                await part.write([chunk])
                self._check_size(request, part.size, "read")

    async def _download(self, request: TransferRequest, progress: _Progress) -> None:
        """Transfer with retries; a 401 renews the credentials once
        (:func:`~aux_assets.auth.renewing`) and goes on from the bytes already received."""
        try:
            await renewing(lambda: self._retrying(request, progress), request.auth)
        except Unauthorized:
            raise TransferError(request.url, "HTTP 401 Unauthorized") from None
        except AuthError as exc:  # the renewal failed: the token endpoint's answer, or its type
            raise TransferError(request.url, str(exc)) from None

    async def _retrying(self, request: TransferRequest, progress: _Progress) -> None:
        while True:
            progress.attempts += 1
            try:
                await self._attempt(request, progress)
                return
            except _Retry as exc:
                failure = exc
            except aiohttp.ClientSSLError as exc:  # a retry would fail the same way
                raise TransferError(
                    request.url,
                    f"TLS failed: {shorten(str(exc))} (for a private CA, set SSL_CERT_FILE to "
                    "its bundle)",
                ) from None
            except _TRANSIENT as exc:
                failure = _Retry(_describe(exc, progress.part.size))
            except (aiohttp.ClientError, ValueError) as exc:
                raise TransferError(request.url, f"request failed: {type(exc).__name__}") from None
            if progress.attempts >= self._retry.attempts:
                raise TransferError(
                    request.url, f"{failure.reason}; gave up after {progress.attempts} attempts"
                )
            delay = (
                self._retry.backoff(progress.attempts) if failure.delay is None else failure.delay
            )
            if delay > 0:
                await self._sleep(delay)

    async def _attempt(self, request: TransferRequest, progress: _Progress) -> None:
        """One request (following redirects); appends what arrives to the part file."""
        part = progress.part
        headers = {"Accept-Encoding": "identity"}
        if part.size:
            headers["Range"] = f"bytes={part.size}-"
            if progress.validator:
                headers["If-Range"] = progress.validator
        async with self._open(request, headers) as response:
            end = self._accept(request, response, progress)
            # Chunks are gathered here, not by aiohttp, so that the bytes that did arrive before
            # a cut are written (and a retry resumes after them).
            pending: list[bytes] = []
            pending_size = 0
            meter = request.meter
            try:
                async for chunk, _ in response.content.iter_chunks():  # no join, no copy
                    progress.received += len(chunk)
                    meter.count += len(chunk)
                    pending.append(chunk)
                    pending_size += len(chunk)
                    self._check_size(request, part.size + pending_size, "received")
                    if pending_size >= self._chunk_size:
                        await part.write(pending)
                        pending, pending_size = [], 0
            finally:
                if pending:
                    done = end is not None and part.size + pending_size >= end
                    await part.write(pending, last=done)
        if end is not None and part.size < end:
            raise _Retry(f"body truncated at {part.size} of {end} bytes")

    def _accept(
        self, request: TransferRequest, response: aiohttp.ClientResponse, progress: _Progress
    ) -> int | None:
        """Check the status and headers; the size the part file should reach, if known."""
        status, part = response.status, progress.part
        if status == 200:
            if _is_html(response.headers.get("content-type")) and not _is_html(
                request.expected_media_type
            ):
                raise TransferError(
                    request.url,
                    "the server answered with an HTML page instead of the file "
                    "(often a login or error page)",
                )
            if part.size:
                request.meter.count -= part.size  # the bytes kept so far are discarded
                part.reset()
                progress.resumed = False
            end = total = _int_or_none(response.headers.get("content-length"))
        elif status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
            if match is None or int(match[1]) != part.size:
                request.meter.count -= part.size
                part.reset()
                progress.resumed = False
                raise _Retry("the server answered another byte range than the one asked for")
            progress.resumed = progress.resumed or part.size > 0
            total = _int_or_none(match[3])
            end = total if total is not None else int(match[2]) + 1
        elif status == 401:
            raise Unauthorized
        elif status == 429 or status >= 500:
            delay = retry_after(response.headers.get("retry-after"), self._retry.max_retry_after_s)
            raise _Retry(f"HTTP {status} {response.reason}", delay)
        else:
            raise TransferError(request.url, f"HTTP {status} {response.reason}")
        if part.size == 0:
            progress.validator = _validator(response.headers)
        if end is not None:
            self._check_size(request, end, "announced by the server")
        expected = request.expected_size
        if expected is not None and total is not None and total != expected:
            raise TransferError(
                request.url, f"size mismatch: expected {expected} bytes, the server has {total}"
            )
        return end

    def _check_size(self, request: TransferRequest, size: int, how: str) -> None:
        """Fail a file once ``size`` bytes (read, received or announced) exceed its
        ``expected_size`` or, when it has none, ``max_unsized_bytes``: no body runs on past
        what the file may hold."""
        expected = request.expected_size
        if expected is not None and size > expected:
            raise TransferError(
                request.url, f"size mismatch: expected {expected} bytes, {size} {how}"
            )
        limit = self._max_unsized_bytes
        if expected is None and size > limit:
            raise TransferError(
                request.url,
                f"{size} bytes {how}: over {limit} bytes, the limit for a file whose item gives "
                f"no file:size (raise {MAX_UNSIZED_BYTES_ENV} to allow more)",
            )

    @asynccontextmanager
    async def _open(
        self, request: TransferRequest, headers: dict[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a GET and follow up to five redirects, with each hop's own auth headers."""
        url = request.url
        response = await self._send(request, url, headers)
        redirects = 0
        while (location := _redirect_location(response)) is not None:
            response.release()
            if redirects == _MAX_REDIRECTS:
                raise TransferError(request.url, f"more than {_MAX_REDIRECTS} redirects")
            redirects += 1
            url = str(response.url.join(_wire_url(location)))
            _check_url(request, url, remote_only=True)
            response = await self._send(request, url, headers)
        try:
            yield response
        finally:
            response.release()

    async def _send(
        self, request: TransferRequest, url: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        try:
            auth_headers = await request.auth.aheaders_for(url) if request.auth else {}
        except Exception as exc:  # e.g. the token endpoint refuses: fail this file, say why
            raise TransferError(request.url, f"could not obtain credentials: {exc}") from None
        # Credentials written into an href (user:password@host) are never sent: aiohttp would turn
        # them into a Basic header for whatever host the href names.
        wire = _wire_url(strip_userinfo(url))
        proxy, proxy_auth = self._proxy(wire)
        sent = {**headers, **auth_headers}
        if self._tracer is not None:
            tracing.inject(sent)
        return await self._client().get(
            wire,
            headers=sent,
            allow_redirects=False,
            proxy=proxy,
            proxy_auth=proxy_auth,
            ssl=_tls_context() if wire.scheme == "https" else True,  # made on the first https
        )

    def _proxy(self, url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The proxy for ``url``'s origin from ``HTTP(S)_PROXY``/``NO_PROXY``, as httpx used them,
        looked up once per origin. (aiohttp's ``trust_env`` would also look it up, and read
        ``~/.netrc``, on every request; a netrc entry would then clash with our own
        ``Authorization`` header.)"""
        origin = str(url.origin())
        if origin not in self._proxies:
            try:
                self._proxies[origin] = get_env_proxy_for_url(url)
            except LookupError:
                self._proxies[origin] = (None, None)
        return self._proxies[origin]


def _tls_context() -> ssl.SSLContext:
    """The CAs our other HTTP clients (httpx) trust: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when
    set, else certifi's bundle (aiohttp alone would use the system store, which slim images
    lack). Made once per value of those variables."""
    return _tls_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _tls_context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile or None, capath=None if cafile else capath)
    return ssl.create_default_context(cafile=certifi.where())


def _wire_url(url: str) -> URL:
    """``url`` as sent: characters not allowed in a URL are percent-encoded, and the escapes it
    already has are kept as they are (a signed query such as S3's ``X-Amz-Credential=..%2F..``
    must reach the server byte for byte; yarl would otherwise decode it)."""
    return URL(quote(url, safe=_URL_SAFE), encoded=True)


def _check_url(request: TransferRequest, url: str, *, remote_only: bool = False) -> str:
    """The lower-case scheme of ``url`` if ``request`` may fetch it; else :class:`TransferError`."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise TransferError(request.url, f"{redact_url(url)} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme in _REMOTE_SCHEMES:
        return scheme
    if remote_only:
        raise TransferError(
            request.url, f"redirect to {redact_url(url)} refused: only http(s) is followed"
        )
    if scheme != "file":
        raise TransferError(request.url, f"unsupported scheme {scheme!r}: use http(s) or file")
    if not request.file_roots:
        raise TransferError(request.url, "file:// URLs are only read from local sources")
    if parts.netloc not in {"", "localhost"}:
        raise TransferError(request.url, "file:// URLs must name a path on this machine")
    return scheme


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _verify(request: TransferRequest, part: _PartFile) -> None:
    """Compare the finished part file with the expected size and checksum."""
    if request.expected_size is not None and part.size != request.expected_size:
        raise TransferError(
            request.url, f"size mismatch: expected {request.expected_size} bytes, got {part.size}"
        )
    expected, got = request.expected_checksum, part.checksum()
    if expected is not None and expected.hexdigest.lower() != got.hexdigest:
        raise TransferError(
            request.url,
            f"checksum mismatch: expected {expected.algorithm} {expected.hexdigest.lower()}, "
            f"got {got.hexdigest}",
        )


# aiohttp's exception names, in the words the messages used before (and users grep for)
_KINDS: tuple[tuple[type[Exception], str], ...] = (
    (aiohttp.ClientConnectorError, "ConnectError"),
    (aiohttp.ConnectionTimeoutError, "ConnectTimeout"),
    (aiohttp.SocketTimeoutError, "ReadTimeout"),
)


def _describe(exc: Exception, written: int) -> str:
    """A transient failure in a few words; never the URL (its query may carry a signature)."""
    kind = next((name for cls, name in _KINDS if isinstance(exc, cls)), type(exc).__name__)
    if isinstance(exc, aiohttp.ClientResponseError):  # its str() quotes the whole URL
        text = f"{exc.status}, {exc.message}"
    else:
        text = str(exc)
    detail = f": {shorten(text)}" if text else ""
    return f"{kind}{detail} (after {written} bytes)"


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _is_html(media_type: str | None) -> bool:
    return (media_type or "").split(";")[0].strip().lower() in _HTML_TYPES


def _validator(headers: Mapping[str, str]) -> str | None:
    """The strong ETag, else Last-Modified: what ``If-Range`` may carry."""
    etag: str | None = headers.get("etag")
    last_modified: str | None = headers.get("last-modified")
    return etag if etag and not etag.startswith("W/") else last_modified


def _redirect_location(response: aiohttp.ClientResponse) -> str | None:
    location: str | None = response.headers.get("location")
    return location if response.status in _REDIRECT_STATUSES else None
