"""Fault suite (issue 5): a faulty server, SIGKILL at random points, concurrent runs.

The day is the demo products file's selection for 2026-01-05 from the generated AUXIP sample
(99 items, S1/S2/S3, two unpacked), served over HTTP by
:class:`tests.helpers.fault_server.FaultServer` and staged by the real
:class:`~aux_assets.staging.stager.Stager` into a LocalCatalog and a LocalStorage. Every check
re-hashes the files on disk and compares them with the source.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from aux_assets.auth import OAuth2Auth, OAuth2Settings
from aux_assets.catalog.static import LocalCatalog
from aux_assets.staging.stager import Stager
from aux_assets.storage.local import LocalStorage
from aux_assets.utils.retry import RetryPolicy
from tests.helpers.fault_day import (
    DayTask,
    check_catalog,
    expected_files,
    leftovers,
    plan_day,
    served_tasks,
    storage_problems,
    visible_files,
)
from tests.helpers.fault_server import (
    CLIENT_ID,
    CLIENT_SECRET,
    FAULTS,
    TRANSIENT_FAULTS,
    FaultServer,
)

REPO = Path(__file__).resolve().parents[1]
READ_TIMEOUT_S = 0.5  # the stall fault lasts 1.5 s
RETRY = RetryPolicy(attempts=8, backoff_s=0.05, max_backoff_s=0.2)
KILL_TRIALS = 10
KILL_SEED = 20260105


@dataclass(frozen=True)
class Day:
    sample: Path
    tasks: list[DayTask]
    expected: dict[str, str]  # storage key -> sha256 of the source bytes

    def ids(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for task in self.tasks:
            out.setdefault(task.collection, set()).add(task.item_id)
        return out

    def subset(self, step: int) -> Day:
        """Every ``step``-th item, plus every item that is unpacked."""
        tasks = [t for i, t in enumerate(self.tasks) if i % step == 0 or t.unpack]
        return Day(self.sample, tasks, expected_files(tasks, self.sample))


@pytest.fixture(scope="module")
def day(shared_sample: Path) -> Day:
    tasks = plan_day(shared_sample)
    assert len(tasks) >= 90 and sum(t.unpack for t in tasks) >= 1
    return Day(shared_sample, tasks, expected_files(tasks, shared_sample))


def _auth(server: FaultServer) -> OAuth2Auth:
    return OAuth2Auth(
        OAuth2Settings(server.token_url, server.base, CLIENT_ID, client_secret=CLIENT_SECRET)
    )


def _assert_complete(day: Day, root: Path) -> None:
    """Everything of the day is registered once, stored, verifies against the source, and is
    linked from its collection (``catalog.json`` readers see it)."""
    storage, catalog = root / "storage", root / "catalog"
    assert storage_problems(storage, day.expected) == []
    assert sorted(visible_files(storage)) == sorted(day.expected)
    state = check_catalog(catalog, storage, day.expected)
    assert state.problems == []
    assert state.items == day.ids()
    for collection, links in state.links.items():
        assert len(links) == len(set(links)), f"duplicate item links in {collection}"
        assert {link.split("/")[1] for link in links} == day.ids()[collection]


# --- 1. 20 % of the requests faulty -----------------------------------------------------------


def test_a_day_is_staged_completely_with_20_percent_faulty_requests(
    day: Day, tmp_path: Path
) -> None:
    with FaultServer(day.sample, rate=0.2, seed=3, require_token=True) as server:
        auth = _auth(server)
        tasks = served_tasks(day.tasks, server.base, auth)
        stager = Stager(
            LocalCatalog(tmp_path / "catalog"),
            LocalStorage(tmp_path / "storage"),
            limits={"auxip": 8},
            retry=RETRY,
            read_timeout_s=READ_TIMEOUT_S,
        )
        runs = []
        for _ in range(4):
            outcomes = stager.stage(tasks)
            runs.append(outcomes)
            if all(o.status != "failed" for o in outcomes):
                break
        hits = server.file_hits()

    # complete: the last run has every item staged or present, each item staged exactly once
    assert {o.status for o in runs[-1]} <= {"staged", "present"}
    staged = Counter(o.item_id for outcomes in runs for o in outcomes if o.status == "staged")
    assert sorted(staged) == sorted(t.item_id for t in day.tasks) and set(staged.values()) == {1}
    # only the HTML page fails an item (it is refused, not retried); every other fault is retried
    reasons = [o.reason or "" for outcomes in runs for o in outcomes if o.status == "failed"]
    assert all("HTML page instead of the file" in r for r in reasons), reasons
    assert CLIENT_SECRET not in json.dumps([o.to_json() for r in runs for o in r])
    _assert_complete(day, tmp_path)
    assert leftovers(tmp_path / "storage") == []

    faulty = [h for h in hits if h.fault]
    assert set(Counter(h.fault for h in faulty)) == set(FAULTS), "every fault kind was injected"
    assert 0.1 <= len(faulty) / len(hits) <= 0.35
    assert len(reasons) == Counter(h.fault for h in faulty)["html"]
    # cuts and stalls were resumed with Range on the healthy answers (206)
    resumed = [h for h in hits if h.status == 206]
    assert resumed and all(h.headers["if-range"].startswith('"') for h in resumed)
    for bad in [h for h in faulty if h.fault != "html"]:
        after = next(h for h in hits if h.path == bad.path and h.at > bad.at)
        if bad.fault == "429":  # Retry-After: 1 was honoured
            assert after.at - bad.at >= 0.95
        elif bad.fault == "401":  # the client renewed its token once and sent the new one
            assert after.headers["authorization"] != bad.headers["authorization"]
        elif bad.fault in {"cut", "stall"}:  # resumed after the bytes that had arrived
            assert int(after.headers["range"].removeprefix("bytes=").rstrip("-")) > 0
            if bad.fault == "stall":  # the client's read timeout, not the server, ended it
                assert after.at - bad.at < server.stall_s
    assert server.state.token_requests <= 1 + Counter(h.fault for h in faulty)["401"]
    kinds = dict(Counter(h.fault for h in faulty))
    print(f"\n{len(hits)} file requests, faults {kinds}, {len(resumed)} resumed, {len(runs)} runs")


# --- 2. SIGKILL at random points, then a re-run -----------------------------------------------


def _spec(root: Path, day: Day, server: FaultServer, **extra: object) -> Path:
    tasks = root / "tasks.json"
    tasks.write_text(json.dumps([asdict(t) for t in day.tasks]))
    spec = {
        "catalog": str(root / "catalog"),
        "storage": str(root / "storage"),
        "tasks": str(tasks),
        "base": server.base,
        "token": server.require_token,
        "read_timeout_s": READ_TIMEOUT_S,
        "connections": 8,
        "attempts": 8,
        **extra,
    }
    path = root / f"spec-{len(list(root.glob('spec-*.json')))}.json"
    path.write_text(json.dumps(spec))
    return path


def _start(spec: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.fault_driver", str(spec)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def _count(root: Path, trigger: str) -> int:
    """How far a run has got: ``.part`` files, visible files or registered item files."""
    if trigger == "parts":
        return sum(name.endswith(".part") for _, _, names in os.walk(root) for name in names)
    if trigger == "files":
        return len(visible_files(root / "storage"))
    return sum(
        name.endswith(".json")
        and not name.startswith(".")
        and Path(folder).parent.parent == root / "catalog"
        for folder, _, names in os.walk(root / "catalog")
        for name in names
    )


def _kill_at(process: subprocess.Popen[str], root: Path, trigger: str, point: float) -> bool:
    """SIGKILL ``process`` after ``point`` seconds (``time``) or once ``_count`` reaches
    ``point``; False if it finished first."""
    deadline = time.monotonic() + (point if trigger == "time" else 60.0)
    while process.poll() is None and time.monotonic() < deadline:
        if trigger != "time" and _count(root, trigger) >= point:
            break
        time.sleep(0.001)
    alive = process.poll() is None
    if alive:
        process.send_signal(signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return alive


@pytest.fixture(scope="module")
def kill_server(day: Day) -> Iterator[FaultServer]:
    with FaultServer(day.sample, rate=0.0, require_token=True, throttle_s=0.001) as server:
        yield server


KILLS: list[tuple[int, str, float, bool, int]] = []  # trial, trigger, point, landed, leftovers


@pytest.mark.parametrize("trial", range(KILL_TRIALS))
def test_sigkill_at_a_random_point_then_the_rerun_completes(
    day: Day,
    kill_server: FaultServer,
    tmp_path: Path,
    trial: int,
) -> None:
    small = day.subset(3)
    rng = random.Random(f"{KILL_SEED}:{trial}")
    trigger = ("time", "parts", "files", "items")[trial % 4]
    n_items = len(small.tasks)
    point = rng.uniform(0.0, 0.4) if trigger == "time" else float(rng.randint(1, n_items * 2 // 3))
    spec = _spec(tmp_path, small, kill_server)
    alive = _kill_at(_start(spec), tmp_path, trigger, point)
    KILLS.append((trial, trigger, point, alive, len(leftovers(tmp_path / "storage"))))

    # what the killed run left: only verified files under final names; items point at them
    assert storage_problems(tmp_path / "storage", small.expected) == []
    state = check_catalog(tmp_path / "catalog", tmp_path / "storage", small.expected)
    assert state.problems == []

    # the re-run stages what is missing (in this process, as a new run)
    auth = _auth(kill_server)
    stager = Stager(LocalCatalog(tmp_path / "catalog"), LocalStorage(tmp_path / "storage"))
    outcomes = stager.stage(served_tasks(small.tasks, kill_server.base, auth))
    assert [(o.item_id, o.reason) for o in outcomes if o.status == "failed"] == []
    registered = {(o.collection, o.item_id) for o in outcomes if o.status == "present"}
    linked = {(c, link.split("/")[1]) for c, links in state.links.items() for link in links}
    assert registered >= linked  # what the killed run registered is not staged again
    _assert_complete(small, tmp_path)


def test_a_kill_between_item_files_and_collection_links_leaves_no_unlinked_item(
    day: Day, kill_server: FaultServer, tmp_path: Path
) -> None:
    small = day.subset(9)
    process = _start(_spec(tmp_path, small, kill_server, die_before_links=True))
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert process.stdout is not None
    process.stdout.close()
    killed = check_catalog(tmp_path / "catalog", tmp_path / "storage", small.expected)
    assert killed.problems == []  # one collection's item files are written, none is linked yet
    assert [c for c, ids in killed.items.items() if ids] == [next(iter(small.ids()))]
    assert all(links == [] for links in killed.links.values())
    auth = _auth(kill_server)
    stager = Stager(LocalCatalog(tmp_path / "catalog"), LocalStorage(tmp_path / "storage"))
    outcomes = stager.stage(served_tasks(small.tasks, kill_server.base, auth))
    assert {o.status for o in outcomes} <= {"staged", "present"}
    _assert_complete(small, tmp_path)  # every item linked: the re-run registered them


def test_sigkill_trials_landed_while_staging_ran() -> None:
    assert len(KILLS) == KILL_TRIALS, KILLS
    assert sum(landed for _, _, _, landed, _ in KILLS) >= KILL_TRIALS - 2, KILLS
    print("\nSIGKILL trials (trial, trigger, point, landed, leftovers):", *KILLS, sep="\n")


# --- 3. concurrent runs of the same items -----------------------------------------------------


@pytest.mark.parametrize("runs", [2, 4])
def test_concurrent_runs_never_duplicate_or_corrupt(day: Day, tmp_path: Path, runs: int) -> None:
    with FaultServer(
        day.sample, rate=0.2, seed=runs, require_token=True, faults=TRANSIENT_FAULTS
    ) as server:
        go = tmp_path / "go"
        processes = [_start(_spec(tmp_path, day, server, go=str(go))) for _ in range(runs)]
        go.touch()
        outputs = [p.communicate(timeout=90)[0] for p in processes]
        faults = Counter(h.fault for h in server.file_hits() if h.fault)
    results = [json.loads(out) for out in outputs]
    assert [p.returncode for p in processes] == [0] * runs, [r["failed"] for r in results]
    assert max(r["started"] for r in results) < min(r["ended"] for r in results), "overlapped"
    assert sum(faults.values()) > 0
    staged = sum(r["statuses"].get("staged", 0) for r in results)
    assert staged >= len(day.tasks)  # each item was staged by at least one run
    _assert_complete(day, tmp_path)
    assert leftovers(tmp_path / "storage") == []
    print(f"\n{runs} runs: {[r['statuses'] for r in results]}, faults {dict(faults)}")
