"""Timestamps read and written one way: ISO 8601 text to aware UTC datetimes and back."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_utc(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 timestamp (``Z`` allowed; naive means UTC) as an aware datetime;
    ``ValueError`` when it is not one."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def utc_text(value: datetime) -> str:
    """``value`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; ``ValueError`` for a naive one."""
    if value.utcoffset() is None:
        raise ValueError(
            f"{value.isoformat()} is a naive datetime (no timezone); pass a UTC datetime"
        )
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
