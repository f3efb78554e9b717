"""The production instance example (deploy/dagster.yaml) on a real PostgreSQL, pools included."""

from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psycopg2
import pytest

from aux_assets.defs.pools import DagsterPoolGate, pool_name

DEPLOY_YAML = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"


@pytest.fixture
def postgres_env(pgstac_api, monkeypatch, tmp_path) -> Path:
    """A fresh database in the test PostgreSQL, the DAGSTER_PG_* variables, and a DAGSTER_HOME
    holding deploy/dagster.yaml (its port set to the test server's)."""
    dsn = urlsplit(pgstac_api.dsn)
    db_name = f"dagster_{tmp_path.name.replace('-', '_').lower()}"[:60]
    conn = psycopg2.connect(host=dsn.hostname, port=dsn.port, user=dsn.username, dbname="stac")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{db_name}"')
    conn.close()
    for name, value in {
        "DAGSTER_PG_HOST": str(dsn.hostname),
        "DAGSTER_PG_DB": db_name,
        "DAGSTER_PG_USER": str(dsn.username),
        "DAGSTER_PG_PASSWORD": "unused",  # trust authentication on 127.0.0.1
    }.items():
        monkeypatch.setenv(name, value)
    text = DEPLOY_YAML.read_text()
    assert "port: 5432" in text
    (tmp_path / "dagster.yaml").write_text(text.replace("port: 5432", f"port: {dsn.port}"))
    return tmp_path


def test_deploy_yaml_runs_on_postgres_and_shares_source_pools(postgres_env):
    instance = dg.DagsterInstance.from_config(str(postgres_env))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.event_log_storage.supports_global_concurrency_limits
        assert instance.global_op_concurrency_default_limit == 1
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        first = DagsterPoolGate(instance, "run-a", "aux_staged_items")
        second = DagsterPoolGate(instance, "run-b", "aux_staged_items")
        assert first.claim("cdse", 4) == 4
        assert second.claim("cdse", 4) is None  # the one default slot is held by run-a
        info = instance.event_log_storage.get_concurrency_info(pool_name("cdse"))
        assert info.slot_count == 1 and info.using_default_limit
        instance.event_log_storage.free_concurrency_slots_for_run("run-a")  # run monitoring
        assert second.claim("cdse", 4) == 4
        second.release("cdse")
        info = instance.event_log_storage.get_concurrency_info(pool_name("cdse"))
        assert info.active_slot_count == 0 and info.pending_step_count == 0
    finally:
        instance.dispose()
