"""The code location as Dagster loads it: job, schedule, declarative automation."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pytest

from aux_assets.definitions import aux_daily_schedule, aux_job, defs
from aux_assets.defs import sensors
from aux_assets.defs.assets import (
    IO_MANAGER,
    aux_catalog_items,
    aux_search_results,
    aux_staged_items,
)
from aux_assets.defs.io_managers import JsonPartitionIOManager
from aux_assets.defs.partitions import daily_partitions
from aux_assets.defs.resources import build_resources


def test_definitions_load_and_name_the_contract():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"aux_search_results", "aux_staged_items", "aux_catalog_items"}
    assert defs.resolve_job_def("aux_job").name == aux_job.name


def test_schedule_materializes_the_latest_complete_day():
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 1, 6, 6, 0, tzinfo=UTC)
    )
    result = defs.resolve_schedule_def(aux_daily_schedule.name).evaluate_tick(context)
    (request,) = result.run_requests or []
    assert request.partition_key == "2026-01-05"
    assert defs.resolve_schedule_def(aux_daily_schedule.name).cron_schedule == "0 6 * * *"


def test_staged_and_catalog_assets_follow_the_search(tmp_path, shared_living):
    home = tmp_path / "home"
    home.mkdir()
    (home / "auxip-sample").symlink_to(shared_living, target_is_directory=True)
    resources = {
        **build_resources({"AUX_ASSETS_HOME": str(home)}),
        IO_MANAGER: JsonPartitionIOManager(base_dir=str(home / "io")),
    }
    assets = [aux_search_results, aux_staged_items, aux_catalog_items]
    local = dg.Definitions(assets=assets, resources=resources)
    latest = daily_partitions.get_last_partition_key()
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=local, instance=instance)
        assert first.total_requested == 0  # nothing to follow yet
        config = {"ops": {"aux_search_results": {"config": {"product_types": ["AUX_WND"]}}}}
        dg.materialize(
            [aux_search_results],
            partition_key=latest,
            resources=resources,
            instance=instance,
            run_config=config,
        )
        result = dg.evaluate_automation_conditions(
            defs=local, instance=instance, cursor=first.cursor
        )
        requested = {
            (key.to_user_string(), partition)
            for key, subset in (
                (r.key, r.true_subset) for r in result.results if r.true_subset.size
            )
            for partition in subset.expensively_compute_partition_keys()
        }
        assert ("aux_staged_items", latest) in requested


def _load(**env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from aux_assets.definitions import defs; "
        "print(defs.resolve_sensor_def('aux_new_products_sensor').minimum_interval_seconds)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sensor_interval_comes_from_the_environment_at_load():
    assert _load(AUX_SENSOR_INTERVAL_SECONDS="45").stdout.split() == ["45"]
    assert sensors.interval_seconds({}) == sensors.DEFAULT_INTERVAL_S == 300
    bad = _load(AUX_SENSOR_INTERVAL_SECONDS="0")
    assert bad.returncode != 0
    assert (
        "AUX_SENSOR_INTERVAL_SECONDS='0' must be a positive whole number of seconds" in bad.stderr
    )


@pytest.mark.parametrize(
    ("read", "name", "text", "unit"),
    [
        (sensors.lookback_days, sensors.LOOKBACK_ENV, "-3", "days"),
        (sensors.interval_seconds, sensors.INTERVAL_ENV, "5m", "seconds"),
    ],
)
def test_bad_sensor_settings_name_the_variable(read, name, text, unit):
    with pytest.raises(
        ValueError, match=f"{name}='{text}' must be a positive whole number of {unit}"
    ):
        read({name: text})
    assert read({name: ""}) == read({})  # empty means the default


@pytest.mark.parametrize("text", ["0", "eight", "2.5"])
def test_bad_max_connections_fail_at_load_naming_the_variable(tmp_path, text):
    env = {"AUX_ASSETS_HOME": str(tmp_path), "AUX_CDSE_MAX_CONNECTIONS": text}
    with pytest.raises(ValueError, match=f"AUX_CDSE_MAX_CONNECTIONS='{text}' must be a positive"):
        build_resources(env)
    assert list(tmp_path.iterdir()) == []  # nothing written before the error
    assert build_resources({**env, "AUX_CDSE_MAX_CONNECTIONS": "3"})["cdse"].max_connections == 3


def test_each_source_resource_takes_the_specials_of_its_profile(tmp_path, monkeypatch):
    """The CDSE token also reaches CDSE's download hosts (its profile), a PRIP token only the
    PRIP root; CDSE and earthdatahub default to their public roots, CDSE to 4 connections."""
    oauth = {"TOKEN_URL": "https://iam.example/token", "CLIENT_ID": "c", "CLIENT_SECRET": "s"}
    env = {"AUX_ASSETS_HOME": str(tmp_path), "AUX_PRIP_URL": "https://prip.example/stac"}
    for source in ("CDSE", "PRIP"):
        env.update({f"AUX_{source}_{k}": v for k, v in oauth.items()})
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the secrets are EnvVars, read when resources start
    defined = build_resources(env)
    assert defined["cdse"].url == "https://stac.dataspace.copernicus.eu/v1/"
    assert defined["cdse"].max_connections == 4
    assert defined["earthdatahub"].url == "https://earthdatahub.destine.eu/api/stac/v1"
    with dg.build_resources({k: defined[k] for k in ("cdse", "prip")}) as started:
        cdse, prip = started.cdse.auth(), started.prip.auth()
    downloads = (
        "https://download.dataspace.copernicus.eu",
        "https://zipper.dataspace.copernicus.eu",
    )
    assert cdse.settings.extra_origins == downloads
    assert prip.settings.extra_origins == ()


def test_a_source_dialect_comes_from_its_profile_or_its_variable(tmp_path):
    env = {"AUX_ASSETS_HOME": str(tmp_path), "AUX_PRIP_URL": "https://prip.example/stac"}
    resources = build_resources(env)
    assert resources["prip"].dialect == "rs-server" and resources["cdse"].dialect == "stac"
    assert resources["prip"].open().dialect == "rs-server"
    generic = build_resources({**env, "AUX_PRIP_DIALECT": "stac"})["prip"]
    assert generic.open().dialect == "stac"
    with pytest.raises(ValueError, match="AUX_PRIP_DIALECT='cql' is not one of stac, rs-server"):
        build_resources({**env, "AUX_PRIP_DIALECT": "cql"})


def test_superseded_files_are_deleted_unless_the_variable_keeps_them(tmp_path):
    env = {"AUX_ASSETS_HOME": str(tmp_path)}
    assert build_resources(env)["storage"].superseded == "delete"
    assert build_resources({**env, "AUX_SUPERSEDED_FILES": "keep"})["storage"].superseded == "keep"
    with pytest.raises(ValueError, match="AUX_SUPERSEDED_FILES='archive' is not one of delete"):
        build_resources({**env, "AUX_SUPERSEDED_FILES": "archive"})
