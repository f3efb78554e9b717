"""The source gate: how the Stager waits for a source and opens only the connections granted."""

import asyncio
import hashlib
import threading

import pystac
import pytest

from aux_assets.catalog import LocalCatalog
from aux_assets.gates import admitted
from aux_assets.staging import Stager, StageTask
from aux_assets.storage import LocalStorage
from aux_assets.transfer import RetryPolicy
from tests.servers import ConnectionMeter, file_handler, serve


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

    async def go() -> int:
        async with admitted(gate, "auxip", 8) as granted:
            assert gate.calls[-1][0] == "claim"
            return granted

    assert asyncio.run(go()) == 3
    assert [c[0] for c in gate.calls] == ["claim", "claim", "claim", "release"]


@pytest.mark.parametrize(("grant", "expected"), [(0, 1), (50, 8)])
def test_admitted_keeps_the_grant_between_one_and_the_source_limit(grant, expected):
    async def go() -> int:
        async with admitted(TurnGate(grant), "auxip", 8) as granted:
            return granted

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
