"""A day through the three assets in process, as the end-to-end tests run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg

from aux_assets.defs.assets import (
    IO_MANAGER,
    aux_catalog_items,
    aux_search_results,
    aux_staged_items,
)
from aux_assets.defs.io_managers import JsonPartitionIOManager
from aux_assets.defs.resources import build_resources


def materialize_day(
    home: Path, day: str
) -> tuple[dg.ExecuteInProcessResult, dict[str, dict[str, Any]]]:
    """Materialize ``day`` with the resources of the process environment (documents under
    ``home/io``): the result, and the staged outcomes by item id."""
    resources = {**build_resources(), IO_MANAGER: JsonPartitionIOManager(base_dir=str(home / "io"))}
    assets = [aux_search_results, aux_staged_items, aux_catalog_items]
    result = dg.materialize(assets, partition_key=day, resources=resources, raise_on_error=False)
    doc = json.loads((home / "io" / "aux_staged_items" / f"{day}.json").read_text())
    return result, {o["item_id"]: o for p in doc["products"] for o in p["items"]}
