"""Deadlines and timeliness: when a day's catalog entries are due, whether a day is late, and
how long each mandatory product type took from its publication to our catalog.

A day is due ``AUX_DUE_AFTER_HOURS`` (default 30) after its end: the precise products of a day
(meteo, restituted orbits) are published within hours, and operations expect the day complete
the morning after. A day is judged at each materialization and by ``aux_deadline_sensor``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from aux_assets.discovery import published_at
from aux_assets.documents import SearchDocument, StagedDocument
from aux_assets.settings import positive_int_env

DUE_AFTER_ENV = "AUX_DUE_AFTER_HOURS"
DEFAULT_DUE_AFTER_H = 30


def due_after(env: Mapping[str, str] | None = None) -> timedelta:
    """``AUX_DUE_AFTER_HOURS`` (default 30): how long after its end a day must be complete."""
    return timedelta(hours=positive_int_env(env, DUE_AFTER_ENV, DEFAULT_DUE_AFTER_H, "hours"))


def due_time(day: str, after: timedelta) -> datetime:
    """When the day ``YYYY-MM-DD`` is due: its end (next midnight UTC) plus ``after``."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
    return start + timedelta(days=1) + after


@dataclass(frozen=True)
class Verdict:
    """Whether a day meets its deadline now, in words and numbers."""

    day: str
    due: datetime
    state: str  # "complete", "not due" or "late"
    description: str
    hours_late: float

    @property
    def passed(self) -> bool:
        return self.state != "late"


def _clock(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 2)


def judge(
    day: str, after: timedelta, now: datetime, missing: Sequence[str] | None, at: datetime | None
) -> Verdict:
    """The deadline verdict of ``day`` at ``now``. ``missing``: the mandatory product types the
    catalog lacks per the day's latest materialization (at ``at``), ``None`` when the day was
    never materialized. A complete day passes; an incomplete one passes until it is due, then
    is late."""
    due = due_time(day, after)
    if missing is not None and not missing and at is not None:
        # "as of": a re-run long after the deadline does not say when the day first completed
        text = f"{day} complete as of {_clock(at)} (due {_clock(due)})"
        return Verdict(day, due, "complete", text, 0.0)
    lacking = (
        "never materialized"
        if missing is None
        else f"incomplete at {_clock(at) if at else 'its last run'}: {', '.join(missing)}"
    )
    if now < due:
        text = f"{day} not due until {_clock(due)}; {lacking}"
        return Verdict(day, due, "not due", text, 0.0)
    late = _hours(now - due)
    text = (
        f"{day} is late: due {_clock(due)} ({late} h ago), {lacking}; materialize the day "
        "again once its products are published, or see the failed checks of its last run"
    )
    return Verdict(day, due, "late", text, late)


def latencies(
    search: SearchDocument, staged: StagedDocument, staged_at: datetime
) -> dict[str, float]:
    """Per mandatory product type of a day, the hours from the publication of its items staged
    in this run to ``staged_at`` (the longest, when several); types with nothing staged now or
    no publication time (``published``, else ``created``) are left out."""
    published = {
        (found["collection"], feature["id"]): when
        for found in search["products"]
        for feature in found["selected"]["features"]
        if (when := published_at(feature.get("properties", {}))) is not None
    }
    hours: dict[str, float] = {}
    for product in staged["products"]:
        if not product["mandatory"]:
            continue
        for item in product["items"]:
            when = published.get((item["collection"], item["item_id"]))
            if item["status"] == "staged" and when is not None:
                ptype = product["product_type"]
                hours[ptype] = max(hours.get(ptype, 0.0), _hours(staged_at - when))
    return hours
