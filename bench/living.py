"""``python -m bench.living [--days N]``: the embedded default's costs. Seconds to generate a day
of the living sample (the first day in an empty cache, then each next day), its files and bytes,
and seconds to materialize the last N days in one range run in process from a fresh home (what
a backfill does, without the daemon; the webserver + daemon figure is printed by
tests/defs/test_living_default.py)."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def generation(days: int) -> None:
    """Print the seconds to generate the first day, then each next day."""
    from aux_assets.sample.living import LivingSample

    first = datetime.now(UTC).date() - timedelta(days=days + 1)
    with tempfile.TemporaryDirectory() as tmp:
        sample = LivingSample(Path(tmp), date(2026, 1, 1))
        began = time.perf_counter()
        n_first = len(sample.generate_day(first))
        cold = time.perf_counter() - began
        nexts = []
        for n in range(1, days):
            began = time.perf_counter()
            sample.generate_day(first + timedelta(days=n))
            nexts.append(time.perf_counter() - began)
        n_files = sum(1 for p in sample.root.iterdir() if p.is_dir() and p.name[0] != ".")
        mib = _size(sample.root) / 2**20
    print(f"generate the first day: {n_first} files in {cold:.2f} s")
    print(
        f"generate each next day: median {statistics.median(nexts):.2f} s, "
        f"max {max(nexts):.2f} s ({days} days: {n_files} files, {mib:.1f} MiB, "
        f"{mib / days:.2f} MiB per day)"
    )


def range_run(days: int) -> None:
    """Print the seconds to materialize the last ``days`` days in one range run."""
    import dagster as dg

    from aux_assets.defs.assets import (
        IO_MANAGER,
        aux_catalog_items,
        aux_search_results,
        aux_staged_items,
    )
    from aux_assets.defs.io_managers import JsonPartitionIOManager
    from aux_assets.defs.partitions import daily_partitions
    from aux_assets.defs.resources import build_resources

    keys = daily_partitions.get_partition_keys()[-days:]
    with tempfile.TemporaryDirectory() as home:
        resources = {
            **build_resources({"AUX_ASSETS_HOME": home}),
            IO_MANAGER: JsonPartitionIOManager(base_dir=os.path.join(home, "io")),
        }
        began = time.perf_counter()
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [aux_search_results, aux_staged_items, aux_catalog_items],
                instance=instance,
                resources=resources,
                tags={
                    "dagster/asset_partition_range_start": keys[0],
                    "dagster/asset_partition_range_end": keys[-1],
                },
                raise_on_error=False,
            )
        wall = time.perf_counter() - began
        staged = _size(Path(home) / "storage") / 2**20
    state = "succeeded" if result.success else "FAILED"
    print(
        f"materialize {keys[0]}..{keys[-1]} ({days} days) in one range run from a fresh home: "
        f"{state} in {wall:.1f} s ({wall / days:.2f} s per day, {staged:.1f} MiB staged)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.living", description=__doc__)
    parser.add_argument("--days", type=int, default=30, help="days (default %(default)s)")
    args = parser.parse_args(argv)
    if args.days < 2:
        parser.error("--days must be at least 2")
    generation(args.days)
    range_run(args.days)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
