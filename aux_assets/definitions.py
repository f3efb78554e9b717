"""The Dagster code location: assets, checks, resources and the JSON IO manager."""

from __future__ import annotations

import dagster as dg

from aux_assets.assets import IO_MANAGER, aux_catalog_items, aux_search_results, aux_staged_items
from aux_assets.io import JsonPartitionIOManager
from aux_assets.resources import aux_home, build_resources

defs = dg.Definitions(
    assets=[aux_search_results, aux_staged_items, aux_catalog_items],
    resources={
        **build_resources(),
        IO_MANAGER: JsonPartitionIOManager(base_dir=str(aux_home() / "io")),
    },
)
