"""A day through Dagster against the real rs-server AUXIP: searched in its dialect, downloaded
from its station with the station's own token, stored and catalogued locally; an evicted file
fails alone; a re-run moves nothing. And a day of S1A level-0 files from the real rs-server
PRIP, asked by their EOPF type (S01SIWRAW)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aux_assets.utils.urls import file_path
from tests.fixtures.rs_server import RsAuxip, RsPrip, RsServer
from tests.helpers.runs import materialize_day
from tests.helpers.station import evicted_product, station_env

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
    evicted = evicted_product(
        "S1A_OPER_AUX_WAV_OPOD_20260105T000000_V20260105T030000_20260105T060000",
        "AUX_WAV",
        datetime(2026, 1, 5, 3, tzinfo=UTC),
    )
    rs_auxip.station.add(evicted)
    products = tmp_path / "products.yaml"
    products.write_text(PRODUCTS)
    env = {
        "AUX_ASSETS_HOME": str(tmp_path / "home"),
        "AUX_PRODUCTS_FILE": str(products),
        **station_env("AUX_AUXIP", rs_auxip.url, rs_auxip.station.url),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {"home": tmp_path / "home", "evicted": evicted}


def _ours(rs: RsServer) -> list[dict[str, str]]:
    """Our token requests to the station (rs-server's own carry eodag's ``auth_for_token``)."""
    return [r for r in rs.station.token_requests if "auth_for_token" not in r]


def test_a_day_from_rs_server_is_staged_with_the_stations_token(
    rs_auxip: RsAuxip, day: dict[str, Any]
) -> None:
    downloads_before = len(rs_auxip.station.downloads)
    tokens_before = len(_ours(rs_auxip))  # the session's station serves other tests too
    result, outcomes = materialize_day(day["home"], DAY)
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
    ours = _ours(rs_auxip)[tokens_before:]
    assert len(ours) == 1 and ours[0]["grant_type"] == "password"  # one for all the downloads

    again, outcomes = materialize_day(day["home"], DAY)
    assert len(rs_auxip.station.downloads) == downloads_before + 6  # nothing moved
    assert sorted(o["status"] for o in outcomes.values()) == ["failed"] + ["present"] * 6
    assert not again.success


PRIP_PRODUCTS = """products:
  - product_type: S01SIWRAW           # what PRIP calls the station's IW_RAW__0N
    source: prip
    collection: s1-l0
    source_collections: [S1A_L0_IW_RAW]
    policy: ValIntersect
    platforms: [sentinel-1a]
"""


def test_a_day_from_rs_server_prip_is_staged_with_the_stations_token(
    rs_prip: RsPrip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    products = tmp_path / "products.yaml"
    products.write_text(PRIP_PRODUCTS)
    env = {
        "AUX_ASSETS_HOME": str(tmp_path / "home"),
        "AUX_PRODUCTS_FILE": str(products),
        **station_env("AUX_PRIP", rs_prip.url, rs_prip.station.url),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    day = (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC))
    expected = {  # the S1A segments of the 5th (PRIP's item id: the name minus '.zip')
        p.name.removesuffix(".zip"): p
        for p in rs_prip.station.products.values()
        if p.product_type == "IW_RAW__0N" and p.start <= day[1] and p.end >= day[0]
    }
    downloads_before, tokens_before = len(rs_prip.station.downloads), len(_ours(rs_prip))
    result, outcomes = materialize_day(tmp_path / "home", DAY)
    assert result.success
    assert sorted(outcomes) == sorted(expected) and len(expected) == 3
    for item_id, outcome in outcomes.items():
        assert outcome["status"] == "staged"
        (asset,) = outcome["assets"]
        path = file_path(asset["href"])
        assert path is not None and path.read_bytes() == expected[item_id].data
        assert path.name == expected[item_id].name  # the station's name, '.zip' restored
        assert asset["source_href"] == (
            f"{rs_prip.station.url}/Products({expected[item_id].id})/$value"
        )
    assert len(rs_prip.station.downloads) == downloads_before + 3
    assert len(_ours(rs_prip)) == tokens_before + 1  # one station token for the three
