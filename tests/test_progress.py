"""Staging progress: the tracker's lines (items, bytes, rate, ETA, unsized, waiting), and a
stager on a slow loopback server logging them while it works."""

import hashlib
import re
import threading
import time

import pystac
import pytest

from aux_assets.catalog.static import LocalCatalog
from aux_assets.staging.gates import OpenGate, slot_name
from aux_assets.staging.progress import (
    Progress,
    Totals,
    duration_text,
    eta_text,
    rate_of,
)
from aux_assets.staging.stager import Stager, StageTask
from aux_assets.storage.local import LocalStorage
from aux_assets.utils.retry import RetryPolicy
from aux_assets.utils.text import size_text
from aux_assets.utils.urls import redact_urls
from tests.helpers.servers import file_handler, serve, slow_file_handler

FAST = RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.01)
MiB = 1 << 20
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
LINE = re.compile(
    r"auxip: (?P<done>\d+)/(?P<items>\d+) items(?: \((?P<counts>[^)]*)\))?, "
    r"(?P<bytes>[\d.]+ \w+) of (?P<total>[\d.]+ \w+)(?P<unsized> \+\d+ unsized)?, "
    r"(?P<rate>[\d.]+ \w+)/s, ETA (?P<eta>.+)"
)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def _seconds(eta: str) -> float:
    match = re.fullmatch(r"([\d.]+) s", eta)
    assert match, f"ETA {eta!r} is not a few seconds"
    return float(match[1])


def test_sizes_and_durations_read_as_people_write_them():
    assert [size_text(n) for n in (0, 512, 1536, 85.3 * MiB, 3.4 * (1 << 30))] == [
        "0 B",
        "512 B",
        "1.5 KiB",
        "85.3 MiB",
        "3.4 GiB",
    ]
    assert size_text(5 << 40) == "5.0 TiB"
    assert [duration_text(s) for s in (0.84, 27.4, 250, 7500, -1)] == [
        "0.8 s",
        "27 s",
        "4 min 10 s",
        "2 h 5 min",
        "0.0 s",
    ]


def test_rate_and_eta_never_divide_by_zero():
    assert rate_of((5.0, 100), (5.0, 900)) == 0.0
    assert rate_of((0.0, 0), (4.0, 400)) == 100.0
    assert eta_text(1000, 0.0) == "unknown"
    assert eta_text(0, 0.0) == "0 s"
    assert eta_text(1000, 100.0) == "10 s"
    assert Totals().mib_per_s == 0.0
    assert Totals(items=3, bytes=30 * MiB, seconds=10.0).numbers() == {
        "run_items_total": 3,
        "run_bytes_total": 30 * MiB,
        "run_mib_per_s": 3.0,
        "run_staging_seconds": 10.0,
    }


def test_a_line_gives_items_bytes_rate_and_an_eta_weighted_by_bytes():
    clock = Clock()
    progress = Progress("auxip", "source auxip", clock)
    progress.items = 3
    big = progress.expect(("aux", "A"), 100 * MiB)
    progress.expect(("aux", "B"), 100 * MiB)
    progress.expect(("aux", "C"), 100 * MiB)
    assert progress.line().endswith("0 B of 300.0 MiB, 0 B/s, ETA unknown")  # nothing moved
    progress.admitted()
    clock.now += 10
    big.count += 50 * MiB  # half of a file: counted as it arrives
    assert progress.line() == (
        "auxip: 0/3 items, 50.0 MiB of 300.0 MiB, 5.0 MiB/s, ETA 50 s"  # 250 MiB at 5 MiB/s
    )
    clock.now += 10
    big.count += 50 * MiB
    assert progress.decide(("aux", "A"), "transferred") is False  # not an outcome yet
    assert progress.line() == (
        "auxip: 1/3 items (1 transferred), 100.0 MiB of 300.0 MiB, 5.0 MiB/s, ETA 40 s"
    )
    assert progress.decide(("aux", "A"), "staged") is True
    assert progress.decide(("aux", "B"), "failed") is True  # nothing arrived: drops from the total
    assert progress.decide(("aux", "B"), "failed") is False  # one outcome per item
    clock.now += 10
    assert progress.line() == (
        "auxip: 2/3 items (1 staged, 1 failed), 100.0 MiB of 200.0 MiB, 3.3 MiB/s, ETA 30 s"
    )
    clock.now += 10  # the rate is the last three intervals': a stall slows it
    assert progress.line().endswith(", 1.7 MiB/s, ETA 1 min 0 s")
    assert not progress.finished
    progress.decide(("aux", "C"), "present")
    assert progress.finished
    assert progress.summary() == (
        "auxip: 3/3 items (1 staged, 1 present, 1 failed), 100.0 MiB of 100.0 MiB in 40 s, "
        "2.5 MiB/s"
    )


def test_unsized_items_count_as_items_and_stay_out_of_the_eta():
    clock = Clock()
    progress = Progress("auxip", "source auxip", clock)
    progress.items = 3
    progress.admitted()
    sized = progress.expect(("aux", "A"), 10 * MiB)
    unsized = progress.expect(("aux", "B"), None)
    progress.expect(("aux", "C"), None)
    clock.now += 2
    sized.count += 4 * MiB
    unsized.count += 6 * MiB  # counts as done, not as left
    assert progress.line() == (
        "auxip: 0/3 items, 10.0 MiB of 16.0 MiB +2 unsized, 5.0 MiB/s, ETA 1.2 s"
    )
    sized.count += 20 * MiB  # a restarted download: more than announced, nothing left
    assert progress.bytes_left() == (0, 2)
    assert progress.line().endswith("ETA 0 s")
    assert progress.meter(("aux", "unknown")).count == 0  # not expected: counted nowhere


def test_waiting_for_a_slot_says_for_how_long_and_what_is_queued():
    clock = Clock()
    progress = Progress("auxip", "pool aux_source_auxip", clock)
    progress.items = 40
    for i in range(39):
        progress.expect(("aux", str(i)), 90 * MiB)
    progress.expect(("aux", "39"), None)
    progress.waiting()
    clock.now += 30
    progress.waiting()  # a later refusal: still waiting since the first
    assert progress.line() == (
        "auxip: waiting for a slot of pool aux_source_auxip for 30 s "
        "(40 items, 3.4 GiB +1 unsized queued)"
    )
    progress.admitted()
    assert "waiting" not in progress.line()


def test_gates_name_their_slot_for_messages():
    class PoolGate(OpenGate):
        def slot_name(self, source: str) -> str:
            return f"pool aux_source_{source}"

    assert slot_name(OpenGate(), "auxip") == "source auxip"
    assert slot_name(PoolGate(), "auxip") == "pool aux_source_auxip"


def test_urls_quoted_in_a_message_lose_credentials_and_queries():
    text = "catalog said: 502 for url 'https://user:pw@cat.example/items?token=abc#x' (retry)"
    assert redact_urls(text) == "catalog said: 502 for url 'https://cat.example/items' (retry)"


def _task(item_id: str, href: str, data: bytes | None, size: bool = True) -> StageTask:
    asset = {"href": href, "type": "application/octet-stream"}
    if data is not None:
        asset["file:checksum"] = hashlib.md5(data).hexdigest()
        if size:
            asset["file:size"] = len(data)
    item = pystac.Item.from_dict(
        {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": item_id,
            "geometry": None,
            "properties": {"datetime": "2026-01-05T00:00:00Z"},
            "assets": {"file": asset},
            "links": [],
        }
    )
    return StageTask(item, "aux", "auxip")


def _publish(root, url, n: int, size: int) -> list[StageTask]:
    tasks = []
    for i in range(n):
        data = hashlib.sha256(str(i).encode()).digest() * (size // 32)
        (root / f"f{i}.bin").write_bytes(data)
        tasks.append(_task(f"AUXIP_{i}", f"{url}/files/f{i}.bin", data))
    return tasks


def _stager(tmp_path, lines: list[str], warnings: list[str], **kwargs) -> Stager:
    return Stager(
        LocalCatalog(tmp_path / "catalog"),
        LocalStorage(tmp_path / "storage"),
        retry=FAST,
        log=lines.append,
        warn=warnings.append,
        **kwargs,
    )


def test_a_progress_interval_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="progress_interval_s must be > 0, got 0"):
        _stager(tmp_path, [], [], progress_interval_s=0)
    assert not (tmp_path / "catalog").exists() and not (tmp_path / "storage").exists()


def test_a_slow_server_shows_progress_lines_with_growing_counts_and_a_sane_eta(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    lines: list[str] = []
    warnings: list[str] = []
    # 6 files of 256 KiB, 2 at a time at 200 KiB/s each: about 4 s
    with serve(slow_file_handler(src, bytes_per_s=200 << 10)) as (url, _):
        tasks = _publish(src, url, 6, 256 << 10)
        stager = _stager(tmp_path, lines, warnings, limits={"auxip": 2}, progress_interval_s=0.5)
        started = time.monotonic()
        outcomes = stager.stage(tasks)
        took = time.monotonic() - started
    assert [o.status for o in outcomes] == ["staged"] * 6
    assert warnings == []
    progress = [m for line in lines if (m := LINE.fullmatch(line))]
    assert len(progress) >= 4, lines
    done = [int(m["done"]) for m in progress]
    moved = [_bytes(m["bytes"]) for m in progress]
    assert done == sorted(done) and moved == sorted(moved), lines  # never decrease
    assert done[-1] > done[0] and moved[-1] > moved[0], lines  # and grow
    # the first line comes before any file can be complete (1.28 s each): bytes mid-file count
    assert done[0] == 0 and 0 < moved[0] < 6 * (256 << 10), lines
    assert {m["items"] for m in progress} == {"6"}
    for m in progress[:-1]:  # the total is what is announced until everything is in
        assert _bytes(m["total"]) == pytest.approx(1.5 * MiB, rel=0.01), m[0]
    etas = [_seconds(m["eta"]) for m in progress]
    assert all(0 <= eta <= 60 for eta in etas), lines
    assert etas[-1] <= etas[0] + 1, lines  # comes down as the files come in
    assert etas[0] <= took * 3, lines  # near what it really took, not off by orders
    outcome_lines = [line for line in lines if line.startswith("auxip: staged ")]
    assert sorted(outcome_lines) == sorted(set(outcome_lines))  # once per item
    assert sorted(line.split()[2] for line in outcome_lines) == [f"aux/AUXIP_{i}" for i in range(6)]
    assert re.fullmatch(r"auxip: staged aux/AUXIP_\d \(256\.0 KiB, [\d.]+ s\)", outcome_lines[0])
    assert re.fullmatch(
        r"auxip: 6/6 items \(6 staged\), 1\.5 MiB of 1\.5 MiB in [\d.]+ s, [\d.]+ KiB/s",
        lines[-1],
    )
    assert stager.totals.items == 6
    assert stager.totals.bytes == 6 * (256 << 10)
    assert 0 < stager.totals.mib_per_s < 10


def test_each_outcome_is_logged_once_when_decided_failures_as_warnings(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    lines: list[str] = []
    warnings: list[str] = []
    with serve(file_handler(src)) as (url, _):
        good = _publish(src, url, 2, 4096)
        host = url.removeprefix("http://")
        missing = _task("AUXIP_GONE", f"http://user:secret@{host}/files/gone.bin?token=t0k", b"x")
        unsized = _task("AUXIP_2", f"{url}/files/f1.bin", (src / "f1.bin").read_bytes(), False)
        stager = _stager(tmp_path, lines, warnings)
        stager.stage([*good, missing])
        stager.stage([*good, unsized])  # again: present, and one unsized file staged
    assert len(warnings) == 1
    assert warnings[0].startswith("auxip: failed aux/AUXIP_GONE: file: http://127.0.0.1:")
    assert "HTTP 404" in warnings[0]
    assert "secret" not in warnings[0] and "t0k" not in warnings[0]
    assert sorted(line.split(" (")[0] for line in lines if " aux/" in line) == [
        "auxip: present aux/AUXIP_0",
        "auxip: present aux/AUXIP_1",
        "auxip: staged aux/AUXIP_0",
        "auxip: staged aux/AUXIP_1",
        "auxip: staged aux/AUXIP_2",
    ]
    summaries = [line for line in lines if "/3 items" in line]
    assert summaries[0].startswith("auxip: 3/3 items (2 staged, 1 failed), 8.0 KiB of 8.0 KiB")
    assert summaries[1].startswith("auxip: 3/3 items (1 staged, 2 present), 4.0 KiB of 4.0 KiB")


class HeldGate:
    """Refuses every claim until ``opened`` is set; names its slots like a Dagster pool."""

    def __init__(self) -> None:
        self.opened = threading.Event()

    def slot_name(self, source: str) -> str:
        return f"pool aux_source_{source}"

    def claim(self, source: str, connections: int) -> int | None:
        return connections if self.opened.is_set() else None

    def release(self, source: str) -> None:
        return None


def test_waiting_for_a_slot_is_reported_every_interval(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    lines: list[str] = []
    gate = HeldGate()
    outcomes: list = []
    with serve(file_handler(src)) as (url, _):
        tasks = _publish(src, url, 3, 64 << 10)
        stager = _stager(tmp_path, lines, [], gate=gate, progress_interval_s=0.2)
        thread = threading.Thread(target=lambda: outcomes.extend(stager.stage(tasks)))
        thread.start()
        deadline = time.monotonic() + 20
        while sum("waiting for a slot" in line for line in lines) < 3:
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        gate.opened.set()
        thread.join(30)
    assert not thread.is_alive()
    assert [o.status for o in outcomes] == ["staged"] * 3
    waiting = [line for line in lines if "waiting for a slot" in line]
    assert all(
        re.fullmatch(
            r"auxip: waiting for a slot of pool aux_source_auxip for [\d.]+ s "
            r"\(3 items, 192\.0 KiB queued\)",
            line,
        )
        for line in waiting
    ), waiting
    assert lines[-1].startswith("auxip: 3/3 items (3 staged), 192.0 KiB of 192.0 KiB")
