"""What a materialized day holds, as rows; `python -m aux_assets.report YYYY-MM-DD` prints them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any, NamedTuple

from aux_assets.settings import aux_home
from aux_assets.utils.urls import file_path


class Row(NamedTuple):
    """One stored file of a selected item (or a product type with no selection)."""

    day: str
    product_type: str
    policy: str
    item_id: str | None
    href: str
    size: int | None
    checksum: str
    item_url: str = ""


def summary_rows(documents: Mapping[str, Any]) -> Iterator[Row]:
    """Rows of ``aux_catalog_items`` documents (``{day: document}``), by day."""
    for day, doc in sorted(documents.items()):
        for product in doc["products"]:
            ptype, policy = product["product_type"], str(product["policy"])
            features = product["items"]["features"]
            urls = product.get("item_urls", {})
            if not features:
                yield Row(day, ptype, policy, None, "", None, "")
            for feature in features:
                for asset in feature["assets"].values():
                    yield Row(
                        day,
                        ptype,
                        policy,
                        feature["id"],
                        asset["href"],
                        asset.get("file:size"),
                        asset.get("file:checksum", ""),
                        urls.get(feature["id"], ""),
                    )


def summary_table(documents: Mapping[str, Any]) -> str:
    """The rows as a markdown table (the materialization's summary in the UI)."""
    lines = [
        "| day | product type | selected item | policy | storage href | size | checksum |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary_rows(documents):
        checksum = f"`{row.checksum}`" if row.checksum else ""
        item = row.item_id or "(none)"
        if row.item_url:
            item = f"[{item}]({row.item_url})"
        lines.append(
            f"| {row.day} | {row.product_type} | {item} | {row.policy} | "
            f"{row.href} | {row.size if row.size is not None else ''} | {checksum} |"
        )
    changes = [
        f"- {day} {ptype}: {change}"
        for day, doc in sorted(documents.items())
        for ptype, change in doc.get("replaced", {}).items()
    ]
    if changes:
        lines += ["", "Replaced since the day's previous run:", *changes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("day", type=date.fromisoformat, help="partition key, YYYY-MM-DD")
    key = parser.parse_args(argv).day.isoformat()
    io_dir = aux_home() / "io"
    try:
        catalog = json.loads((io_dir / "aux_catalog_items" / f"{key}.json").read_text())
        staged = json.loads((io_dir / "aux_staged_items" / f"{key}.json").read_text())
    except FileNotFoundError:
        print(f"{key} is not materialized under {io_dir}", file=sys.stderr)
        return 1
    statuses = [o["status"] for p in staged["products"] for o in p["items"]]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("staged", "present", "failed"))
    print(f"{key}: {counts}")
    print(f"{'product type':<14} {'policy':<28} {'size':>8}  item -> stored file")
    for row in summary_rows({key: catalog}):
        where = str(file_path(row.href) or row.href)
        target = f"{row.item_id} -> {where}" if row.item_id else "(none)"
        size = "" if row.size is None else row.size
        print(f"{row.product_type:<14} {row.policy:<28} {size:>8}  {target}")
    for ptype, change in catalog.get("replaced", {}).items():
        print(f"replaced: {ptype}: {change}")
    missing = [t for t, ok in catalog["coverage"].items() if not ok]
    print("coverage: complete" if not missing else f"coverage: MISSING {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
