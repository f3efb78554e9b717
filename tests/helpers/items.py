"""STAC item builders shared by the tests: search-side items (discovery, sensors) and items
carrying assets to stage."""

from datetime import UTC, datetime, timedelta
from typing import Any

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


def asset_item(item_id: str, assets: dict[str, dict[str, Any]], dated: bool = False) -> pystac.Item:
    """A minimal item with ``assets`` (key -> asset fields): an AUX_POEORB covering 2026-01-05 when
    ``dated``, else an undated item."""
    properties: dict[str, Any] = (
        {
            "datetime": None,
            "start_datetime": "2026-01-04T22:59:42Z",
            "end_datetime": "2026-01-06T00:59:42Z",
            "product:type": "AUX_POEORB",
        }
        if dated
        else {"datetime": "2026-01-05T00:00:00Z"}
    )
    return pystac.Item.from_dict(
        {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": item_id,
            "geometry": None,
            "properties": properties,
            "assets": assets,
            "links": [],
        }
    )
