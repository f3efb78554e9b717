"""The daily UTC partitions shared by every aux asset."""

from __future__ import annotations

import dagster as dg

from aux_assets.settings import partitions_start

daily_partitions = dg.DailyPartitionsDefinition(start_date=partitions_start(), timezone="UTC")
