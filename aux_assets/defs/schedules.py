"""``aux_job`` (the three assets, one or more days) and the daily schedule that runs it."""

from __future__ import annotations

import dagster as dg

from aux_assets.defs.assets import aux_catalog_items, aux_search_results, aux_staged_items
from aux_assets.defs.partitions import daily_partitions

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
