"""The Dagster code location: assets, checks, job, schedule, sensor, resources, IO manager."""

from __future__ import annotations

import dagster as dg

from aux_assets.defs.assets import IO_MANAGER
from aux_assets.defs.io_managers import JsonPartitionIOManager
from aux_assets.defs.resources import build_resources
from aux_assets.defs.schedules import ASSETS, aux_daily_schedule, aux_job
from aux_assets.defs.sensors import aux_deadline_sensor, aux_new_products_sensor
from aux_assets.settings import aux_home

defs = dg.Definitions(
    assets=ASSETS,
    # The three assets run one after the other: a process per step (the multiprocess default)
    # would only add an interpreter start, the imports and the resources to each (~1.7 s).
    executor=dg.in_process_executor,
    jobs=[aux_job],
    schedules=[aux_daily_schedule],
    sensors=[aux_new_products_sensor, aux_deadline_sensor],
    resources={
        **build_resources(),
        IO_MANAGER: JsonPartitionIOManager(base_dir=str(aux_home() / "io")),
    },
)
