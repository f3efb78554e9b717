"""End to end through Dagster against real servers on 127.0.0.1.

An AUXIP-like collection lives in pgstac (stac-fastapi-pgstac) with asset hrefs on a loopback
HTTP server; a day is materialized into a second collection of the same pgstac and into
SeaweedFS (S3).
"""

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import obstore
import pystac
import pytest
from obstore.store import S3Store
from pystac_client import Client

from aux_assets.catalog.stac_api import StacApiCatalog
from aux_assets.defs.assets import (
    IO_MANAGER,
    aux_catalog_items,
    aux_search_results,
    aux_staged_items,
)
from aux_assets.defs.io_managers import JsonPartitionIOManager
from aux_assets.defs.resources import build_resources
from aux_assets.utils.checksums import Checksum
from tests.helpers.servers import file_handler, serve

ASSETS = [aux_search_results, aux_staged_items, aux_catalog_items]
DAY = "2026-01-05"
TYPES = {
    "AUX_POEORB": "platforms: [sentinel-1a, sentinel-1c]\n    alternatives: [AUX_RESORB]",
    "AUX_WND": "policy: ClosestStartValidity",
    "AUX_ECMWFD": "policy: LatestValCover",
    "AUX_CAL": "platforms: [sentinel-1a, sentinel-1c]\n    unpack: true",
}
SOURCE_TYPES = (*TYPES, "AUX_RESORB")


@pytest.fixture(scope="module")
def auxip(pgstac_api, shared_sample) -> Iterator[dict[str, Any]]:
    """The sample's items of a few types in a pgstac collection, bytes on a loopback server."""
    corrupt: set[str] = set()
    collection = f"auxip-src-{uuid.uuid4().hex[:8]}"
    with serve(file_handler(shared_sample, corrupt)) as (url, log):
        items = []
        for path in sorted(shared_sample.glob("*/*.json")):
            item = pystac.Item.from_dict(json.loads(path.read_text()))
            if item.properties.get("product:type") not in SOURCE_TYPES:
                continue
            for asset in item.assets.values():
                asset.href = f"{url}/files/{item.id}/{Path(asset.href).name}"
            item.collection_id = collection
            item.clear_links()
            items.append(item)
        catalog = StacApiCatalog(pgstac_api.url)
        catalog.ensure_collection(collection)
        catalog.upsert(collection, items)
        catalog.close()
        yield {"url": url, "log": log, "corrupt": corrupt, "collection": collection, "items": items}


def _products(tmp_path: Path, auxip: dict[str, Any], target: str, source: str = "auxip") -> Path:
    lines = ["products:"]
    for product_type, extra in TYPES.items():
        lines.append(
            f"  - product_type: {product_type}\n    source: {source}\n    collection: {target}\n"
            f"    source_collections: [{auxip['collection'] if source == 'auxip' else target}]\n"
            f"    {extra}"
        )
    path = tmp_path / f"products-{target}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def env(monkeypatch, tmp_path, pgstac_api, s3_server, auxip) -> dict[str, Any]:
    bucket = f"aux-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    target = f"aux-target-{uuid.uuid4().hex[:8]}"
    values = {
        "AUX_ASSETS_HOME": str(tmp_path / "home"),
        "AUX_AUXIP_URL": pgstac_api.url,
        "AUX_CATALOG_URL": pgstac_api.url,
        "AUX_STORAGE_URL": f"s3://{bucket}/staged",
        "AWS_ENDPOINT_URL": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": "us-east-1",
        "AUX_PRODUCTS_FILE": str(_products(tmp_path, auxip, target)),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    store = S3Store(
        bucket,
        endpoint=s3_server.endpoint,
        access_key_id=s3_server.access_key,
        secret_access_key=s3_server.secret_key,
        region="us-east-1",
        client_options={"allow_http": True},
    )
    return {**values, "target": target, "bucket": bucket, "store": store, "tmp": tmp_path}


def _run(env: dict[str, Any]) -> dg.ExecuteInProcessResult:
    home = Path(env["AUX_ASSETS_HOME"])
    resources = {**build_resources(), IO_MANAGER: JsonPartitionIOManager(base_dir=str(home / "io"))}
    return dg.materialize(ASSETS, partition_key=DAY, resources=resources, raise_on_error=False)


def _staged(env: dict[str, Any]) -> dict[str, dict[str, Any]]:
    path = Path(env["AUX_ASSETS_HOME"]) / "io" / "aux_staged_items" / f"{DAY}.json"
    doc = json.loads(path.read_text())
    return {o["item_id"]: o for p in doc["products"] for o in p["items"]}


def _file_gets(auxip: dict[str, Any]) -> int:
    return sum(r["path"].startswith("/files/") for r in auxip["log"])


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    metadata = result.asset_materializations_for_node(node)[0].metadata
    return {k: v.value for k, v in metadata.items()}


def test_day_into_pgstac_and_s3_then_rerun_moves_nothing(env, auxip, pgstac_api):
    result = _run(env)
    assert result.success
    staged = _staged(env)
    assert staged and {o["status"] for o in staged.values()} == {"staged"}
    client = Client.open(pgstac_api.url)
    registered = list(client.search(collections=[env["target"]], max_items=1000).items())
    assert sorted(i.id for i in registered) == sorted(staged)
    for item in registered:
        assert item.geometry is not None  # pgstac needs one; sources have none
        for asset in item.assets.values():
            assert asset.href.startswith(f"s3://{env['bucket']}/staged/{env['target']}/{item.id}/")
            key = asset.href.removeprefix(f"s3://{env['bucket']}/")
            data = bytes(obstore.get(env["store"], key).bytes())
            assert len(data) == asset.extra_fields["file:size"]
            expected = Checksum.parse(asset.extra_fields["file:checksum"])
            assert hashlib.new(expected.algorithm, data).hexdigest() == expected.hexdigest
            assert asset.extra_fields["alternate"]["source"]["href"].startswith(auxip["url"])
    catalog_doc = json.loads(
        (Path(env["AUX_ASSETS_HOME"]) / "io" / "aux_catalog_items" / f"{DAY}.json").read_text()
    )
    urls = {k: v for p in catalog_doc["products"] for k, v in p["item_urls"].items()}
    assert sorted(urls) == sorted(staged)
    for item_id, url in urls.items():  # each link opens the registered item
        assert url == f"{pgstac_api.url.rstrip('/')}/collections/{env['target']}/items/{item_id}"
        assert httpx.get(url, timeout=30).json()["id"] == item_id
    cal = [i for i in registered if i.properties["product:type"] == "AUX_CAL"]
    assert cal and all(".SAFE/" in a.href for i in cal for a in i.assets.values())  # unpacked

    gets = _file_gets(auxip)
    again = _run(env)
    assert again.success
    meta = _meta(again, "aux_staged_items")
    assert meta["n_staged"] == 0 and meta["bytes_staged"] == 0
    assert meta["n_present"] == len(staged)
    assert meta["catalog_lookups"] == 1  # one batched lookup for the whole day
    assert _file_gets(auxip) == gets  # no byte moved


def test_corrupt_asset_fails_the_run_keeps_the_rest_and_rerun_stages_only_it(env, auxip):
    first_doc = _run_search_only(env)
    victim = next(
        f
        for p in first_doc["products"]
        if p["product_type"] == "AUX_POEORB"
        for f in p["selected"]["features"]
    )
    (asset,) = victim["assets"].values()
    rel = asset["href"].split("/files/", 1)[1]
    auxip["corrupt"].add(rel)
    try:
        broken = _run(env)
    finally:
        auxip["corrupt"].discard(rel)
    assert not broken.success
    checks = {e.check_name: e.passed for e in broken.get_asset_check_evaluations()}
    assert checks["all_staged_verified"] is False
    staged = _staged(env)
    assert staged[victim["id"]]["status"] == "failed"
    assert "checksum mismatch" in staged[victim["id"]]["reason"]
    others = [o for i, o in staged.items() if i != victim["id"]]
    assert others and {o["status"] for o in others} == {"staged"}

    gets = _file_gets(auxip)
    fixed = _run(env)
    assert fixed.success
    statuses = {i: o["status"] for i, o in _staged(env).items()}
    assert statuses.pop(victim["id"]) == "staged"
    assert set(statuses.values()) == {"present"}
    assert _file_gets(auxip) == gets + 1


def _run_search_only(env: dict[str, Any]) -> dict[str, Any]:
    home = Path(env["AUX_ASSETS_HOME"])
    resources = {**build_resources(), IO_MANAGER: JsonPartitionIOManager(base_dir=str(home / "io"))}
    result = dg.materialize([aux_search_results], partition_key=DAY, resources=resources)
    assert result.success
    return json.loads((home / "io" / "aux_search_results" / f"{DAY}.json").read_text())


def test_catalog_source_returns_staged_items_and_stages_nothing(env, auxip, monkeypatch):
    assert _run(env).success
    staged_ids = set(_staged(env))
    monkeypatch.setenv(
        "AUX_PRODUCTS_FILE", str(_products(env["tmp"], auxip, env["target"], source="catalog"))
    )
    gets = _file_gets(auxip)
    result = _run(env)
    assert result.success
    outcomes = _staged(env)
    assert set(outcomes) <= staged_ids and outcomes
    assert {o["status"] for o in outcomes.values()} == {"present"}
    assert _file_gets(auxip) == gets
    meta = _meta(result, "aux_staged_items")
    assert meta["n_staged"] == 0 and meta["bytes_staged"] == 0


def test_secrets_never_reach_logs_metadata_or_outputs(
    env, auxip, oauth_server, monkeypatch, capfd, caplog
):
    secret = f"client-secret-{uuid.uuid4().hex}"
    oauth_server.client_secret = secret
    monkeypatch.setenv("AUX_AUXIP_TOKEN_URL", oauth_server.token_url)
    monkeypatch.setenv("AUX_AUXIP_CLIENT_ID", "aux-assets")
    monkeypatch.setenv("AUX_AUXIP_CLIENT_SECRET", secret)
    caplog.set_level(logging.DEBUG)
    result = _run(env)
    assert result.success
    assert oauth_server.requests, "the token endpoint was never asked: auth was not used"
    tokens = oauth_server.issued_tokens
    out, err = capfd.readouterr()
    texts = [out, err, caplog.text]
    for event in result.all_events:
        texts.append(str(event.message))
        texts.append(repr(event.event_specific_data))
    for path in Path(env["AUX_ASSETS_HOME"]).rglob("*.json"):
        texts.append(path.read_text())
    blob = "\n".join(texts)
    assert secret not in blob and env["AWS_SECRET_ACCESS_KEY"] not in blob
    assert tokens and not any(token in blob for token in tokens)
