"""Asset checks of the aux assets: computed from the documents the assets produce."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

MANDATORY_CANDIDATES = dg.AssetCheckSpec(
    "mandatory_candidates",
    asset="aux_search_results",
    description="Every mandatory product type has a selection (for each listed platform) "
    "in every window. Not blocking: what was found is still staged.",
)
ALL_STAGED_VERIFIED = dg.AssetCheckSpec(
    "all_staged_verified",
    asset="aux_staged_items",
    blocking=True,
    description="Every selected item is stored with verified size and checksum and registered.",
)
CATALOG_COVERAGE = dg.AssetCheckSpec(
    "catalog_coverage_complete",
    asset="aux_catalog_items",
    blocking=True,
    description="The catalog holds a selection for every mandatory product type of every window.",
)


def _gaps(documents: Mapping[str, Any]) -> list[str]:
    return [
        f"{key} {p['product_type']} ({', '.join(p['missing_units'])})"
        for key, doc in sorted(documents.items())
        for p in doc["products"]
        if p["mandatory"] and p["missing_units"]
    ]


def mandatory_candidates(documents: Mapping[str, Any]) -> dg.AssetCheckResult:
    gaps = _gaps(documents)
    return dg.AssetCheckResult(
        check_name=MANDATORY_CANDIDATES.name,
        passed=not gaps,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"missing": dg.MetadataValue.json(gaps), "n_missing": len(gaps)},
        description="no selection for: " + "; ".join(gaps[:20]) if gaps else None,
    )


def all_staged_verified(documents: Mapping[str, Any]) -> dg.AssetCheckResult:
    failed = {
        f"{o['collection']}/{o['item_id']}": o["reason"]
        for doc in documents.values()
        for p in doc["products"]
        for o in p["items"]
        if o["status"] == "failed"
    }
    return dg.AssetCheckResult(
        check_name=ALL_STAGED_VERIFIED.name,
        passed=not failed,
        metadata={"failed": dg.MetadataValue.json(failed), "n_failed": len(failed)},
        description="; ".join(f"{k}: {v}" for k, v in list(failed.items())[:20]) or None,
    )


def catalog_coverage(documents: Mapping[str, Any]) -> dg.AssetCheckResult:
    uncovered = [
        f"{key} {product_type}"
        for key, doc in sorted(documents.items())
        for product_type, covered in doc["coverage"].items()
        if not covered
    ]
    return dg.AssetCheckResult(
        check_name=CATALOG_COVERAGE.name,
        passed=not uncovered,
        metadata={"uncovered": dg.MetadataValue.json(uncovered), "n_uncovered": len(uncovered)},
        description="not covered: " + "; ".join(uncovered[:20]) if uncovered else None,
    )
