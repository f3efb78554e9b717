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


def _result(
    spec: dg.AssetCheckSpec, key: str, problems: list[str] | dict[str, str | None], what: str
) -> dg.AssetCheckResult:
    """Passed when there are no ``problems``; they go to the metadata (``key``, ``n_<key>``)
    and the first 20 to the description, after ``what``."""
    shown = [f"{k}: {v}" for k, v in problems.items()] if isinstance(problems, dict) else problems
    return dg.AssetCheckResult(
        check_name=spec.name,
        passed=not problems,
        metadata={key: dg.MetadataValue.json(problems), f"n_{key}": len(problems)},
        description=f"{what}{'; '.join(shown[:20])}" if problems else None,
    )


def mandatory_candidates(documents: Mapping[str, SearchDocument]) -> dg.AssetCheckResult:
    return _result(MANDATORY_CANDIDATES, "missing", mandatory_gaps(documents), "no selection for: ")


def all_staged_verified(documents: Mapping[str, StagedDocument]) -> dg.AssetCheckResult:
    return _result(ALL_STAGED_VERIFIED, "failed", failed_items(documents), "")


def catalog_coverage(documents: Mapping[str, CatalogDocument]) -> dg.AssetCheckResult:
    return _result(CATALOG_COVERAGE, "uncovered", uncovered(documents), "not covered: ")
