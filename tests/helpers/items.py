"""STAC item builders shared by the discovery tests (tests/test_discovery.py) and the sensor
tests (tests/defs/test_sensors.py)."""

from datetime import UTC, datetime, timedelta

import pystac

NOW = datetime.now(UTC).replace(microsecond=0)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_feature(
    item_id: str,
    product_type: str,
    start: str,
    end: str | None = None,
    published: datetime | None = None,
    platform: str | None = "sentinel-1a",
    generation: str = "2026-01-01T00:00:00Z",
) -> dict:
    props = {
        "datetime": None,
        "start_datetime": start,
        "end_datetime": end or start,
        "product:type": product_type,
        "processing:datetime": generation,
        "published": iso(published or NOW - timedelta(hours=1)),
    }
    if platform:
        props["platform"] = platform
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "collection": "aux",
        "geometry": None,
        "properties": props,
        "assets": {},
        "links": [],
    }


def make_item(*args: object, **kwargs: object) -> pystac.Item:
    return pystac.Item.from_dict(make_feature(*args, **kwargs))  # type: ignore[arg-type]
