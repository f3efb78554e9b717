"""The daily UTC partitions shared by every aux asset."""

from __future__ import annotations

import os
from datetime import date

import dagster as dg

DEFAULT_START = "2026-01-01"  # first day of the embedded sample (aux_assets.sample.DEFAULT_START)


def partitions_start(value: str | None = None) -> str:
    """``AUX_PARTITIONS_START`` validated as ``YYYY-MM-DD`` (default: the demo data's first day)."""
    text = value if value is not None else os.environ.get("AUX_PARTITIONS_START", DEFAULT_START)
    try:
        date.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"AUX_PARTITIONS_START={text!r} is not a date; use YYYY-MM-DD, e.g. 2026-01-01"
        ) from None
    return text


daily_partitions = dg.DailyPartitionsDefinition(start_date=partitions_start(), timezone="UTC")
