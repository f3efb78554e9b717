"""OpenTelemetry tracing: spans sent over OTLP/HTTP when the standard ``OTEL_*`` variables ask
for them, nothing at all otherwise.

Tracing is on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is
set, unless ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. The provider is made once
per process, on first use: a batch processor and an OTLP/HTTP (protobuf) exporter, which reads
its own variables (headers, timeout, certificate, compression); the resource reads
``OTEL_SERVICE_NAME`` (default ``aux-assets``) and ``OTEL_RESOURCE_ATTRIBUTES``. Spans are
flushed by :func:`flush` (at the end of each Dagster step) and at exit. When tracing is off,
:func:`tracer` is ``None``, :func:`span` yields ``None`` and opentelemetry is never imported.

No secret goes into a span: callers give redacted URLs (:func:`~aux_assets.utils.urls.redact_url`),
no header is recorded, and error texts are shortened with every URL in them redacted.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import hashlib
import os
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from aux_assets.utils.text import shorten
from aux_assets.utils.urls import redact_url

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

SERVICE_NAME = "aux-assets"
FLUSH_TIMEOUT_S = 5.0

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[int]
Attributes = Mapping[str, AttributeValue | None]
P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_decided = False
_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_OFF: contextlib.nullcontext[None] = contextlib.nullcontext(None)


def enabled_by(env: Mapping[str, str]) -> bool:
    """Whether ``env`` asks for traces to be exported."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def tracer() -> Tracer | None:
    """The tracer, or ``None`` when tracing is off (decided once per process, on first call)."""
    if not _decided:
        _configure()
    return _tracer


def _configure() -> None:
    global _decided, _provider, _tracer
    with _lock:
        if _decided:
            return
        if enabled_by(os.environ):
            _provider = _new_provider()
            _tracer = _provider.get_tracer("aux_assets")
            atexit.register(_provider.shutdown)
        _decided = True


def _new_provider() -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def flush(timeout_s: float = FLUSH_TIMEOUT_S) -> None:
    """Export the spans ended so far (no-op when tracing is off)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def reset() -> None:
    """Shut the provider down and forget the decision: the next use reads the environment
    again (for tests)."""
    global _decided, _provider, _tracer
    with _lock:
        if _provider is not None:
            atexit.unregister(_provider.shutdown)
            _provider.shutdown()
        _decided, _provider, _tracer = False, None, None


def span(
    name: str, attributes: Attributes | None = None, *, parent: Context | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A span made current for the block (``None`` when tracing is off); an exception leaving
    the block marks it failed (:func:`fail`). ``parent``: another parent than the current span."""
    current = tracer()
    if current is None:
        return _OFF
    return _Current(current.start_span(name, parent, attributes=_clean(attributes)))


class _Current:
    """``opened`` made current until the block ends, then ended (what ``use_span`` does, at
    a fraction of its cost: a transfer opens one per file)."""

    __slots__ = ("_opened", "_token")

    def __init__(self, opened: Span) -> None:
        self._opened = opened

    def __enter__(self) -> Span:
        from opentelemetry import context, trace

        self._token = context.attach(trace.set_span_in_context(self._opened))
        return self._opened

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        from opentelemetry import context

        if isinstance(error, Exception):  # not a cancellation or an exit
            fail(self._opened, error)
        self._opened.end()
        context.detach(self._token)


def _clean(attributes: Attributes | None) -> dict[str, AttributeValue]:
    return {k: v for k, v in (attributes or {}).items() if v is not None}


def annotate(opened: Span | None, attributes: Attributes) -> None:
    """Set ``attributes`` on ``opened`` (``None`` values are left out; no-op without a span)."""
    if opened is not None:
        opened.set_attributes(_clean(attributes))


def fail(opened: Span | None, error: BaseException | str) -> None:
    """Mark ``opened`` failed: status ERROR, and for an exception an ``exception`` event whose
    message and stack trace (this exception's only: a chained one may quote what we never
    show) are :func:`safe_text`."""
    if opened is None:
        return
    from opentelemetry.trace import Status, StatusCode

    message = safe_text(str(error))
    if isinstance(error, str):
        opened.set_status(Status(StatusCode.ERROR, message))
        return
    event: dict[str, str] = {"exception.type": type(error).__name__, "exception.message": message}
    if error.__traceback__ is not None:
        lines = traceback.format_exception(error, chain=False)
        event["exception.stacktrace"] = _redacted("".join(lines))
    opened.add_event("exception", event)
    opened.set_status(Status(StatusCode.ERROR, message))


def safe_text(text: str) -> str:
    """``text`` for a span: one bounded line, every URL redacted, no bearer or basic credential."""
    return shorten(_redacted(text))


def _redacted(text: str) -> str:
    url, credential = _patterns()
    text = url.sub(lambda match: redact_url(match.group()), text)
    return credential.sub(lambda match: f"{match.group(1)} ***", text)


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """URLs, and bearer or basic credentials (compiled on first use: imports stay fast)."""
    return (
        re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+"),
        re.compile(r"(?i)\b(bearer|basic)\s+[^\s'\",;]+"),
    )


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` (W3C, via the configured propagator) to
    ``headers`` when tracing is on and that span is recording."""
    if tracer() is None:
        return
    from opentelemetry import propagate, trace

    if trace.get_current_span().is_recording():
        propagate.inject(headers)


def in_current_context(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn``, to be called in worker threads within this thread's current span (``fn``
    itself when tracing is off)."""
    if tracer() is None:
        return fn
    context = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return context.copy().run(fn, *args, **kwargs)

    return run


def run_context(run_id: str) -> Context | None:
    """A remote parent whose trace id is derived from ``run_id`` (a Dagster run's UUID), so
    that every step of a run, in this process or another, joins one trace; ``None`` when off."""
    if tracer() is None:
        return None
    from opentelemetry import trace

    value = _run_number(run_id)
    parent = trace.SpanContext(
        trace_id=value,
        span_id=(value & 0xFFFFFFFFFFFFFFFF) or 1,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def trace_id_of_run(run_id: str) -> str:
    """The trace id (32 hex digits) :func:`run_context` gives ``run_id``."""
    return f"{_run_number(run_id):032x}"


def _run_number(run_id: str) -> int:
    """``run_id`` as a non-zero 128-bit number: the UUID itself, else a hash of the text."""
    try:
        value = uuid.UUID(run_id).int
    except ValueError:
        value = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big")
    return value or 1
