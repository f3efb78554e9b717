"""Tests for aux_assets.timeliness: deadlines of days and publication -> staging latencies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aux_assets.timeliness import due_after, due_time, judge, latencies

AFTER = timedelta(hours=30)
DUE = datetime(2026, 1, 7, 6, tzinfo=UTC)  # 2026-01-05 ends 01-06 00:00; +30 h


def test_a_day_is_due_its_offset_after_its_end() -> None:
    assert due_time("2026-01-05", AFTER) == DUE
    assert due_after({}) == AFTER
    assert due_after({"AUX_DUE_AFTER_HOURS": "6"}) == timedelta(hours=6)
    with pytest.raises(ValueError, match="AUX_DUE_AFTER_HOURS='soon' must be a positive whole"):
        due_after({"AUX_DUE_AFTER_HOURS": "soon"})


def test_a_complete_day_passes_as_of_its_latest_materialization() -> None:
    early = judge("2026-01-05", AFTER, DUE + timedelta(days=3), [], DUE - timedelta(hours=4))
    assert early.passed and early.state == "complete" and early.hours_late == 0
    assert early.description == (
        "2026-01-05 complete as of 2026-01-07 02:00 UTC (due 2026-01-07 06:00 UTC)"
    )
    rerun = judge("2026-01-05", AFTER, DUE + timedelta(days=3), [], DUE + timedelta(days=2))
    assert rerun.passed and rerun.hours_late == 0  # complete now, whenever it first was


def test_an_incomplete_day_passes_until_due_then_is_late_and_says_what_lacks() -> None:
    at = DUE - timedelta(hours=10)
    waiting = judge("2026-01-05", AFTER, DUE - timedelta(hours=1), ["AUX_POEORB"], at)
    assert waiting.passed and waiting.state == "not due"
    assert "not due until 2026-01-07 06:00 UTC" in waiting.description
    late = judge("2026-01-05", AFTER, DUE + timedelta(hours=5, minutes=30), ["AUX_POEORB"], at)
    assert not late.passed and late.state == "late" and late.hours_late == 5.5
    assert "is late: due 2026-01-07 06:00 UTC (5.5 h ago), incomplete at" in late.description
    assert "AUX_POEORB" in late.description
    never = judge("2026-01-05", AFTER, DUE + timedelta(hours=1), None, None)
    assert not never.passed and "never materialized" in never.description


def _feature(item_id: str, published: str | None) -> dict[str, Any]:
    properties = {} if published is None else {"published": published}
    return {"id": item_id, "properties": properties}


def test_latencies_take_the_longest_of_the_items_staged_now_per_mandatory_type() -> None:
    search: Any = {
        "products": [
            {
                "collection": "s1-aux",
                "selected": {
                    "features": [
                        _feature("a", "2026-01-06T00:00:00Z"),
                        _feature("b", "2026-01-06T06:00:00Z"),
                        _feature("c", "2026-01-06T00:00:00Z"),
                        _feature("d", None),
                        _feature("o", "2026-01-01T00:00:00Z"),
                        {"id": "e", "properties": {"created": "2026-01-06T09:00:00Z"}},
                    ]
                },
            }
        ]
    }

    def item(item_id: str, status: str = "staged") -> dict[str, Any]:
        return {"item_id": item_id, "collection": "s1-aux", "status": status}

    staged: Any = {
        "products": [
            {"product_type": "A", "mandatory": True, "items": [item("a"), item("b")]},
            {"product_type": "C", "mandatory": True, "items": [item("c", "present")]},
            {"product_type": "D", "mandatory": True, "items": [item("d")]},
            {"product_type": "O", "mandatory": False, "items": [item("o")]},
            {"product_type": "E", "mandatory": True, "items": [item("e")]},  # created, no published
        ]
    }
    now = datetime(2026, 1, 6, 12, tzinfo=UTC)
    assert latencies(search, staged, now) == {"A": 12.0, "E": 3.0}
