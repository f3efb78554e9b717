"""A day through Dagster against the real rs-server AUXIP: searched in its dialect, downloaded
from its station with the station's own token, stored and catalogued locally; an evicted file
fails alone; a re-run moves nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from aux_assets.defs.assets import (
    IO_MANAGER,
    aux_catalog_items,
    aux_search_results,
    aux_staged_items,
)
from aux_assets.defs.io_managers import JsonPartitionIOManager
from aux_assets.defs.resources import build_resources
from aux_assets.utils.urls import file_path
from tests.fixtures.rs_server import RsAuxip
from tests.helpers.station import (
    BASIC,
    CLIENT_ID,
    CLIENT_SECRET,
    PASSWORD,
    USERNAME,
    Product,
)

DAY = "2026-01-05"
PRODUCTS = """products:
  - product_type: AUX_POEORB
    collection: s1-aux
    source_collections: [adgs]
    platforms: [sentinel-1a, sentinel-1c]
  - product_type: AUX_ECMWFD
    collection: s2-aux
    source_collections: [adgs]
    policy: ValIntersect
  - product_type: AUX_WAV
    collection: s1-aux
    source_collections: [adgs]
    policy: ValIntersect
    mandatory: false
"""


@pytest.fixture
def day(rs_auxip: RsAuxip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    start = datetime(2026, 1, 5, 3, tzinfo=UTC)
    evicted = Product(
        "S1A_OPER_AUX_WAV_OPOD_20260105T000000_V20260105T030000_20260105T060000",
        "AUX_WAV",
        start,
        start + timedelta(hours=3),
        start,
        start,
        ("SENTINEL-1", "A"),
        evicted=datetime(2026, 2, 1, tzinfo=UTC),
    )
    rs_auxip.station.add(evicted)
    products = tmp_path / "products.yaml"
    products.write_text(PRODUCTS)
    station = rs_auxip.station.url
    env = {
        "AUX_ASSETS_HOME": str(tmp_path / "home"),
        "AUX_PRODUCTS_FILE": str(products),
        "AUX_AUXIP_URL": rs_auxip.url,
        "AUX_AUXIP_ASSET_URL": station,
        "AUX_AUXIP_ASSET_TOKEN_URL": f"{station}/oauth2/token",
        "AUX_AUXIP_ASSET_CLIENT_ID": CLIENT_ID,
        "AUX_AUXIP_ASSET_CLIENT_SECRET": CLIENT_SECRET,
        "AUX_AUXIP_ASSET_USERNAME": USERNAME,
        "AUX_AUXIP_ASSET_PASSWORD": PASSWORD,
        "AUX_AUXIP_ASSET_TOKEN_AUTHORIZATION": BASIC,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {"home": tmp_path / "home", "evicted": evicted}


def _run(home: Path) -> tuple[dg.ExecuteInProcessResult, dict[str, dict[str, Any]]]:
    resources = {**build_resources(), IO_MANAGER: JsonPartitionIOManager(base_dir=str(home / "io"))}
    assets = [aux_search_results, aux_staged_items, aux_catalog_items]
    result = dg.materialize(assets, partition_key=DAY, resources=resources, raise_on_error=False)
    doc = json.loads((home / "io" / "aux_staged_items" / f"{DAY}.json").read_text())
    return result, {o["item_id"]: o for p in doc["products"] for o in p["items"]}


def _ours(rs_auxip: RsAuxip) -> list[dict[str, str]]:
    """Our token requests to the station (rs-server's own carry eodag's ``auth_for_token``)."""
    return [r for r in rs_auxip.station.token_requests if "auth_for_token" not in r]


def test_a_day_from_rs_server_is_staged_with_the_stations_token(
    rs_auxip: RsAuxip, day: dict[str, Any]
) -> None:
    downloads_before = len(rs_auxip.station.downloads)
    result, outcomes = _run(day["home"])
    assert not result.success  # the evicted file fails the blocking check, alone
    failed = {i: o for i, o in outcomes.items() if o["status"] == "failed"}
    assert list(failed) == [day["evicted"].name]
    reason = failed[day["evicted"].name]["reason"]
    assert "evicted from source 'auxip' on 2026-02-01T00:00:00+00:00" in reason
    staged = {i: o for i, o in outcomes.items() if o["status"] == "staged"}
    # S1A and S1C: the file covering the day and the one from 22:59:42; ECMWFD 00-12 and 12-24 h
    assert len(staged) == 6 and all(i.startswith(("S1A", "S1C", "S2__")) for i in staged)
    by_name = {p.name: p for p in rs_auxip.station.products.values()}
    for outcome in staged.values():
        (asset,) = outcome["assets"]
        path = file_path(asset["href"])
        assert path is not None and path.name == asset["key"]
        assert path.read_bytes() == by_name[asset["key"]].data
        assert asset["source_href"].startswith(f"{rs_auxip.station.url}/Products(")
    downloads = rs_auxip.station.downloads[downloads_before:]
    assert len(downloads) == 6 and day["evicted"].id not in downloads
    assert len(_ours(rs_auxip)) == 1  # one token for all the downloads
    assert _ours(rs_auxip)[0]["grant_type"] == "password"

    again, outcomes = _run(day["home"])
    assert len(rs_auxip.station.downloads) == downloads_before + 6  # nothing moved
    assert sorted(o["status"] for o in outcomes.values()) == ["failed"] + ["present"] * 6
    assert not again.success
