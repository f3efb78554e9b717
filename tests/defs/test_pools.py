"""Pools ``aux_source_<name>``: parallel runs share each source's connections."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy

from aux_assets.defs.pools import DEFAULT_POOL_SLOTS, DagsterPoolGate, pool_name
from tests.helpers.servers import ConnectionMeter, file_handler, serve


def _gate(instance: dg.DagsterInstance, run_id: str, log: list[str] | None = None):
    return DagsterPoolGate(
        instance, run_id, "aux_staged_items", log=(log.append if log is not None else print)
    )


def test_a_pool_without_limit_gets_the_documented_default_and_admits_one_run_at_a_time():
    with dg.instance_for_test() as instance:
        messages: list[str] = []
        first, second = _gate(instance, "run-1", messages), _gate(instance, "run-2", messages)
        assert first.claim("auxip", 8) == 8  # the one slot carries every connection
        info = instance.event_log_storage.get_concurrency_info(pool_name("auxip"))
        assert info.slot_count == DEFAULT_POOL_SLOTS == 1
        assert any("pool aux_source_auxip had no limit" in m for m in messages)
        assert second.claim("auxip", 8) is None  # queued while run-1 holds the slot
        assert second.claim("prip", 8) == 8  # another source is another pool
        first.release("auxip")
        assert second.claim("auxip", 8) == 8
        second.release("auxip")
        second.release("prip")
        second.release("prip")  # releasing twice is harmless
        info = instance.event_log_storage.get_concurrency_info(pool_name("auxip"))
        assert info.active_slot_count == 0 and info.pending_step_count == 0


def test_a_run_that_loses_the_race_to_create_the_pool_takes_the_limit_the_other_wrote(
    monkeypatch,
):
    """Two runs starting together both find the pool without a limit; the second write fails
    on the unique key (seen in CI as a failed run). The loser must claim, not fail."""
    with dg.instance_for_test() as instance:
        storage = instance.event_log_storage
        messages: list[str] = []
        first, second = _gate(instance, "run-1", messages), _gate(instance, "run-2", messages)
        assert first.claim("auxip", 2) == 2
        keys = storage.get_concurrency_keys
        looks = iter([set[str]()])  # run-2's first look predates run-1's write
        monkeypatch.setattr(storage, "get_concurrency_keys", lambda: next(looks, keys()))

        def insert_again(pool: str, slots: int) -> None:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO concurrency_limits", {}, Exception())

        monkeypatch.setattr(storage, "set_concurrency_slots", insert_again)
        assert second.claim("auxip", 2) is None  # queued behind run-1, not an IntegrityError
        assert storage.get_concurrency_info(pool_name("auxip")).slot_count == DEFAULT_POOL_SLOTS
        assert sum("had no limit" in m for m in messages) == 1  # only the writer says so
        first.release("auxip")
        assert second.claim("auxip", 2) == 2


def test_slot_operations_of_runs_on_one_host_happen_one_at_a_time(monkeypatch):
    """SQLite storage claims by select-then-update without a row lock: two runs claiming at once
    both took the one slot (CI, 4 connections under a limit of 2). The gates take turns."""
    with dg.instance_for_test() as instance:
        storage = instance.event_log_storage
        inside, peak, guard = [0], [0], threading.Lock()

        def measured(call):
            def wrapper(*args, **kwargs):
                with guard:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                time.sleep(0.05)  # a slow database widens the window
                try:
                    return call(*args, **kwargs)
                finally:
                    with guard:
                        inside[0] -= 1

            return wrapper

        monkeypatch.setattr(
            storage, "claim_concurrency_slot", measured(storage.claim_concurrency_slot)
        )
        monkeypatch.setattr(
            storage,
            "free_concurrency_slot_for_step",
            measured(storage.free_concurrency_slot_for_step),
        )
        gates = [_gate(instance, f"run-{i}", []) for i in range(4)]
        start = threading.Barrier(len(gates))
        held: list[int] = []
        most_held = [0]

        def run(gate: DagsterPoolGate) -> None:
            start.wait()
            while gate.claim("auxip", 2) is None:
                time.sleep(0.01)
            with guard:
                held.append(1)
                most_held[0] = max(most_held[0], len(held))
            time.sleep(0.02)
            with guard:
                held.pop()
            gate.release("auxip")

        threads = [threading.Thread(target=run, args=(gate,)) for gate in gates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert peak[0] == 1  # never two slot operations at once
        assert most_held[0] == 1  # never two runs holding the one slot
        info = storage.get_concurrency_info(pool_name("auxip"))
        assert info.slot_count == 1 and info.active_slot_count == 0 and info.pending_step_count == 0


def test_slots_share_the_connections_so_the_total_stays_within_the_limit():
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots(pool_name("cdse"), 3)
        gates = [_gate(instance, f"run-{i}") for i in range(4)]
        grants = [gate.claim("cdse", 8) for gate in gates]
        assert grants == [2, 2, 2, None]  # 3 runs x 8 // 3 = 6 <= 8; the 4th waits
        gates[0].release("cdse")
        assert gates[3].claim("cdse", 8) == 2


def test_an_instance_default_limit_is_respected():
    overrides = {"concurrency": {"pools": {"default_limit": 2}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        gate = _gate(instance, "run-1")
        assert gate.claim("auxip", 4) == 2
        assert instance.event_log_storage.get_concurrency_info("aux_source_auxip").slot_count == 2


def test_more_slots_than_connections_is_reported():
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots(pool_name("auxip"), 6)
        messages: list[str] = []
        assert _gate(instance, "run-1", messages).claim("auxip", 4) == 1
        assert any("give the pool at most 4 slots" in m for m in messages)


DAYS = ("2026-01-05", "2026-01-06")
TYPES = ("AUX_POEORB", "AUX_WND", "AUX_ECMWFD", "AUX_RESORB", "AUX_ICE")
MAX_CONNECTIONS = 2


def _source(shared_sample: Path, root: Path, url: str) -> Path:
    """The sample's items of ``TYPES`` as an ItemCollection with hrefs on the loopback server."""
    features = []
    for path in sorted(shared_sample.glob("*/*.json")):
        item = json.loads(path.read_text())
        if item["properties"].get("product:type") not in TYPES:
            continue
        for asset in item["assets"].values():
            asset["href"] = f"{url}/files/{item['id']}/{Path(asset['href']).name}"
        item["links"] = []
        features.append(item)
    source = root / "source" / "items.json"
    source.parent.mkdir(parents=True)
    source.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return source


def _products(root: Path) -> Path:
    path = root / "products.yaml"
    path.write_text(
        "products:\n"
        + "".join(
            f"  - product_type: {t}\n    source: auxip\n    collection: s1-aux\n" for t in TYPES
        )
    )
    return path


@pytest.mark.parametrize("slots", [None, 2])
def test_two_runs_at_once_never_exceed_the_source_connections(tmp_path, shared_sample, slots):
    """Two CLI runs (two processes, one instance) of two days at once, against a server that
    holds each request 0.4 s: at most AUX_AUXIP_MAX_CONNECTIONS requests are ever in flight.
    With the default pool (1 slot) one run waits for the other; with 2 slots both transfer
    at the same time with 1 connection each."""
    home = tmp_path / "dagster"
    home.mkdir()
    instance = dg.DagsterInstance.from_config(str(home))  # tables created once, before the runs
    if slots is not None:
        instance.event_log_storage.set_concurrency_slots(pool_name("auxip"), slots)
    meter = ConnectionMeter(file_handler(shared_sample), delay_s=0.4)
    with serve(meter) as (url, _):
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "AUX_ASSETS_HOME": str(tmp_path / "aux"),
            "AUX_AUXIP_URL": str(_source(shared_sample, tmp_path, url)),
            "AUX_AUXIP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "AUX_PRODUCTS_FILE": str(_products(tmp_path)),
        }
        cli = str(Path(sys.executable).parent / "dagster")
        runs = [
            subprocess.Popen(
                [cli, "asset", "materialize", "-m", "aux_assets.definitions", "--select",
                 "aux_search_results,aux_staged_items", "--partition", day],
                env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for day in DAYS
        ]  # fmt: skip
        outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
    files = [span for span in meter.spans if span[0].startswith("/files/")]
    assert len(files) >= 8
    assert meter.peak <= MAX_CONNECTIONS
    assert meter.peak == MAX_CONNECTIONS  # the limit is used, not merely respected
    text = "\n".join(outputs)
    info = instance.event_log_storage.get_concurrency_info(pool_name("auxip"))
    assert info.active_slot_count == 0 and info.pending_step_count == 0  # all given back
    if slots is None:
        assert info.slot_count == 1
        assert "waiting for a slot of pool aux_source_auxip" in text
        assert text.count("slot claimed, 2 of 2 connection(s)") == 2
    else:
        assert "waiting for a slot" not in text
        assert text.count("slot claimed, 1 of 2 connection(s)") == 2
    instance.dispose()
