"""When the files of a window are expected: how long after the end of a window each product
type's providers publish the files that cover it, in normal operations.

A mandatory product type left uncovered is *not yet published* while its expected time lies
ahead, *never published* once it is past (for the types listed here; of other types we can
only say that nothing is published). Figures: ESA's timeliness of each product (Sentinel-1
POD: precise orbits within 20 days, restituted within 3 hours; Sentinel-3 POD precise orbits
within a month; ECMWF analyses the next day), which the embedded sample follows. Forecasts and
calibration files are published before the window they serve (0), predicted orbits within the
hour of their validity start.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PUBLICATION_LAGS: dict[str, timedelta] = {
    "AUX_POEORB": 20 * DAY,
    "AUX_RESORB": 5 * HOUR,
    "AUX_PREORB": HOUR,
    "MPL_ORBPRE": HOUR,
    "MPL_ORBSCT": timedelta(0),
    "AUX_CAL": timedelta(0),
    "AUX_INS": timedelta(0),
    "AUX_PP1": timedelta(0),
    "AUX_PP2": timedelta(0),
    "AUX_SCS": timedelta(0),
    "AUX_WND": timedelta(0),
    "AUX_WAV": timedelta(0),
    "AUX_ICE": 17 * HOUR,
    "AMH_ERRMAT": DAY,
    "AUX_ECMWFD": timedelta(0),
    "AUX_CAMSFO": timedelta(0),
    "AUX_UT1UTC": timedelta(0),
    "GIP_R2EQOG": timedelta(0),
    "GIP_PROBAS": timedelta(0),
    "AUX_SADATA": 5 * HOUR,
    "AX___FRO_AX": timedelta(0),
    "AX___FPO_AX": timedelta(0),
    "AX___OSF_AX": timedelta(0),
    "AX___MA1_AX": 15 * HOUR,
    "SR___POEPAX": 26 * DAY,
    "OL_1_EO__AX": timedelta(0),
    "MW_1_NIR_AX": timedelta(0),
}


def expected_by(product_types: Iterable[str], end: datetime) -> tuple[str, datetime] | None:
    """Which of ``product_types`` (a type and its alternatives) is expected first to cover a
    span that ends at ``end``, and when at the latest; ``None`` when no type's delay is known."""
    known = [(end + PUBLICATION_LAGS[t], t) for t in product_types if t in PUBLICATION_LAGS]
    if not known:
        return None
    when, ptype = min(known)
    return ptype, when
