"""A JSON IO manager: one readable JSON document per asset partition, never pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg

from aux_assets.utils.jsonfiles import write_json


class JsonPartitionIOManager(dg.ConfigurableIOManager):
    """Stores ``{partition_key: document}`` outputs as ``<base_dir>/<asset>/<key>.json``."""

    base_dir: str

    def _path(self, asset_key: dg.AssetKey, partition_key: str) -> Path:
        return Path(self.base_dir).joinpath(*asset_key.path, f"{partition_key}.json")

    def stored(self, asset_key: dg.AssetKey, partition_key: str) -> Any:
        """The document stored for ``partition_key`` (before this run writes), if any."""
        path = self._path(asset_key, partition_key)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        keys = context.asset_partition_keys if context.has_asset_partitions else ["all"]
        missing = [k for k in keys if k not in obj]
        if missing:
            raise ValueError(f"output of {context.asset_key.to_user_string()} lacks {missing}")
        for key in keys:
            write_json(self._path(context.asset_key, key), obj[key])

    def load_input(self, context: dg.InputContext) -> dict[str, Any]:
        upstream = context.upstream_output
        assert upstream is not None and upstream.asset_key is not None
        keys = context.asset_partition_keys if context.has_asset_partitions else ["all"]
        documents: dict[str, Any] = {}
        for key in keys:
            path = self._path(upstream.asset_key, key)
            if not path.exists():
                raise FileNotFoundError(
                    f"{upstream.asset_key.to_user_string()} has no stored partition {key} "
                    f"({path}); materialize it first"
                )
            documents[key] = json.loads(path.read_text(encoding="utf-8"))
        return documents
