"""The three assets through Dagster, on the embedded default (the generated AUXIP sample)."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

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
from aux_assets.products import ProductsFileError, load_products
from aux_assets.utils.checksums import Checksum
from aux_assets.utils.urls import file_path

ASSETS = [aux_search_results, aux_staged_items, aux_catalog_items]
DAY = "2026-01-05"
REPO = Path(__file__).resolve().parents[2]


def _resources(home: Path, **env: str) -> dict:
    full = {"AUX_ASSETS_HOME": str(home), **env}
    return {**build_resources(full), IO_MANAGER: JsonPartitionIOManager(base_dir=str(home / "io"))}


def _run(home: Path, partition: str = DAY, config: dict | None = None, **env: str):
    run_config = {"ops": {"aux_search_results": {"config": config}}} if config else None
    return dg.materialize(
        ASSETS,
        partition_key=partition,
        resources=_resources(home, **env),
        run_config=run_config,
        raise_on_error=False,
    )


def _doc(home: Path, asset: str, partition: str = DAY) -> dict:
    return json.loads((home / "io" / asset / f"{partition}.json").read_text())


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _files(home: Path) -> list[Path]:
    return (
        [p for p in (home / "storage").rglob("*") if p.is_file()]
        if (home / "storage").exists()
        else []
    )


def test_demo_day_end_to_end_then_rerun_moves_nothing(home):
    result = _run(home)
    assert result.success
    assert _checks(result) == {
        "mandatory_candidates": True,
        "all_staged_verified": True,
        "catalog_coverage_complete": True,
        "catalog_on_time": True,  # a day of 2026-01 is long due, and complete
    }
    catalog = _doc(home, "aux_catalog_items")
    mandatory = {
        p.product_type
        for p in load_products(Path(build_resources({})["products"].path)).products
        if p.mandatory
    }
    assert set(catalog["coverage"]) == mandatory and all(catalog["coverage"].values())
    n_assets = 0
    for product in catalog["products"]:
        for feature in product["items"]["features"]:
            assert feature["collection"] == product["collection"]
            for asset in feature["assets"].values():
                path = file_path(asset["href"])
                assert path is not None and path.is_relative_to(home / "storage")
                expected = Checksum.parse(asset["file:checksum"])
                digest = hashlib.new(expected.algorithm, path.read_bytes()).hexdigest()
                assert digest == expected.hexdigest
                assert path.stat().st_size == asset["file:size"]
                assert asset["alternate"]["source"]["href"].startswith("file://")
                n_assets += 1
    assert n_assets >= 20
    assert not [p for p in _files(home) if p.name.endswith(".part")]
    mat = result.asset_materializations_for_node("aux_catalog_items")[0]
    summary = mat.metadata["summary"].value
    assert "| product type | selected item | policy | storage href | size | checksum |" in summary
    assert "AUX_POEORB" in summary and "ClosestStartValidity" in summary
    links = re.findall(r"\[([^\]]+)\]\((file://[^)]+)\)", summary)
    assert links and all(url.endswith(f"/{item}/{item}.json") for item, url in links)
    assert all(Path(file_path(url) or "").is_file() for _, url in links)
    staged_meta = result.asset_materializations_for_node("aux_staged_items")[0].metadata
    assert staged_meta["n_staged"].value > 0 and staged_meta["bytes_staged"].value > 0
    # the run's totals (one day here: the day's figures)
    assert staged_meta["run_items_total"].value == staged_meta["n_staged"].value
    assert staged_meta["run_bytes_total"].value == staged_meta["bytes_staged"].value
    assert staged_meta["run_staging_seconds"].value > 0
    assert staged_meta["run_mib_per_s"].value > 0

    assert staged_meta["leftovers_removed"].value == 0

    # what a killed run would have left in a staged file's item folder (where parts are
    # made, above the generation folders): a dead part and a live one
    staged_file = next(p for p in _files(home) if not p.name.startswith("."))
    collection, item_id = staged_file.relative_to(home / "storage").parts[:2]
    item_folder = home / "storage" / collection / item_id
    dead = item_folder / f".{staged_file.name}.0123456789ab.part"
    live = item_folder / f".{staged_file.name}.ba9876543210.part"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    two_days_ago = time.time() - 2 * 86400
    os.utime(dead, (two_days_ago, two_days_ago))
    again = _run(home)
    assert again.success
    meta = again.asset_materializations_for_node("aux_staged_items")[0].metadata
    assert meta["n_staged"].value == 0 and meta["bytes_staged"].value == 0
    assert meta["n_present"].value == staged_meta["n_staged"].value
    assert meta["catalog_lookups"].value == 3  # one batched lookup per target collection
    assert meta["leftovers_removed"].value == 1
    assert not dead.exists() and live.exists()


def test_selection_policies_show_in_the_search_document(home):
    assert _run(home, config={"product_types": ["AUX_POEORB", "AUX_WND", "AX___FRO_AX"]}).success
    doc = _doc(home, "aux_search_results")
    by_type = {p["product_type"]: p for p in doc["products"]}
    assert set(by_type) == {"AUX_POEORB", "AUX_WND", "AX___FRO_AX"}
    poe = by_type["AUX_POEORB"]
    assert {f["properties"]["platform"] for f in poe["selected"]["features"]} == {
        "sentinel-1a",
        "sentinel-1c",
    }
    assert poe["filter"]["args"][2]["op"] == "<="  # the inclusive cover filter we sent
    (wnd,) = by_type["AUX_WND"]["selected"]["features"]
    assert wnd["properties"]["start_datetime"] == wnd["properties"]["end_datetime"]
    fro = by_type["AX___FRO_AX"]["selected"]["features"]
    for platform in ("sentinel-3a", "sentinel-3b"):
        starts = [
            f["properties"]["start_datetime"]
            for f in fro
            if f["properties"]["platform"] == platform
        ]
        assert min(starts) < "2026-01-04T22:03:20"  # covers 00:00 minus the 7000 s margin


def test_range_run_is_one_run_with_a_document_per_day(home):
    resources = _resources(home)
    job = dg.Definitions(assets=ASSETS, resources=resources).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        tags={
            "dagster/asset_partition_range_start": "2026-01-03",
            "dagster/asset_partition_range_end": "2026-01-05",
        },
        resources=resources,
        raise_on_error=False,
    )
    assert result.success
    for day in ("2026-01-03", "2026-01-04", "2026-01-05"):
        doc = _doc(home, "aux_catalog_items", day)
        assert doc["partition"] == day and all(doc["coverage"].values())
    staged = [
        o
        for day in ("2026-01-03", "2026-01-04", "2026-01-05")
        for p in _doc(home, "aux_staged_items", day)["products"]
        for o in p["items"]
    ]
    assert {o["status"] for o in staged} == {"staged"}
    # each day of the range run reports its own figures
    by_day = {
        m.partition: {k: v.value for k, v in m.metadata.items()}
        for m in result.asset_materializations_for_node("aux_search_results")
    }
    assert sorted(by_day) == ["2026-01-03", "2026-01-04", "2026-01-05"]
    for day, meta in by_day.items():
        assert meta["window"]["start"].startswith(day) and meta["n_selected"] > 0
    staged_by_day = {
        m.partition: m.metadata["bytes_staged"].value
        for m in result.asset_materializations_for_node("aux_staged_items")
    }
    assert all(moved > 0 for moved in staged_by_day.values())
    catalog_by_day = {
        m.partition: m.metadata["summary"].value
        for m in result.asset_materializations_for_node("aux_catalog_items")
    }
    assert all(f"| {day} |" in table for day, table in catalog_by_day.items())


def test_raw_cql2_filter_stages_every_match(home):
    config = {
        "filter": "\"product:type\" = 'AUX_WND' "
        "AND start_datetime >= TIMESTAMP('2026-01-05T00:00:00Z') "
        "AND start_datetime < TIMESTAMP('2026-01-05T12:00:00Z')",
        "collection": "adhoc",
    }
    result = _run(home, config=config)
    assert result.success
    (product,) = _doc(home, "aux_search_results")["products"]
    assert product["product_type"] == "cql2" and product["n_candidates"] >= 2
    staged = _doc(home, "aux_staged_items")["products"][0]["items"]
    assert len(staged) == product["n_candidates"]
    assert {o["status"] for o in staged} == {"staged"} and {o["collection"] for o in staged} == {
        "adhoc"
    }


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ({"filter": "product:type = ", "collection": "x"}, {}, "config filter is not valid CQL2"),
        ({"filter": '{"op": "bogus", "args": []}', "collection": "x"}, {}, "unknown CQL2 operator"),
        ({"filter": "id = 'a'"}, {}, "config collection is required"),
        ({"filter": "id = 'a'", "collection": "x", "source": "ftp"}, {}, "unknown source 'ftp'"),
        ({"filter": "id = 'a'", "collection": "../x"}, {}, "collection id '../x'"),
        ({"product_types": ["NOPE"]}, {}, "unknown product type(s) NOPE"),
        (
            {"window_start": "2026-01-05T10:00:00Z", "window_end": "2026-01-05T09:00:00Z"},
            {},
            "window_end 2026-01-05T09:00:00+00:00 is before window_start",
        ),
        ({"window_start": "yesterday", "window_end": "x"}, {}, "window_start='yesterday'"),
        (
            {"filter": "id = 'a'", "collection": "x", "source": "lta"},
            {},
            "LTA auxiliary product search is not supported yet: no LTA STAC endpoint is configured",
        ),
        ({"filter": "id = 'a'", "collection": "x", "source": "prip"}, {}, "set AUX_PRIP_URL"),
    ],
)
def test_bad_input_fails_with_a_clear_error_and_writes_nothing(home, config, env, message):
    result = _run(home, config=config, **env)
    assert not result.success
    failure = result.failure_data_for_node("aux_search_results")
    assert failure is not None
    assert message in (failure.error.message + str(failure.user_failure_data))
    assert _files(home) == [] and not (home / "catalog").exists()


def test_an_unreachable_source_is_named_and_the_other_sources_still_stage(home, tmp_path):
    """prip refuses connections: its types are reported as unreachable (mandatory: the coverage
    checks fail saying so), auxip's are staged; when every search fails, the step fails."""
    products = tmp_path / "products.yaml"
    products.write_text(
        "products:\n"
        "  - {product_type: AUX_POEORB, collection: s1-aux, platforms: [sentinel-1a],"
        " alternatives: [AUX_RESORB]}\n"
        "  - {product_type: AUX_ECMWFD, source: prip, collection: s2-aux}\n"
    )
    down = {"AUX_PRODUCTS_FILE": str(products), "AUX_PRIP_URL": "http://127.0.0.1:9/stac"}
    result = _run(home, **down)
    assert not result.success  # the blocking coverage check fails on AUX_ECMWFD
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    for check in ("mandatory_candidates", "catalog_coverage_complete"):
        description = str(evaluations[check].description)
        assert "AUX_ECMWFD: source unreachable: search in prip at http://127.0.0.1:9/stac" in (
            description
        ), description
        assert evaluations[check].severity == dg.AssetCheckSeverity.ERROR
        assert "AUX_POEORB" not in description
    staged = _doc(home, "aux_staged_items")["products"]
    assert staged[0]["items"] and {i["status"] for i in staged[0]["items"]} == {"staged"}
    assert staged[1]["items"] == [] and "prip" in staged[1]["error"]

    products.write_text(
        "products:\n  - {product_type: AUX_ECMWFD, source: prip, collection: s2-aux}\n"
    )
    result = _run(home, partition="2026-01-06", **down)
    failure = result.failure_data_for_node("aux_search_results")
    assert failure is not None
    assert "every search failed: AUX_ECMWFD: search in prip at http://127.0.0.1:9/stac" in (
        failure.error.message + str(failure.user_failure_data)
    )


def test_invalid_products_file_fails_at_definitions_load(tmp_path):
    bad = tmp_path / "products.yaml"
    bad.write_text("products:\n  - {product_type: AUX_WND, collection: s1-aux, policy: Nearest}\n")
    with pytest.raises(ProductsFileError) as err:
        build_resources({"AUX_PRODUCTS_FILE": str(bad), "AUX_ASSETS_HOME": str(tmp_path)})
    assert f"{bad}: products[0] (AUX_WND): field 'policy': unknown policy 'Nearest'" in str(
        err.value
    )


def test_failed_item_fails_the_run_keeps_the_rest_and_rerun_stages_only_it(tmp_path):
    home = tmp_path / "home"  # its own embedded sample: a file of it is corrupted below
    first = _run(home, config={"product_types": ["AUX_POEORB"]})  # learn what gets selected
    assert first.success
    selected = _doc(home, "aux_search_results")["products"][0]["selected"]["features"]
    victim = selected[0]
    (asset,) = victim["assets"].values()
    source_file = file_path(asset["href"])
    original = source_file.read_bytes()
    shutil.rmtree(home / "storage")
    shutil.rmtree(home / "catalog")
    source_file.write_bytes(b"X" + original[1:])  # same size, wrong checksum

    broken = _run(home, config={"product_types": ["AUX_POEORB"]})
    assert not broken.success
    assert _checks(broken)["all_staged_verified"] is False
    outcomes = {o["item_id"]: o for o in _doc(home, "aux_staged_items")["products"][0]["items"]}
    assert outcomes[victim["id"]]["status"] == "failed"
    assert "checksum mismatch" in outcomes[victim["id"]]["reason"]
    others = [o for i, o in outcomes.items() if i != victim["id"]]
    assert others and all(o["status"] == "staged" for o in others)
    assert not (home / "catalog" / "s1-aux" / victim["id"]).exists()

    source_file.write_bytes(original)
    fixed = _run(home, config={"product_types": ["AUX_POEORB"]})
    assert fixed.success
    outcomes = {
        o["item_id"]: o["status"] for o in _doc(home, "aux_staged_items")["products"][0]["items"]
    }
    assert outcomes.pop(victim["id"]) == "staged"
    assert set(outcomes.values()) == {"present"}


def test_dagster_cli_materializes_the_three_assets_in_the_run_process(home):
    env = {
        **os.environ,
        "AUX_ASSETS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
    }
    (home / "dagster").mkdir()
    bin_dir = Path(sys.executable).parent
    cli = subprocess.run(
        [
            str(bin_dir / "dagster"),
            "asset",
            "materialize",
            "-m",
            "aux_assets.definitions",
            "--select",
            "aux_search_results,aux_staged_items,aux_catalog_items",
            "--partition",
            DAY,
        ],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
    assert "RUN_SUCCESS" in cli.stdout + cli.stderr
    assert "executing steps in process" in (cli.stdout + cli.stderr).lower()  # no step processes
    report = subprocess.run(
        [sys.executable, "-m", "aux_assets.report", DAY],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    assert "coverage: complete" in report.stdout and "AUX_POEORB" in report.stdout


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"limit": 0, "filter": "id = 'a'", "collection": "x"}, "config limit=0"),
        ({"timeout_s": 0}, "config timeout_s=0"),
        ({"product_types": []}, "config product_types is empty"),
    ],
)
def test_out_of_range_config_values_are_refused(home, config, message):
    result = _run(home, config=config)
    failure = result.failure_data_for_node("aux_search_results")
    assert failure is not None and message in failure.error.message
    assert _files(home) == []


def _check_days(instance: dg.DagsterInstance, asset: str, check: str) -> dict[str, str]:
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    infos = instance.event_log_storage.get_asset_check_partition_info([key])
    return {i.partition_key: i.latest_execution_status.value for i in infos}


def test_a_range_run_records_each_days_checks_with_its_own_description(home, shared_sample):
    """2026-01-07..09 in one range run from a static sample of the week 2026-01-01..07: 01-09
    lacks the end of its orbits, long after they were expected. Only that day fails, and its
    description names it and them."""
    static = {"AUX_AUXIP_URL": (shared_sample / "collection.json").as_uri()}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ASSETS,
            instance=instance,
            resources=_resources(home, **static),
            tags={
                "dagster/asset_partition_range_start": "2026-01-07",
                "dagster/asset_partition_range_end": "2026-01-09",
            },
            raise_on_error=False,
        )
        evaluations = result.get_asset_check_evaluations()
        by_check: dict[str, dict[str, dg.AssetCheckEvaluation]] = {}
        for e in evaluations:
            by_check.setdefault(e.check_name, {})[str(e.partition)] = e
        candidates = by_check["mandatory_candidates"]
        assert {day: e.passed for day, e in candidates.items()} == {
            "2026-01-07": True,
            "2026-01-08": True,
            "2026-01-09": False,
        }
        assert candidates["2026-01-07"].description == (
            "2026-01-07: every mandatory product type has a selection"
        )
        failed = str(candidates["2026-01-09"].description)
        assert failed.startswith("2026-01-09: gaps in mandatory product types: ")
        assert failed.endswith(  # the partial selections are shown by what they leave uncovered
            "AUX_POEORB: never published (AUX_RESORB expected by 2026-01-10 05:00 UTC) for "
            "sentinel-1a (uncovered 02:32:57..24:00:00), sentinel-1c (uncovered 01:43:32..24:00:00)"
        )
        assert candidates["2026-01-09"].severity == dg.AssetCheckSeverity.ERROR
        # a pass keeps the check's severity (the UI shows it)
        assert candidates["2026-01-07"].severity == dg.AssetCheckSeverity.ERROR
        assert candidates["2026-01-09"].metadata["n_problems"].value >= 1
        staged = by_check["all_staged_verified"]
        assert all(e.passed for e in staged.values()) and len(staged) == 3
        assert re.fullmatch(
            r"2026-01-08: \d+ item\(s\) stored, verified and registered",
            str(staged["2026-01-08"].description),
        )
        coverage = by_check["catalog_coverage_complete"]
        assert {day: e.passed for day, e in coverage.items()} == {
            "2026-01-07": True,
            "2026-01-08": True,
            "2026-01-09": False,
        }
        assert (
            "AUX_POEORB: never published (AUX_RESORB expected by 2026-01-10 05:00 UTC) for "
            "sentinel-1a" in (str(coverage["2026-01-09"].description))
        )
        on_time = by_check["catalog_on_time"]
        assert on_time["2026-01-07"].passed and not on_time["2026-01-09"].passed
        assert on_time["2026-01-09"].severity == dg.AssetCheckSeverity.WARN
        assert "2026-01-09 is late: due 2026-01-11 06:00 UTC" in str(
            on_time["2026-01-09"].description
        )
        # the instance records one result per day, as the asset page shows them
        assert _check_days(instance, "aux_catalog_items", "catalog_coverage_complete") == {
            "2026-01-07": "SUCCEEDED",
            "2026-01-08": "SUCCEEDED",
            "2026-01-09": "FAILED",
        }
        # each result points at the day's materialization it judged
        for e in coverage.values():
            (record,) = instance.fetch_materializations(
                dg.AssetRecordsFilter(dg.AssetKey("aux_catalog_items"), [str(e.partition)]),
                limit=1,
            ).records
            assert e.target_materialization_data is not None
            assert e.target_materialization_data.storage_id == record.storage_id
        assert not result.success  # the blocking coverage check failed on 2026-01-09


def test_a_dry_run_reports_what_would_move_and_writes_nothing(home):
    """``dry_run: true``: searched, selected and deduped, each item's plan reported, nothing
    stored or registered, the day not materialized; after a real run, nothing would move."""
    dry = {"ops": {"aux_staged_items": {"config": {"dry_run": True}}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ASSETS, partition_key=DAY, resources=_resources(home), run_config=dry, instance=instance
        )
        assert result.success
        assert _files(home) == [] and not (home / "catalog").exists()
        assert not (home / "io" / "aux_staged_items").exists()
        assert not (home / "io" / "aux_catalog_items").exists()
        materialized = {
            m.asset_key.to_user_string() for m in result.get_asset_materialization_events()
        }
        assert materialized == {"aux_search_results"}  # the next assets did not run
        (observation,) = [
            e.asset_observation_data.asset_observation
            for e in result.all_events
            if e.event_type_value == "ASSET_OBSERVATION"
        ]
        assert observation.partition == DAY
        metadata = observation.metadata
        n_items = metadata["n_would_transfer"].value
        assert n_items > 10 and metadata["n_present"].value == 0
        assert metadata["bytes_would_transfer"].value > 0
        assert re.fullmatch(
            rf"DRY RUN, nothing was written: {n_items} of {n_items} item\(s\) \(.+\) would be "
            "transferred",
            str(observation.description),
        )
        plan = str(metadata["plan"].value)
        assert plan.count("| transfer |") == n_items
        assert str((home / "storage").as_uri()) in plan  # targets in our storage
        logs = [
            str(e.message)
            for e in instance.all_logs(result.run_id)
            if "dry run: would transfer" in str(e.message)
        ]
        assert len(logs) >= n_items and all(" from auxip " in line for line in logs)

        real = dg.materialize(  # the real run stages the day
            ASSETS, partition_key=DAY, resources=_resources(home), instance=instance
        )
        assert real.success
        stored = sorted(_files(home))
        again = dg.materialize(
            ASSETS, partition_key=DAY, resources=_resources(home), run_config=dry, instance=instance
        )
        (observation,) = [
            e.asset_observation_data.asset_observation
            for e in again.all_events
            if e.event_type_value == "ASSET_OBSERVATION"
        ]
        assert observation.metadata["n_would_transfer"].value == 0
        assert observation.metadata["n_present"].value == n_items
        assert sorted(_files(home)) == stored
        # the day's check results stand: restated, not shown skipped by the dry run
        evaluations = again.get_asset_check_evaluations()
        restated = {e.check_name: e for e in evaluations if "restated" in e.metadata}
        assert {e.check_name for e in evaluations} - set(restated) == {"mandatory_candidates"}
        later = {"all_staged_verified", "catalog_coverage_complete", "catalog_on_time"}
        assert set(restated) == later
        assert all(e.passed and e.metadata["restated"].value for e in restated.values())
        for asset, check in [
            ("aux_staged_items", "all_staged_verified"),
            ("aux_catalog_items", "catalog_coverage_complete"),
            ("aux_catalog_items", "catalog_on_time"),
        ]:
            assert _check_days(instance, asset, check) == {DAY: "SUCCEEDED"}
