"""Issue 13, "Never stale, never outside": a static source reads only files inside its own
folder and ``AUX_LOCAL_FILE_ROOTS`` (symlinks resolved, when the item is checked and again right
before the file is opened); a file whose item gives no size is bounded in bytes
(``AUX_MAX_UNSIZED_BYTES``), and every transfer in time (``AUX_TRANSFER_TIMEOUT_S``).

Real loopback HTTP servers; the Dagster test runs the assets in process on a static catalog.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pystac
import pytest

from aux_assets.catalog.static import LocalCatalog
from aux_assets.defs.resources import build_resources
from aux_assets.staging.stager import ItemOutcome, Stager, StageTask
from aux_assets.staging.transfer import TransferEngine, TransferError, TransferRequest
from aux_assets.storage.local import LocalStorage
from aux_assets.utils.retry import RetryPolicy
from tests.helpers.items import asset_item, make_feature
from tests.helpers.runs import materialize_day
from tests.helpers.servers import Handler, send, serve

FAST = RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.01)
DAY = "2026-01-05"
TEN_GB = 10_000_000_000


def trickle(chunk: bytes, every_s: float, length: int | None = None, for_s: float = 4.0) -> Handler:
    """Answer 200 and send ``chunk`` every ``every_s`` for at most ``for_s`` seconds (until the
    client hangs up): announcing ``length`` bytes, or chunked without a length."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        if length is None:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(length))
        h.end_headers()
        frame = chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk)
        deadline = time.monotonic() + for_s
        try:
            while time.monotonic() < deadline:
                h.wfile.write(frame)
                time.sleep(every_s)
        except OSError:  # the client hung up
            pass
        h.close_connection = True

    return handle


def routes(table: dict[str, Handler]) -> Handler:
    """Dispatch on the request path."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        table[h.path](h)

    return handle


def unsized(item_id: str, href: str, size: int | None = None) -> pystac.Item:
    """An item whose one asset ``<item_id>.bin`` gives no checksum, and no size unless
    ``size``."""
    asset: dict[str, Any] = {"href": href} if size is None else {"href": href, "file:size": size}
    return asset_item(item_id, {f"{item_id}.bin": asset})


def stage(tmp: Path, items: list[pystac.Item], **options: Any) -> list[ItemOutcome]:
    stager = Stager(LocalCatalog(tmp / "catalog"), LocalStorage(tmp / "storage"), **options)
    return stager.stage([StageTask(item, "s1-aux", "auxip") for item in items])


def assert_nothing_kept(tmp: Path, *item_ids: str) -> None:
    """No file of ``item_ids`` stored, no ``.part`` left, none of them registered."""
    storage = tmp / "storage"
    assert not [p for i in item_ids for p in (storage / "s1-aux" / i).rglob("*") if p.is_file()]
    assert not list(storage.rglob("*.part"))
    assert LocalCatalog(tmp / "catalog").get_items("s1-aux", list(item_ids)) == {}


# --- bounds -------------------------------------------------------------------------------------


def test_a_length_over_the_default_limit_without_file_size_fails_at_once(tmp_path: Path) -> None:
    with serve(trickle(b"x" * 1024, 0.05, length=TEN_GB)) as (url, log):
        started = time.monotonic()
        (outcome,) = stage(tmp_path, [unsized("BIG", f"{url}/big.bin")], retry=FAST)
        seconds = time.monotonic() - started
    assert outcome.status == "failed", outcome
    assert (
        f"{TEN_GB} bytes announced by the server: over 8589934592 bytes, the limit for a file "
        "whose item gives no file:size (raise AUX_MAX_UNSIZED_BYTES to allow more)"
    ) in (outcome.reason or "")
    assert seconds < 2 and len(log) == 1  # not retried
    assert_nothing_kept(tmp_path, "BIG")


def test_a_chunked_body_without_file_size_fails_once_it_exceeds_the_limit(tmp_path: Path) -> None:
    sized = b"s" * 100_000  # over the limit, but its item says so: not bounded by it
    table = {
        "/endless.bin": trickle(b"x" * 8192, 0.01),
        "/sized.bin": lambda h: send(h, 200, sized, "application/octet-stream"),
    }
    with serve(routes(table)) as (url, _):
        started = time.monotonic()
        endless, staged = stage(
            tmp_path,
            [
                unsized("ENDLESS", f"{url}/endless.bin"),
                unsized("SIZED", f"{url}/sized.bin", len(sized)),
            ],
            retry=FAST,
            max_unsized_bytes=65_536,
        )
        seconds = time.monotonic() - started
    assert endless.status == "failed", endless
    assert "bytes received: over 65536 bytes, the limit for a file whose item gives no " in (
        endless.reason or ""
    )
    assert "(raise AUX_MAX_UNSIZED_BYTES to allow more)" in (endless.reason or "")
    assert seconds < 2  # 64 KiB arrive in about 0.1 s
    assert_nothing_kept(tmp_path, "ENDLESS")
    assert staged.status == "staged" and staged.assets[0].size == len(sized), staged


def test_a_chunked_body_longer_than_its_file_size_is_cut_at_that_size(tmp_path: Path) -> None:
    """An item announcing 64 KiB whose server streams without end fails as soon as the bytes
    pass 64 KiB, not at the unsized bound or the total timeout."""
    with serve(trickle(b"x" * 8192, 0.01)) as (url, log):
        started = time.monotonic()
        (outcome,) = stage(tmp_path, [unsized("LONG", f"{url}/long.bin", 65_536)], retry=FAST)
        seconds = time.monotonic() - started
    assert outcome.status == "failed", outcome
    cut = r"size mismatch: expected 65536 bytes, (\d+) received"
    received = re.search(cut, outcome.reason or "")
    assert received is not None and 65_536 < int(received[1]) < 200_000, outcome.reason
    assert seconds < 2 and len(log) == 1  # not retried
    assert_nothing_kept(tmp_path, "LONG")


def test_a_slow_trickle_fails_at_the_total_timeout(tmp_path: Path) -> None:
    """Bytes arrive every 0.1 s (never a silence as long as the 0.5 s read timeout), yet the
    transfer ends at the 1 s total timeout."""
    with serve(trickle(b"x" * 10, 0.1)) as (url, log):
        started = time.monotonic()
        (outcome,) = stage(
            tmp_path,
            [unsized("SLOW", f"{url}/slow.bin")],
            retry=FAST,
            read_timeout_s=0.5,
            transfer_timeout_s=1.0,
        )
        seconds = time.monotonic() - started
    assert outcome.status == "failed", outcome
    assert (
        "not done after 1 s, the limit for one file with all its attempts "
        "(raise AUX_TRANSFER_TIMEOUT_S to allow more)"
    ) in (outcome.reason or "")
    assert 0.9 < seconds < 2.5 and len(log) == 1
    assert_nothing_kept(tmp_path, "SLOW")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AUX_MAX_UNSIZED_BYTES", "0", "must be a positive whole number of bytes, e.g. 8589934592"),
        ("AUX_MAX_UNSIZED_BYTES", "8G", "must be a positive whole number of bytes"),
        ("AUX_TRANSFER_TIMEOUT_S", "-1", "must be a positive whole number of seconds, e.g. 3600"),
        ("AUX_LOCAL_FILE_ROOTS", "data/aux", "entry 'data/aux' is not an absolute path"),
        ("AUX_LOCAL_FILE_ROOTS", "/no/such/folder", "entry '/no/such/folder' is no folder"),
        ("AUX_NOW", "yesterday", "is not a time; use ISO 8601, e.g. 2026-02-01T00:00:00Z"),
        ("AUX_NOW", "0001-01-01T00:00:00+01:00", "is not a time"),  # before year 1 in UTC
    ],
)
def test_bad_staging_settings_fail_at_load_naming_the_variable(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{name}=") as caught:
        build_resources({"AUX_ASSETS_HOME": str(tmp_path), name: value})
    assert message in str(caught.value)


def test_staging_settings_default_and_are_read(tmp_path: Path) -> None:
    staging = build_resources({"AUX_ASSETS_HOME": str(tmp_path)})["staging"]
    assert (staging.max_unsized_bytes, staging.transfer_timeout_s) == (8 << 30, 3600)
    assert staging.local_file_roots == []
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    env = {
        "AUX_ASSETS_HOME": str(tmp_path),
        "AUX_MAX_UNSIZED_BYTES": "1000",
        "AUX_TRANSFER_TIMEOUT_S": "5",
        "AUX_LOCAL_FILE_ROOTS": f"{tmp_path / 'home'}{os.pathsep}{tmp_path / 'alias'}",
    }
    (tmp_path / "home").mkdir()
    staging = build_resources(env)["staging"]
    assert (staging.max_unsized_bytes, staging.transfer_timeout_s) == (1000, 5)
    assert staging.local_file_roots == [str(tmp_path.resolve() / "home"), str(tmp_path.resolve())]


# --- file roots ---------------------------------------------------------------------------------


def test_the_engine_checks_the_resolved_path_right_before_opening(tmp_path: Path) -> None:
    """A file inside the root replaced by a link to a file outside it (after the stager
    checked it) is refused by the engine; a link inside the root to a file inside is read."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not for staging")
    (root / "real.bin").write_bytes(b"inside")
    (root / "alias.bin").symlink_to(root / "real.bin")
    (root / "swapped.bin").symlink_to(outside / "secret.txt")

    async def fetch(name: str) -> TransferRequest:
        request = TransferRequest(
            (root / name).as_uri(), tmp_path / "out" / f"{name}.part", file_roots=(root,)
        )
        async with TransferEngine() as engine:
            await engine.fetch(request)
        return request

    read = asyncio.run(fetch("alias.bin"))
    assert read.part_path.read_bytes() == b"inside"
    with pytest.raises(TransferError) as caught:
        asyncio.run(fetch("swapped.bin"))
    assert (
        f"{root / 'swapped.bin'} (resolved: {(outside / 'secret.txt').resolve()}) is outside the "
        f"folders this source may read ({root.resolve()}); to allow it, add a folder holding it "
        "to AUX_LOCAL_FILE_ROOTS"
    ) in str(caught.value)
    assert not (tmp_path / "out" / "swapped.bin.part").exists()


def _feature(item_id: str, product_type: str, href: str) -> dict[str, Any]:
    feature = make_feature(item_id, product_type, f"{DAY}T06:00:00Z", platform=None)
    feature["assets"] = {f"{item_id}.bin": {"href": href}}
    return feature


def test_a_static_source_reads_only_its_folder_and_the_allowed_ones_through_dagster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One day through the assets on a static catalog in ``root``: ``/etc/passwd`` and a link
    inside ``root`` to a file outside fail alone before any I/O; a file inside ``root`` and
    one in ``AUX_LOCAL_FILE_ROOTS`` are staged; the transfer bounds reach the stager."""
    root, outside, shared = tmp_path / "root", tmp_path / "outside", tmp_path / "shared"
    for folder in (root / "data", outside, shared):
        folder.mkdir(parents=True)
    (outside / "secret.txt").write_bytes(b"not for staging")
    (root / "link.bin").symlink_to(outside / "secret.txt")
    (root / "data" / "inside.bin").write_bytes(b"inside the root")
    (shared / "allowed.bin").write_bytes(b"in an allowed folder")
    cases = {
        "PASSWD": "file:///etc/passwd",
        "LINK": "./link.bin",
        "INSIDE": "./data/inside.bin",
        "ALLOWED": (shared / "allowed.bin").as_uri(),
        "BIG": "/big.bin",
        "SLOW": "/slow.bin",
    }
    products = "products:\n" + "".join(
        f"  - {{product_type: AUX_{item_id}, source: auxip, collection: s1-aux, "
        "policy: ClosestStartValidity}\n"
        for item_id in cases
    )
    (tmp_path / "products.yaml").write_text(products)
    server = routes(
        {"/big.bin": trickle(b"x" * 1024, 0.05, length=TEN_GB), "/slow.bin": trickle(b"x", 0.1)}
    )
    with serve(server) as (url, _):
        features = [
            _feature(i, f"AUX_{i}", url + href if href.startswith("/") else href)
            for i, href in cases.items()
        ]
        catalog = {"type": "FeatureCollection", "features": features}
        (root / "items.json").write_text(json.dumps(catalog))
        home = tmp_path / "home"
        for name, value in {
            "AUX_ASSETS_HOME": str(home),
            "AUX_AUXIP_URL": (root / "items.json").as_uri(),
            "AUX_PRODUCTS_FILE": str(tmp_path / "products.yaml"),
            "AUX_LOCAL_FILE_ROOTS": str(shared),
            "AUX_MAX_UNSIZED_BYTES": "1000",
            "AUX_TRANSFER_TIMEOUT_S": "1",
        }.items():
            monkeypatch.setenv(name, value)
        result, outcomes = materialize_day(home, DAY)
    assert not result.success  # items failed
    status = {item_id: o["status"] for item_id, o in outcomes.items()}
    assert status == {
        "PASSWD": "failed",
        "LINK": "failed",
        "INSIDE": "staged",
        "ALLOWED": "staged",
        "BIG": "failed",
        "SLOW": "failed",
    }
    roots = f"({root.resolve()}, {shared.resolve()})"
    assert outcomes["PASSWD"]["reason"] == (
        f"asset 'PASSWD.bin': /etc/passwd is outside the folders this source may read {roots}; "
        "to allow it, add a folder holding it to AUX_LOCAL_FILE_ROOTS (absolute paths "
        "separated by ':')"
    )
    assert outcomes["LINK"]["reason"].startswith(
        f"asset 'LINK.bin': {root / 'link.bin'} (resolved: {(outside / 'secret.txt').resolve()})"
        f" is outside the folders this source may read {roots}"
    )
    assert "over 1000 bytes" in outcomes["BIG"]["reason"]
    assert "not done after 1 s" in outcomes["SLOW"]["reason"]
    stored = {p.name: p.read_bytes() for p in (home / "storage").rglob("*.bin")}
    assert stored == {"INSIDE.bin": b"inside the root", "ALLOWED.bin": b"in an allowed folder"}
    registered = LocalCatalog(home / "catalog").get_items("s1-aux", list(cases))
    assert sorted(registered) == ["ALLOWED", "INSIDE"]
