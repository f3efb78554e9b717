"""A day through Dagster from the real rs-server AUXIP into the real rs-server-catalog: searched
in AUXIP's dialect, downloaded from its station with the station's token, staged into SeaweedFS,
registered in the owner's collections (which copy each object into the catalog's bucket); a
re-run moves nothing, an evicted file fails alone, and the seed's own ``CatalogClient``
(rs-client-libraries, in its venv) finds what we registered."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import obstore
import pytest

from aux_assets.defs.resources import build_resources
from aux_assets.filters import window_filter
from aux_assets.sources import open_source
from aux_assets.sources.base import SearchRequest
from tests.fixtures.rs_catalog import CATALOG_BUCKET, HOST_USER, RsCatalog
from tests.fixtures.rs_server import RsAuxip
from tests.fixtures.servers_required import rs_venv
from tests.helpers.runs import materialize_day
from tests.helpers.station import Product, evicted_product, station_env

DAY = "2026-01-06"
OWNER = HOST_USER  # the seed's get_items(items_ids=...) finds only the server user's items
STAGING_PREFIX = "staging"


@pytest.fixture
def day(
    rs_auxip: RsAuxip, rs_catalog: RsCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The environment of an RS deployment: AUXIP with its station's credentials, staging into
    a fresh S3 bucket, the catalog in rs-catalog dialect; collections unique to this test."""
    evicted = evicted_product(
        "S1A_OPER_AUX_WND_OPOD_20260106T000000_V20260106T020000_20260106T050000",
        "AUX_WND",
        datetime(2026, 1, 6, 2, tzinfo=UTC),
    )
    resorb = Product(  # a restituted orbit also covers the day: the precise one is preferred
        "S1A_OPER_AUX_RESORB_OPOD_20260106T010000_V20260105T230000_20260107T010000",
        "AUX_RESORB",
        datetime(2026, 1, 5, 23, tzinfo=UTC),
        datetime(2026, 1, 7, 1, tzinfo=UTC),
        datetime(2026, 1, 6, 1, 30, tzinfo=UTC),
        datetime(2026, 1, 6, 1, tzinfo=UTC),
        ("SENTINEL-1", "A"),
    )
    if resorb.name not in {p.name for p in rs_auxip.station.products.values()}:
        rs_auxip.station.add(resorb)
    suffix = uuid.uuid4().hex[:8]
    s1, s2 = f"s1-aux-{suffix}", f"s2-aux-{suffix}"
    products = tmp_path / "products.yaml"
    products.write_text(
        f"""products:
  - product_type: AUX_POEORB          # platform-restricted, with a fallback
    collection: {s1}
    source_collections: [adgs]
    policy: LatestValCover
    platforms: [sentinel-1a, sentinel-1c]
    alternatives: [AUX_RESORB]
  - product_type: AUX_ECMWFD          # S2__ files: no unit, platform null
    collection: {s2}
    source_collections: [adgs]
    policy: ValIntersect
  - product_type: AUX_WND
    collection: {s1}
    source_collections: [adgs]
    policy: ValIntersect
    mandatory: false
"""
    )
    bucket = f"aux-staging-{suffix}"
    rs_catalog.s3.create_bucket(bucket)
    env = {
        "AUX_ASSETS_HOME": str(tmp_path / "home"),
        "AUX_PRODUCTS_FILE": str(products),
        **station_env("AUX_AUXIP", rs_auxip.url, rs_auxip.station.url),
        "AUX_STORAGE_URL": f"s3://{bucket}/{STAGING_PREFIX}",
        "AWS_ENDPOINT_URL": rs_catalog.s3.endpoint,
        "AWS_ACCESS_KEY_ID": rs_catalog.s3.access_key,
        "AWS_SECRET_ACCESS_KEY": rs_catalog.s3.secret_key,
        "AWS_REGION": rs_catalog.s3.region,
        "AUX_CATALOG_URL": rs_catalog.url,
        "AUX_CATALOG_DIALECT": "rs-catalog",
        "AUX_CATALOG_OWNER": OWNER,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {
        "home": tmp_path / "home",
        "evicted": evicted,
        "resorb": resorb,
        "bucket": bucket,
        "collections": (s1, s2),
    }


def _witness(rs_catalog: RsCatalog, collection: str, ids: list[str]) -> dict[str, Any]:
    """What the seed's own CatalogClient finds, as its aux_flow looks: ``get_items`` by ids
    and a ``search`` of the collection with the owner."""
    script = """
import json, sys
from rs_client.rs_client import RsClient
collection, owner, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = RsClient(None, owner_id=owner).get_catalog_client()
got = [item.to_dict() for item in client.get_items(collection_id=collection, items_ids=ids)]
found = [item.id for item in client.search(collections=[collection], owner_id=owner)]
print(json.dumps({"get_items": got, "search": found}))
"""
    venv = rs_venv("client")
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script, collection, OWNER, json.dumps(ids)],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": "/tmp",
            "RSPY_HOST_CATALOG": rs_catalog.url.removesuffix("/catalog"),
            "OTEL_SDK_DISABLED": "true",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_day_is_registered_in_rs_server_catalog_and_found_by_the_seeds_client(
    rs_auxip: RsAuxip, rs_catalog: RsCatalog, day: dict[str, Any]
) -> None:
    downloads_before = len(rs_auxip.station.downloads)
    result, outcomes = materialize_day(day["home"], DAY)
    assert result.success
    staged = {i: o for i, o in outcomes.items() if o["status"] == "staged"}
    assert len(staged) == len(outcomes)
    assert staged and all(i.startswith(("S1A_OPER_AUX_POEORB", "S1C_", "S2__")) for i in staged)
    assert {i[:3] for i in staged} == {"S1A", "S1C", "S2_"}
    assert day["resorb"].name not in outcomes  # the precise orbit covers: no fallback
    moved = rs_auxip.station.downloads[downloads_before:]
    assert len(moved) == len(staged)

    by_name = {p.name: p for p in rs_auxip.station.products.values()}
    s1, s2 = day["collections"]
    catalog_store, staging_store = (
        rs_catalog.s3.store(CATALOG_BUCKET),
        rs_catalog.s3.store(day["bucket"]),
    )
    with httpx.Client(timeout=30.0) as client:
        for item_id in staged:
            collection = s2 if item_id.startswith("S2__") else s1
            answer = client.get(
                f"{rs_catalog.url}/collections/{OWNER}:{collection}/items/{item_id}"
            )
            assert answer.status_code == 200, answer.text
            item = answer.json()
            assert item["properties"]["owner"] == OWNER and "expires" in item["properties"]
            ((key, asset),) = item["assets"].items()
            assert key == by_name[key].name  # the asset key is the file name
            # the catalog copied the object (under its generation folder) into its bucket and
            # removed ours
            object_key = asset["href"].removeprefix(f"s3://{CATALOG_BUCKET}/")
            folder, generation, name = object_key.rsplit("/", 2)
            assert folder == f"{STAGING_PREFIX}/{collection}/{item_id}" and name == key
            assert re.fullmatch("[0-9a-f]{16}", generation)
            assert bytes(obstore.get(catalog_store, object_key).bytes()) == by_name[key].data
            assert asset["alternate"]["https"]["href"].endswith(f"/download/{key}")
            assert asset["file:size"] == len(by_name[key].data)
    assert obstore.list(staging_store).collect() == []
    # the staged document reports where the catalog put the files
    for outcome in staged.values():
        assert outcome["assets"][0]["href"].startswith(f"s3://{CATALOG_BUCKET}/{STAGING_PREFIX}/")

    # what the catalog asset read back is the catalog's href
    catalog_doc = json.loads((day["home"] / "io" / "aux_catalog_items" / f"{DAY}.json").read_text())
    assert f"s3://{CATALOG_BUCKET}/" in json.dumps(catalog_doc)

    # the catalog as a source: its owner's collection, asked by the end of the validity only
    # (start_datetime is a 500 there); the covering ones are among what it answers
    catalog_source = open_source("catalog", rs_catalog.url, dialect="rs-catalog", owner=OWNER)
    window = (datetime(2026, 1, 6, tzinfo=UTC), datetime(2026, 1, 7, tzinfo=UTC))
    cql = window_filter("AUX_POEORB", *window, "cover", dialect="rs-catalog")
    found = {i.id: i for i in catalog_source.search(SearchRequest(filter=cql, collections=(s1,)))}
    poeorbs = sorted(i for i in staged if "POEORB" in i)
    covering = [i for i in poeorbs if "_V20260105T225942_" in i]
    assert len(covering) == 2 and sorted(found) == poeorbs  # all four end after the window
    assert all(found[i].common_metadata.end_datetime >= window[1] for i in found)

    # the seed's client finds our items as its flow would find its own
    s1_ids = sorted(i for i in staged if not i.startswith("S2__"))
    seen = _witness(rs_catalog, s1, s1_ids)
    assert sorted(i["id"] for i in seen["get_items"]) == s1_ids
    assert sorted(seen["search"]) == s1_ids
    assert all(
        next(iter(i["assets"].values()))["href"].startswith(f"s3://{CATALOG_BUCKET}/")
        for i in seen["get_items"]
    )

    # a re-run moves nothing; a file published meanwhile but already evicted fails alone
    rs_auxip.station.add(day["evicted"])
    again, outcomes = materialize_day(day["home"], DAY)
    assert len(rs_auxip.station.downloads) == downloads_before + len(staged)  # nothing moved
    failed = {i: o for i, o in outcomes.items() if o["status"] == "failed"}
    assert list(failed) == [day["evicted"].name]
    assert "evicted from source 'auxip'" in failed[day["evicted"].name]["reason"]
    assert sorted(o["status"] for o in outcomes.values()) == ["failed"] + ["present"] * len(staged)
    assert not again.success


def test_rs_catalog_settings_are_checked_before_any_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A missing owner, an owner the seed's client would rewrite, local storage, unpacking, a
    catalog URL that is no API: each a clear error at load, naming what to change."""
    monkeypatch.setenv("AUX_ASSETS_HOME", str(tmp_path))
    monkeypatch.setenv("AUX_CATALOG_DIALECT", "rs-catalog")
    monkeypatch.setenv("AUX_CATALOG_URL", "http://127.0.0.1:9/catalog")
    monkeypatch.setenv("AUX_STORAGE_URL", "s3://aux-staging/prefix")
    monkeypatch.delenv("AUX_CATALOG_OWNER", raising=False)
    with pytest.raises(ValueError, match="AUX_CATALOG_OWNER='': AUX_CATALOG_DIALECT=rs-catalog"):
        build_resources()
    monkeypatch.setenv("AUX_CATALOG_OWNER", "ops-team")
    with pytest.raises(ValueError, match="ASCII letters and digits only"):
        build_resources()
    monkeypatch.setenv("AUX_CATALOG_OWNER", "ops")
    monkeypatch.setenv("AUX_STORAGE_URL", str(tmp_path / "storage"))
    with pytest.raises(ValueError, match=r"AUX_STORAGE_URL=.*takes only s3:// assets"):
        build_resources()
    monkeypatch.setenv("AUX_STORAGE_URL", "s3://aux-staging/prefix")  # the demo file unpacks
    with pytest.raises(ValueError, match=r"unpacks AUX_CAL.*set unpack: false"):
        build_resources()
    monkeypatch.setenv("AUX_CATALOG_URL", str(tmp_path / "catalog"))
    with pytest.raises(ValueError, match="needs AUX_CATALOG_URL, the catalog's http"):
        build_resources()
    monkeypatch.setenv("AUX_CATALOG_DIALECT", "rs-server")
    with pytest.raises(ValueError, match="AUX_CATALOG_DIALECT='rs-server' is not one of"):
        build_resources()


def test_items_the_catalog_refuses_fail_alone_and_nothing_is_half_registered(
    rs_catalog: RsCatalog, day: dict[str, Any]
) -> None:
    """The catalog cannot copy one collection's objects (its bucket, per the bucket CSV, does
    not exist): those items fail with the catalog's reason, the other collection's register,
    and the refused files stay in our bucket, registered nowhere."""
    s2 = day["collections"][1]
    original = rs_catalog.buckets.read_text()
    rs_catalog.buckets.write_text(f"{OWNER}, {s2}, *, 30, no-such-bucket\n{original}")
    try:
        result, outcomes = materialize_day(day["home"], DAY)
    finally:
        rs_catalog.buckets.write_text(original)
    assert not result.success
    failed = {
        i: o
        for i, o in outcomes.items()
        if o["status"] == "failed" and i != day["evicted"].name  # another test may add it
    }
    assert failed and sorted(failed) == sorted(i for i in outcomes if i.startswith("S2__"))
    for outcome in failed.values():
        assert "catalog registration" in outcome["reason"]
        assert "HTTP 400" in outcome["reason"] and "no-such-bucket" in outcome["reason"]
    staged = [i for i, o in outcomes.items() if o["status"] == "staged"]
    assert staged and all(i.startswith("S1") for i in staged)
    staging = rs_catalog.s3.store(day["bucket"])
    with httpx.Client(timeout=30.0) as client:
        for item_id in failed:
            url = f"{rs_catalog.url}/collections/{OWNER}:{s2}/items/{item_id}"
            assert client.get(url).status_code == 404
            folder = f"{STAGING_PREFIX}/{s2}/{item_id}"
            (stored,) = obstore.list(staging, folder).collect()
            assert stored["path"].startswith(f"{folder}/") and stored["size"] > 0
            assert stored["path"].endswith(f"/{item_id}")
