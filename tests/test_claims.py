"""Claims on items across runs: two runs staging the same items move each file once."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pystac

from aux_assets.catalog.static import LocalCatalog
from aux_assets.staging.claims import FileClaims
from aux_assets.staging.stager import ItemOutcome, Stager, StageTask
from aux_assets.storage.local import LocalStorage
from aux_assets.utils.urls import file_path
from tests.helpers.servers import file_handler, serve

KEY = ("s1-aux", "ORB")


def test_a_claim_is_held_by_one_run_until_released(tmp_path: Path) -> None:
    mine, theirs = FileClaims(tmp_path), FileClaims(tmp_path)
    assert mine.claim([KEY, ("s1-aux", "OTHER")]) == {KEY, ("s1-aux", "OTHER")}
    assert mine.claim([KEY]) == {KEY}  # held already: still this run's
    assert theirs.claim([KEY, ("s1-aux", "FREE")]) == {("s1-aux", "FREE")}
    mine.release([KEY])
    assert theirs.claim([KEY]) == {KEY}
    theirs.release([KEY, ("s1-aux", "FREE")])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{hashlib.sha256(b's1-aux/OTHER').hexdigest()[:32]}.lock"  # still held by ``mine``
    ]


def test_the_claims_of_a_killed_run_are_free_at_once(tmp_path: Path) -> None:
    script = (
        "import sys, time; from pathlib import Path; from aux_assets.staging.claims import "
        "FileClaims; FileClaims(Path(sys.argv[1])).claim([('s1-aux', 'ORB')]); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert FileClaims(tmp_path).claim([KEY]) == set()
        holder.kill()  # SIGKILL: no release, no clean-up
        holder.wait(10)
        assert FileClaims(tmp_path).claim([KEY]) == {KEY}
    finally:
        holder.kill()


def _item(item_id: str, href: str, data: bytes) -> pystac.Item:
    return pystac.Item(
        id=item_id,
        geometry=None,
        bbox=None,
        datetime=None,
        properties={
            "start_datetime": "2026-01-04T22:59:42Z",
            "end_datetime": "2026-01-06T00:59:42Z",
        },
        assets={
            f"{item_id}.EOF": pystac.Asset(
                href,
                extra_fields={
                    "file:size": len(data),
                    "file:checksum": hashlib.md5(data).hexdigest(),
                },
            )
        },
    )


def test_two_runs_staging_the_same_items_move_each_file_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    serve_file = file_handler(src)

    def slow(handler: BaseHTTPRequestHandler) -> None:  # both runs are mid-transfer together
        time.sleep(0.3)
        serve_file(handler)

    data = {f"ORB{i}": bytes([i]) * (1000 + i) for i in range(5)}
    for item_id, body in data.items():
        (src / f"{item_id}.EOF").write_bytes(body)
    storage = LocalStorage(tmp_path / "storage")
    outcomes: list[list[ItemOutcome]] = []
    with serve(slow) as (url, log):
        tasks = [
            StageTask(_item(i, f"{url}/files/{i}.EOF", body), "s1-aux", "auxip")
            for i, body in data.items()
        ]

        def run() -> None:
            stager = Stager(
                LocalCatalog(tmp_path / "catalog"),
                storage,
                limits={"auxip": 2},
                claims=FileClaims(tmp_path / "claims"),
            )
            outcomes.append(stager.stage(tasks))

        runs = [threading.Thread(target=run) for _ in range(2)]
        for thread in runs:
            thread.start()
        for thread in runs:
            thread.join(60)
    gets = sorted(r["path"] for r in log if r["path"].startswith("/files/"))
    assert gets == sorted(f"/files/{i}.EOF" for i in data)  # each file moved once
    statuses = sorted(o.status for run in outcomes for o in run)
    assert statuses == ["present"] * 5 + ["staged"] * 5
    for run in outcomes:
        for outcome in run:
            path = file_path(outcome.assets[0].href)
            assert path is not None and path.read_bytes() == data[outcome.item_id]
    assert list((tmp_path / "claims").iterdir()) == []  # every claim released
