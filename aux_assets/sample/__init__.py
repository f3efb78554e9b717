"""The embedded default source: a deterministic, realistic AUXIP-like static STAC collection.

``generate_sample`` writes the 27 product types of ``docs/design/sample.md`` (real names,
validity rules, cadences, lags and sizes; synthetic bytes) for a range of days;
:class:`~aux_assets.sample.living.LivingSample` is the embedded default: every day from a first
day to now, each file written on first use and published on the real service's clock.
CLI: ``python -m aux_assets.sample OUT``.
"""

from aux_assets.sample.generator import (
    COLLECTION_ID,
    DEFAULT_END,
    DEFAULT_MAX_SIZE,
    DEFAULT_START,
    MIN_MAX_SIZE,
    SampleSummary,
    generate_sample,
)
from aux_assets.sample.rules import PRODUCT_TYPES

__all__ = [
    "COLLECTION_ID",
    "DEFAULT_END",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_START",
    "MIN_MAX_SIZE",
    "PRODUCT_TYPES",
    "SampleSummary",
    "generate_sample",
]
