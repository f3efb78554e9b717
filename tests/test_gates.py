"""The source gate: how the Stager waits for a source and opens only the connections granted."""

import asyncio
import hashlib
import logging
import threading
from collections.abc import Sequence

import pystac
import pytest

from aux_assets.catalog.base import CatalogError
from aux_assets.catalog.static import LocalCatalog
from aux_assets.staging.gates import Admission, admitted
from aux_assets.staging.stager import Stager, StageTask
from aux_assets.storage.local import LocalStorage
from aux_assets.utils.retry import RetryPolicy
from aux_assets.utils.urls import file_path
from tests.helpers.servers import ConnectionMeter, file_handler, serve

FAST = RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.01)


class TurnGate:
    """Admits ``source`` only after ``closed_for`` refused claims, granting ``grant``."""

    def __init__(self, grant: int, closed_for: int = 0) -> None:
        self.grant = grant
        self.closed_for = closed_for
        self.calls: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def claim(self, source: str, connections: int) -> int | None:
        with self.lock:
            self.calls.append(("claim", source, connections))
            if self.closed_for:
                self.closed_for -= 1
                return None
            return self.grant

    def release(self, source: str) -> None:
        with self.lock:
            self.calls.append(("release", source, 0))


def test_admitted_waits_for_the_gate_then_releases():
    gate = TurnGate(grant=3, closed_for=2)

    async def go(gate: TurnGate) -> Admission:
        async with admitted(gate, "auxip", 8) as admission:
            assert gate.calls[-1][0] == "claim"
            return admission

    assert asyncio.run(go(gate)) == Admission(connections=3, waited=True)
    assert [c[0] for c in gate.calls] == ["claim", "claim", "claim", "release"]
    assert asyncio.run(go(TurnGate(grant=3))) == Admission(connections=3, waited=False)


@pytest.mark.parametrize(("grant", "expected"), [(0, 1), (50, 8)])
def test_admitted_keeps_the_grant_between_one_and_the_source_limit(grant, expected):
    async def go() -> int:
        async with admitted(TurnGate(grant), "auxip", 8) as admission:
            return admission.connections

    assert asyncio.run(go()) == expected


def test_admitted_releases_on_error_and_on_cancellation():
    gate = TurnGate(grant=1)

    async def fail() -> None:
        async with admitted(gate, "prip", 2):
            raise RuntimeError("transfer broke")

    with pytest.raises(RuntimeError):
        asyncio.run(fail())
    assert gate.calls[-1] == ("release", "prip", 0)

    waiting = TurnGate(grant=1, closed_for=10**6)

    async def cancel() -> None:
        task = asyncio.create_task(admitted(waiting, "cadip", 2).__aenter__())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel())
    assert waiting.calls[-1] == ("release", "cadip", 0)  # the queued claim is withdrawn


def _items(root, url, source, n):
    items = []
    for i in range(n):
        data = f"{source}-{i}".encode() * 1000
        (root / f"{source}-{i}.bin").write_bytes(data)
        items.append(
            StageTask(
                pystac.Item.from_dict(
                    {
                        "type": "Feature",
                        "stac_version": "1.1.0",
                        "id": f"{source.upper()}_{i}",
                        "geometry": None,
                        "properties": {"datetime": "2026-01-05T00:00:00Z"},
                        "assets": {
                            "file": {
                                "href": f"{url}/files/{source}-{i}.bin",
                                "file:size": len(data),
                                "file:checksum": hashlib.md5(data).hexdigest(),
                            }
                        },
                        "links": [],
                    }
                ),
                "aux",
                source,
            )
        )
    return items


def test_stager_claims_each_source_and_opens_only_the_granted_connections(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    meter = ConnectionMeter(file_handler(src), delay_s=0.3)
    gate = TurnGate(grant=2, closed_for=1)
    with serve(meter) as (url, _):
        tasks = _items(src, url, "auxip", 8) + _items(src, url, "prip", 8)
        stager = Stager(
            LocalCatalog(tmp_path / "catalog"),
            LocalStorage(tmp_path / "storage"),
            limits={"auxip": 8, "prip": 4},
            retry=RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.01),
            gate=gate,
        )
        outcomes = stager.stage(tasks)
    assert {o.status for o in outcomes} == {"staged"}
    assert sorted(c for c in gate.calls if c[0] == "release") == [
        ("release", "auxip", 0),
        ("release", "prip", 0),
    ]
    assert {c[1:] for c in gate.calls if c[0] == "claim"} == {("auxip", 8), ("prip", 4)}
    # two sources at 2 connections each: 4 at most, and the grant was used in full
    assert meter.peak == 4


class HeldGate:
    """Refuses every claim until ``opened`` is set; ``refused`` is set by the first refusal."""

    def __init__(self) -> None:
        self.refused = threading.Event()
        self.opened = threading.Event()

    def claim(self, source: str, connections: int) -> int | None:
        if not self.opened.is_set():
            self.refused.set()
            return None
        return connections

    def release(self, source: str) -> None:
        return None


def _file_paths(log) -> list[str]:
    return sorted(r["path"] for r in log if r["path"].startswith("/files/"))


def test_a_run_that_waited_for_the_source_skips_what_another_run_registered(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    storage = LocalStorage(tmp_path / "storage")
    waiting_catalog = LocalCatalog(tmp_path / "catalog")
    gate = HeldGate()
    waited: list = []
    with serve(file_handler(src)) as (url, log):
        tasks = _items(src, url, "auxip", 4)
        waiting = Stager(waiting_catalog, storage, retry=FAST, gate=gate)
        thread = threading.Thread(target=lambda: waited.extend(waiting.stage(tasks)))
        thread.start()
        assert gate.refused.wait(10)  # looked up (nothing there), now waits for the source
        other = Stager(LocalCatalog(tmp_path / "catalog"), storage, retry=FAST)
        first = other.stage(tasks[:3])
        assert [o.status for o in first] == ["staged"] * 3
        before = len(log)
        gate.opened.set()
        thread.join(30)
    assert not thread.is_alive()
    assert [o.status for o in waited] == ["present"] * 3 + ["staged"]
    assert [o.bytes_transferred for o in waited[:3]] == [0, 0, 0]
    assert [[a.href for a in o.assets] for o in waited[:3]] == [
        [a.href for a in o.assets] for o in first
    ]
    assert _file_paths(log[before:]) == ["/files/auxip-3.bin"]  # only what was still missing
    assert waiting_catalog.lookups == 2  # before waiting, and once after
    for i, outcome in enumerate(waited):
        assert (
            file_path(outcome.assets[0].href).read_bytes() == (src / f"auxip-{i}.bin").read_bytes()
        )


def test_an_admission_without_waiting_makes_one_lookup(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with serve(file_handler(src)) as (url, log):
        tasks = _items(src, url, "auxip", 3) + _items(src, url, "prip", 2)
        catalog = LocalCatalog(tmp_path / "catalog")
        gate = TurnGate(grant=2)
        outcomes = Stager(catalog, LocalStorage(tmp_path / "storage"), gate=gate).stage(tasks)
    assert [o.status for o in outcomes] == ["staged"] * 5
    assert catalog.lookups == 1  # one collection, one batched lookup, none after admission
    assert sorted(c[0] for c in gate.calls) == ["claim", "claim", "release", "release"]
    assert len(_file_paths(log)) == 5


def test_a_source_is_released_only_once_its_items_are_registered(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    seen: dict[str, list[str]] = {}

    class WatchingGate(TurnGate):
        def release(self, source: str) -> None:
            ids = [f"{source.upper()}_{i}" for i in range(3)]
            seen[source] = sorted(LocalCatalog(tmp_path / "catalog").get_items("aux", ids))
            super().release(source)

    with serve(file_handler(src)) as (url, _):
        tasks = _items(src, url, "auxip", 3) + _items(src, url, "prip", 3)
        Stager(
            LocalCatalog(tmp_path / "catalog"),
            LocalStorage(tmp_path / "storage"),
            gate=WatchingGate(grant=2),
        ).stage(tasks)
    assert seen == {s: [f"{s.upper()}_{i}" for i in range(3)] for s in ("auxip", "prip")}


class _FailingSecondLookup(LocalCatalog):
    def get_items(self, collection_id: str, ids: Sequence[str]) -> dict[str, pystac.Item]:
        if self.lookups == 1:
            self.lookups += 1
            raise CatalogError("lookup failed at http://user:s3cret@catalog.example/search")
        return super().get_items(collection_id, ids)


def test_a_failed_lookup_after_waiting_falls_back_to_transferring(tmp_path, caplog):
    src = tmp_path / "src"
    src.mkdir()
    catalog = _FailingSecondLookup(tmp_path / "catalog")
    with serve(file_handler(src)) as (url, log), caplog.at_level(logging.WARNING):
        tasks = _items(src, url, "auxip", 3)
        outcomes = Stager(
            catalog, LocalStorage(tmp_path / "storage"), retry=FAST, gate=TurnGate(1, closed_for=1)
        ).stage(tasks)
    assert [o.status for o in outcomes] == ["staged"] * 3
    assert catalog.lookups == 2 and len(_file_paths(log)) == 3
    assert "after waiting for source auxip failed (CatalogError)" in caplog.text
    assert "s3cret" not in caplog.text
