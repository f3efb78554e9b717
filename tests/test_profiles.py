"""Tests for aux_assets.sources.profiles (what is special per source) and the places that read
it: unconfigured sources and aux_assets.staging.stager.stage_tasks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
import pytest

from aux_assets.auth import StaticAuth
from aux_assets.documents import feature_collection
from aux_assets.sources.base import SearchError, SearchRequest, UnconfiguredSource
from aux_assets.sources.profiles import (
    DEFAULT_MAX_CONNECTIONS,
    LTA_NOT_SUPPORTED,
    PROFILES,
    SOURCES,
    UnknownSourceError,
    check_source,
    profile,
)
from aux_assets.staging.stager import stage_tasks


def test_sources_are_listed_in_their_documented_order() -> None:
    assert SOURCES == ("auxip", "prip", "cadip", "cdse", "earthdatahub", "catalog", "lta")
    assert tuple(PROFILES) == SOURCES
    assert all(PROFILES[name].name == name for name in SOURCES)


@pytest.mark.parametrize("name", SOURCES)
def test_the_resource_key_is_the_name_except_for_our_catalog(name: str) -> None:
    expected = "catalog_source" if name == "catalog" else name
    assert profile(name).resource_key == expected


@pytest.mark.parametrize("call", [check_source, profile])
def test_an_unknown_source_is_refused_with_the_valid_names(call: Any) -> None:
    with pytest.raises(UnknownSourceError) as raised:
        call("auxpi")
    message = str(raised.value)
    assert "'auxpi'" in message
    assert all(name in message for name in SOURCES)
    assert isinstance(raised.value, ValueError)


def test_check_source_returns_a_known_name() -> None:
    assert [check_source(name) for name in SOURCES] == list(SOURCES)


def test_cdse_has_a_public_root_fewer_connections_download_hosts_and_product_asset() -> None:
    cdse = profile("cdse")
    assert cdse.public_root == "https://stac.dataspace.copernicus.eu/v1/"
    assert cdse.max_connections == 4
    assert cdse.auth_origins == (
        "https://download.dataspace.copernicus.eu",
        "https://zipper.dataspace.copernicus.eu",
    )
    assert cdse.default_assets == ("product",)


def test_only_cdse_and_earthdatahub_have_a_public_root() -> None:
    assert profile("earthdatahub").public_root == "https://earthdatahub.destine.eu/api/stac/v1"
    with_root = {name for name in SOURCES if profile(name).public_root}
    assert with_root == {"cdse", "earthdatahub"}


def test_the_other_sources_use_the_defaults() -> None:
    for name in SOURCES:
        if name == "cdse":
            continue
        special = profile(name)
        assert special.max_connections == DEFAULT_MAX_CONNECTIONS
        assert special.auth_origins == ()
        assert special.default_assets is None


def test_only_auxip_falls_back_to_the_embedded_sample() -> None:
    assert {name for name in SOURCES if profile(name).embedded_sample} == {"auxip"}


def test_only_the_catalog_source_is_ours_and_its_settings_are_aux_catalog() -> None:
    assert {name for name in SOURCES if profile(name).ours} == {"catalog"}
    assert profile("catalog").env_prefix == "AUX_CATALOG"
    for name in SOURCES:
        assert profile(name).env_prefix == f"AUX_{name.upper()}"


def test_lta_says_it_is_not_supported_and_prip_names_its_url_variable() -> None:
    assert profile("lta").unconfigured_message() == LTA_NOT_SUPPORTED
    message = profile("prip").unconfigured_message()
    assert "AUX_PRIP_URL" in message and "'prip'" in message
    assert LTA_NOT_SUPPORTED not in message


@pytest.mark.parametrize(
    ("name", "expected"),
    [("lta", LTA_NOT_SUPPORTED), ("catalog", "AUX_CATALOG_URL"), ("cadip", "AUX_CADIP_URL")],
)
def test_an_unconfigured_source_fails_every_search_with_its_message(
    name: str, expected: str
) -> None:
    source = UnconfiguredSource(name)
    with pytest.raises(SearchError) as raised:
        source.search(SearchRequest(collections=("aux",), limit=1))
    assert expected in str(raised.value)
    assert str(raised.value) == profile(name).unconfigured_message()
    assert source.describe() == f"{name} (not configured)"


# stage_tasks


def make_item(item_id: str, collection: str) -> pystac.Item:
    item = pystac.Item(
        item_id, None, None, datetime(2026, 1, 5, tzinfo=UTC), {}, collection=collection
    )
    item.add_asset("product", pystac.Asset(f"https://store.example/{collection}/{item_id}.zip"))
    return item


def product_entry(
    source: str,
    ids: list[str],
    *,
    collection: str = "aux",
    assets: list[str] | None = None,
    unpack: bool = False,
) -> dict[str, Any]:
    return {
        "product_type": "AUX_X",
        "source": source,
        "collection": collection,
        "policy": "LatestValCover",
        "mandatory": True,
        "assets": assets,
        "unpack": unpack,
        "filter": {},
        "n_candidates": len(ids),
        "candidates": [{"id": i} for i in ids],
        "used_types": {},
        "missing_units": [],
        "selected": feature_collection(make_item(i, collection) for i in ids),
    }


def search_document(products: list[dict[str, Any]]) -> Any:
    window = {"start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z"}
    return {"partition": "2026-01-05", "window": window, "products": products}


def test_stage_tasks_skip_our_catalog_and_apply_the_source_profiles() -> None:
    cdse_auth = StaticAuth("https://stac.dataspace.copernicus.eu", token="t")
    roots = (Path("/data/auxip"),)
    sources: dict[str, tuple[tuple[Path, ...], Any]] = {
        "cdse": ((), cdse_auth),
        "auxip": (roots, None),
    }
    asked: list[str] = []

    def source(name: str) -> tuple[tuple[Path, ...], Any]:
        asked.append(name)
        return sources[name]

    documents = [
        search_document(
            [
                product_entry("catalog", ["held"]),
                product_entry("cdse", ["c1", "c2"], collection="s1", unpack=True),
            ]
        ),
        search_document([product_entry("auxip", ["a1"], assets=["data", "meta"])]),
    ]
    tasks = stage_tasks(documents, source)
    assert "catalog" not in asked
    assert [(t.source, t.collection, t.item.id) for t in tasks] == [
        ("cdse", "s1", "c1"),
        ("cdse", "s1", "c2"),
        ("auxip", "aux", "a1"),
    ]
    c1, c2, a1 = tasks
    assert c1.asset_keys == ("product",) and c2.asset_keys == ("product",)
    assert a1.asset_keys == ("data", "meta")
    assert (c1.file_roots, c1.auth) == ((), cdse_auth)
    assert (a1.file_roots, a1.auth) == (roots, None)
    assert c1.unpack is True and a1.unpack is False
    assert c1.item.assets["product"].href == "https://store.example/s1/c1.zip"


def test_stage_tasks_stage_every_asset_where_neither_the_entry_nor_the_source_names_any() -> None:
    tasks = stage_tasks([search_document([product_entry("prip", ["p1"])])], lambda name: ((), None))
    [task] = tasks
    assert task.asset_keys is None and task.source == "prip"


def test_stage_tasks_refuse_an_unknown_source() -> None:
    with pytest.raises(UnknownSourceError):
        stage_tasks([search_document([product_entry("nowhere", ["x"])])], lambda n: ((), None))
