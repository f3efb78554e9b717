"""The Dagster code location: assets, checks, job, schedule, sensor, resources, IO manager."""

from __future__ import annotations

import dagster as dg

from aux_assets.assets import IO_MANAGER, aux_catalog_items, aux_search_results, aux_staged_items
from aux_assets.io import JsonPartitionIOManager
from aux_assets.partitions import daily_partitions
from aux_assets.resources import aux_home, build_resources
from aux_assets.sensors import aux_new_products_sensor

ASSETS = [aux_search_results, aux_staged_items, aux_catalog_items]

aux_job = dg.define_asset_job(
    "aux_job",
    selection=ASSETS,
    partitions_def=daily_partitions,
    description="Search, stage and catalog the auxiliary data of one or more days.",
)

aux_daily_schedule = dg.build_schedule_from_partitioned_job(
    aux_job,
    name="aux_daily_schedule",
    hour_of_day=6,
    description="Every day at 06:00 UTC, materialize the latest complete day.",
)

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[aux_job],
    schedules=[aux_daily_schedule],
    sensors=[aux_new_products_sensor],
    resources={
        **build_resources(),
        IO_MANAGER: JsonPartitionIOManager(base_dir=str(aux_home() / "io")),
    },
)
