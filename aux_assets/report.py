"""Print what a materialized day holds: ``python -m aux_assets.report YYYY-MM-DD``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from aux_assets.resources import aux_home
from aux_assets.storage import local_path_of


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("day", type=date.fromisoformat, help="partition key, YYYY-MM-DD")
    args = parser.parse_args(argv)
    io_dir = aux_home() / "io"
    path = io_dir / "aux_catalog_items" / f"{args.day.isoformat()}.json"
    staged_path = io_dir / "aux_staged_items" / f"{args.day.isoformat()}.json"
    if not path.exists() or not staged_path.exists():
        print(f"{args.day} is not materialized under {io_dir}", file=sys.stderr)
        return 1
    doc = json.loads(path.read_text())
    staged = json.loads(staged_path.read_text())
    statuses = [o["status"] for p in staged["products"] for o in p["items"]]
    print(
        f"{args.day}: "
        + ", ".join(f"{statuses.count(s)} {s}" for s in ("staged", "present", "failed"))
    )
    print(f"{'product type':<14} {'policy':<28} {'size':>8}  item -> stored file")
    for product in doc["products"]:
        for feature in product["items"]["features"] or [None]:
            if feature is None:
                print(f"{product['product_type']:<14} {product['policy']:<28} {'':>8}  (none)")
                continue
            for asset in feature["assets"].values():
                local = local_path_of(asset["href"])
                where = str(local) if local else asset["href"]
                print(
                    f"{product['product_type']:<14} {product['policy']:<28} "
                    f"{asset.get('file:size', 0):>8}  {feature['id']} -> {where}"
                )
    missing = [t for t, ok in doc["coverage"].items() if not ok]
    print("coverage: complete" if not missing else f"coverage: MISSING {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
