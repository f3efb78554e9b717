"""Asset checks of the aux assets: computed from the documents the assets produce."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from aux_assets.documents import (
    CatalogDocument,
    SearchDocument,
    StagedDocument,
    failed_items,
    mandatory_gaps,
    uncovered,
)

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


def mandatory_candidates(documents: Mapping[str, SearchDocument]) -> dg.AssetCheckResult:
    gaps = mandatory_gaps(documents)
    return dg.AssetCheckResult(
        check_name=MANDATORY_CANDIDATES.name,
        passed=not gaps,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"missing": dg.MetadataValue.json(gaps), "n_missing": len(gaps)},
        description="no selection for: " + "; ".join(gaps[:20]) if gaps else None,
    )


def all_staged_verified(documents: Mapping[str, StagedDocument]) -> dg.AssetCheckResult:
    failed = failed_items(documents)
    return dg.AssetCheckResult(
        check_name=ALL_STAGED_VERIFIED.name,
        passed=not failed,
        metadata={"failed": dg.MetadataValue.json(failed), "n_failed": len(failed)},
        description="; ".join(f"{k}: {v}" for k, v in list(failed.items())[:20]) or None,
    )


def catalog_coverage(documents: Mapping[str, CatalogDocument]) -> dg.AssetCheckResult:
    gaps = uncovered(documents)
    return dg.AssetCheckResult(
        check_name=CATALOG_COVERAGE.name,
        passed=not gaps,
        metadata={"uncovered": dg.MetadataValue.json(gaps), "n_uncovered": len(gaps)},
        description="not covered: " + "; ".join(gaps[:20]) if gaps else None,
    )
