"""OpenTelemetry: a day's span tree received by an OTLP/HTTP server on 127.0.0.1, the
``traceparent`` our requests carry, no secret in any span, and nothing at all when off."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pystac
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from aux_assets import tracing
from aux_assets.catalog.stac_api import StacApiCatalog
from aux_assets.defs.assets import (
    IO_MANAGER,
    aux_catalog_items,
    aux_search_results,
    aux_staged_items,
)
from aux_assets.defs.io_managers import JsonPartitionIOManager
from aux_assets.defs.resources import build_resources
from tests.fixtures.pgstac import PgstacApi
from tests.fixtures.servers_required import free_port
from tests.helpers.fault_server import CLIENT_ID, CLIENT_SECRET, FaultServer
from tests.helpers.servers import serve, stac_api_handler

ASSETS = [aux_search_results, aux_staged_items, aux_catalog_items]
DAY = "2026-01-05"
STEPS = ("aux_search_results", "aux_staged_items", "aux_catalog_items")
ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


@dataclass
class SpanRecord:
    """One received span, decoded."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP (protobuf) trace receiver: ``POST /v1/traces``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _ReceiverHandler)
        self.lock = threading.Lock()
        self.bodies: list[bytes] = []
        self.spans: list[SpanRecord] = []
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = [
            SpanRecord(
                name=s.name,
                trace_id=s.trace_id.hex(),
                span_id=s.span_id.hex(),
                parent_id=s.parent_span_id.hex(),
                attributes=_attributes(s.attributes),
                events=[(e.name, _attributes(e.attributes)) for e in s.events],
                status_code=s.status.code,
                status_message=s.status.message,
                resource=_attributes(rs.resource.attributes),
            )
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        with self.lock:
            self.bodies.append(body)
            self.spans.extend(spans)

    def named(self, name: str) -> list[SpanRecord]:
        return [s for s in self.spans if s.name == name]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Receiver

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.receive(body)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture(autouse=True)
def fresh_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL variable from outside; the provider is decided anew in each test."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    tracing.reset()
    yield
    tracing.reset()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def _run(home: Path, assets: list[Any] = ASSETS, **env: str) -> dg.ExecuteInProcessResult:
    resources = {
        **build_resources({"AUX_ASSETS_HOME": str(home), **env}),
        IO_MANAGER: JsonPartitionIOManager(base_dir=str(home / "io")),
    }
    return dg.materialize(assets, partition_key=DAY, resources=resources, raise_on_error=False)


def _doc(home: Path, asset: str) -> dict[str, Any]:
    return json.loads((home / "io" / asset / f"{DAY}.json").read_text())


def _staged(home: Path) -> list[dict[str, Any]]:
    return [o for p in _doc(home, "aux_staged_items")["products"] for o in p["items"]]


def _one(spans: list[SpanRecord]) -> SpanRecord:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def _check_one_tree(
    receiver: Receiver, run_id: str, ran: tuple[str, ...] = STEPS
) -> dict[str, SpanRecord]:
    """Every span is in the run's trace and hangs from a step span, the steps ``ran`` from the
    run."""
    trace_id = tracing.trace_id_of_run(run_id)
    run_span = trace_id[16:]
    by_id = {s.span_id: s for s in receiver.spans}
    steps = {name: _one(receiver.named(name)) for name in ran}
    assert {s.trace_id for s in receiver.spans} == {trace_id}
    for span in receiver.spans:
        if span.name in STEPS:
            assert span.parent_id == run_span
            assert span.attributes["dagster.run_id"] == run_id
            assert span.attributes["dagster.partition_keys"] == [DAY]
        else:
            assert span.parent_id in by_id, span
    return steps


def test_a_day_is_one_trace_of_searches_staging_transfers_and_registrations(
    home: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    result = _run(home)
    assert result.success
    steps = _check_one_tree(receiver, result.run_id)
    assert {s.resource["service.name"] for s in receiver.spans} == {"aux-assets"}

    searches = receiver.named("aux.search")
    assert {s.parent_id for s in searches} == {steps["aux_search_results"].span_id}
    found: dict[str, int] = {}
    for search in searches:
        assert search.attributes["aux.source"] == "auxip"
        assert search.attributes["aux.collection"]
        kind = search.attributes["aux.product_type"]
        found[kind] = max(found.get(kind, 0), search.attributes["aux.items_found"])
    for product in _doc(home, "aux_search_results")["products"]:
        assert found[product["product_type"]] >= product["n_candidates"]

    outcomes = _staged(home)
    staged = [o for o in outcomes if o["status"] == "staged"]
    assert staged and len(staged) == len(outcomes)
    stage = _one(receiver.named("aux.stage"))
    assert stage.parent_id == steps["aux_staged_items"].span_id
    assert stage.attributes["aux.source"] == "auxip"
    assert stage.attributes["aux.items.staged"] == len(staged)
    assert stage.attributes["aux.bytes"] == sum(o["bytes_transferred"] for o in staged) > 0

    transfers = receiver.named("aux.transfer")
    assert len(transfers) == sum(len(o["assets"]) for o in staged)
    assert {t.parent_id for t in transfers} == {stage.span_id}
    assert {t.attributes["aux.status"] for t in transfers} == {"transferred"}
    assert sum(t.attributes["aux.bytes"] for t in transfers) == stage.attributes["aux.bytes"]
    assert all(t.attributes["url.full"].startswith("file:///") for t in transfers)

    registrations = receiver.named("aux.catalog.register")
    assert {r.parent_id for r in registrations} == {stage.span_id}
    per_collection: dict[str, int] = {}
    for outcome in staged:
        per_collection[outcome["collection"]] = per_collection.get(outcome["collection"], 0) + 1
    assert {r.attributes["aux.collection"]: r.attributes["aux.items"] for r in registrations} == (
        per_collection
    )

    lookups = receiver.named("aux.catalog.lookup")
    parents = {steps[name].span_id for name in ("aux_staged_items", "aux_catalog_items")}
    assert {lookup.parent_id for lookup in lookups} == parents
    assert all(s.status_code != ERROR for s in receiver.spans)


@pytest.fixture
def remote_auxip(shared_sample: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """AUX_POEORB items in a loopback STAC API, their files behind OAuth2 on a fault server
    (no faults); hrefs carry userinfo and a signed query, sentinel-1c's point at no file."""
    secrets = {"userinfo": f"pw-{uuid.uuid4().hex}", "signature": f"sig-{uuid.uuid4().hex}"}
    with FaultServer(shared_sample, rate=0.0, require_token=True) as files:
        features = []
        for path in sorted(shared_sample.glob("*/*.json")):
            item = pystac.Item.from_dict(json.loads(path.read_text()))
            if item.properties.get("product:type") != "AUX_POEORB":
                continue
            folder = item.id if item.properties["platform"] == "sentinel-1a" else "missing"
            for asset in item.assets.values():
                asset.href = (
                    f"http://user:{secrets['userinfo']}@{files.base.removeprefix('http://')}"
                    f"/files/{folder}/{Path(asset.href).name}"
                    f"?X-Amz-Signature={secrets['signature']}"
                )
            item.clear_links()
            features.append(item.to_dict(include_self_link=False, transform_hrefs=False))
        products = tmp_path / "products.yaml"
        products.write_text(
            "products:\n  - product_type: AUX_POEORB\n    source: auxip\n"
            "    collection: s1-aux\n    policy: LatestValCover\n"
            "    platforms: [sentinel-1a, sentinel-1c]\n"
        )
        with serve(stac_api_handler(features, page_size=5)) as (url, log):
            env = {
                "AUX_AUXIP_URL": url,
                "AUX_AUXIP_TOKEN_URL": files.token_url,
                "AUX_AUXIP_CLIENT_ID": CLIENT_ID,
                "AUX_AUXIP_CLIENT_SECRET": CLIENT_SECRET,
                "AUX_AUXIP_AUTH_ORIGINS": files.base,
                "AUX_PRODUCTS_FILE": str(products),
            }
            yield {"env": env, "files": files, "api_log": log, "secrets": secrets}


def _traceparent(headers: dict[str, str]) -> tuple[str, str]:
    """(trace id, parent span id) of a ``traceparent`` header."""
    value = {k.lower(): v for k, v in headers.items()}["traceparent"]
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00" and flags == "01"
    return trace_id, span_id


def test_a_failed_transfer_is_an_error_span_requests_carry_traceparent_and_no_secret_leaks(
    home: Path,
    receiver: Receiver,
    remote_auxip: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = remote_auxip["env"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.endpoint}/v1/traces")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "aux-assets-test")
    result = _run(home, **env)
    assert not result.success  # the sentinel-1c file is missing: aux_catalog_items never ran
    _check_one_tree(receiver, result.run_id, STEPS[:2])
    trace_id = tracing.trace_id_of_run(result.run_id)
    assert {s.resource["service.name"] for s in receiver.spans} == {"aux-assets-test"}

    transfers = receiver.named("aux.transfer")
    failed = [t for t in transfers if t.attributes["aux.status"] == "failed"]
    done = [t for t in transfers if t.attributes["aux.status"] == "transferred"]
    assert failed and done
    for span in failed:
        assert span.status_code == ERROR and "HTTP 404" in span.status_message
        (event,) = span.events
        assert event[0] == "exception" and event[1]["exception.type"] == "TransferError"
    assert all(t.status_code != ERROR and t.attributes["aux.bytes"] > 0 for t in done)
    stage = _one(receiver.named("aux.stage"))
    assert stage.status_code == ERROR and stage.attributes["aux.items.failed"] == len(failed)
    for span in transfers:
        assert span.attributes["url.full"].startswith("http://127.0.0.1:")

    # every file request and every search request carries the trace of the run
    transfer_ids = {t.span_id for t in transfers}
    file_hits = [h for h in remote_auxip["files"].file_hits() if h.path.startswith("/files/")]
    assert file_hits
    for hit in file_hits:
        assert _traceparent(hit.headers) == (trace_id, _traceparent(hit.headers)[1])
        assert _traceparent(hit.headers)[1] in transfer_ids
    search_ids = {s.span_id for s in receiver.named("aux.search")}
    assert remote_auxip["api_log"]
    for request in remote_auxip["api_log"]:
        assert _traceparent(request["headers"]) == (trace_id, _traceparent(request["headers"])[1])
        assert _traceparent(request["headers"])[1] in search_ids

    tokens = remote_auxip["files"].state.tokens
    secrets = [*remote_auxip["secrets"].values(), CLIENT_SECRET, *tokens]
    assert tokens and all(secrets)
    raw = b"".join(receiver.bodies)
    for secret in secrets:
        assert secret.encode() not in raw
    texts = [
        json.dumps([s.attributes, s.events, s.status_message, s.resource], default=str)
        for s in receiver.spans
    ]
    assert not any(secret in text for secret in secrets for text in texts)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "{endpoint}"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "{endpoint}"},
    ],
    ids=["no-variables", "sdk-disabled", "exporter-none"],
)
def test_without_an_endpoint_or_when_disabled_nothing_is_configured_or_sent(
    home: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "aux-assets-test")
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(endpoint=receiver.endpoint))
    assert _run(home, ASSETS if not env else [aux_search_results]).success
    assert tracing.tracer() is None and tracing._provider is None
    assert not receiver.bodies


def test_the_core_does_not_import_opentelemetry_when_tracing_is_off() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = (
        "import sys, aux_assets.staging.stager, aux_assets.planning\n"
        "from aux_assets import tracing\n"
        "assert tracing.tracer() is None\n"
        "with tracing.span('x') as s: assert s is None\n"
        "headers = {}; tracing.inject(headers); assert headers == {}\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_span_texts_have_urls_redacted_and_no_credentials() -> None:
    text = (
        "GET https://u:secret-pw@host.example/a/b?X-Amz-Signature=sig123 failed; "
        "Authorization: Bearer tok-abc, Basic dXNlcjpwYXNz"
    )
    safe = tracing.safe_text(text)
    assert "https://host.example/a/b" in safe
    for secret in ("secret-pw", "sig123", "tok-abc", "dXNlcjpwYXNz"):
        assert secret not in safe


def test_catalog_requests_from_worker_threads_carry_the_current_trace(
    receiver: Receiver, pgstac_api: PgstacApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items sent one request each (a catalog without bulk_items) go from worker threads: each
    request still carries the trace and the span it was made in."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    items = []
    for i in range(6):
        start = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(hours=i)
        end = start + timedelta(hours=1)
        items.append(
            pystac.Item(
                f"TRACED_{i}",
                None,
                None,
                None,
                {"product:type": "AUX_WND"},
                start_datetime=start,
                end_datetime=end,
            )
        )
    collection = f"traced-{uuid.uuid4().hex[:8]}"
    with StacApiCatalog(pgstac_api.url, bulk=False, max_in_flight=3) as catalog:
        sent: list[httpx.Request] = []
        catalog._client.event_hooks["request"].append(sent.append)
        with tracing.span("parent", parent=tracing.run_context(str(uuid.uuid4()))) as opened:
            assert opened is not None
            catalog.upsert(collection, items)
        context = opened.get_span_context()
    posts = [r for r in sent if r.method == "POST" and r.url.path.endswith("/items")]
    assert len(posts) == len(items)
    for request in posts:
        trace_id, parent_id = _traceparent(dict(request.headers))
        assert trace_id == f"{context.trace_id:032x}"
        assert parent_id == f"{context.span_id:016x}"
