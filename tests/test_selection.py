"""Tests for aux_assets.selection: the ESA ValCover-family selection policies."""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pystac
import pytest

from aux_assets import selection
from aux_assets.selection import (
    CLOSEST_EDGE,
    POLICIES,
    Margins,
    UnknownPolicyError,
    Validity,
    check_policy,
    generation_time,
    item_unit,
    policy_family,
    policy_window_kind,
    processing_window,
    select,
    served_units,
    validity,
)
from aux_assets.utils.names import platform_of_name

OPEN_END = "9999-12-31T23:59:59Z"


def t(text: str) -> datetime:
    """An aware UTC datetime from 'YYYY-MM-DDTHH:MM:SS'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_item(
    item_id: str,
    start: datetime | str | None,
    end: datetime | str | None,
    gen: datetime | str | None = None,
    published: datetime | str | None = None,
    **extra: Any,
) -> pystac.Item:
    """A STAC item with validity [start, end], processing:datetime and published.

    Strings are used as they are (to test parsing); ``end=None`` makes an open-ended item.
    """

    def text(value: datetime | str) -> str:
        return value if isinstance(value, str) else iso(value)

    props: dict[str, Any] = dict(extra)
    if start is not None:
        props["start_datetime"] = text(start)
    if end is not None:
        props["end_datetime"] = text(end)
    if gen is not None:
        props["processing:datetime"] = text(gen)
    if published is not None:
        props["published"] = text(published)
    anchor = start if isinstance(start, datetime) else t("2000-01-01T00:00:00")
    return pystac.Item(item_id, None, None, anchor, props)


def ids(items: list[pystac.Item]) -> list[str]:
    return [item.id for item in items]


def sel_ids(
    items: list[pystac.Item], policy: str, start: datetime, end: datetime, **kw: Any
) -> list[str]:
    return ids(select(items, policy, start, end, **kw))


# --------------------------------------------------------------------------- registry, errors


def test_policies_are_exactly_the_contract() -> None:
    assert POLICIES == (
        "ValCover",
        "LatestValCover",
        "ValIntersect",
        "LatestValIntersect",
        "ValIntersectWithoutDuplicate",
        "LatestValidity",
        "LatestStopValidity",
        "LatestValidityClosest",
        "ClosestStartValidity",
        "ClosestStopValidity",
        "BestCentredCover",
        "LatestValCoverClosest",
        "LargestOverlap",
        "LargestOverlap85",
        "LatestGeneration",
    )


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_accepts_empty_input(policy: str) -> None:
    assert check_policy(policy) == policy
    assert select([], policy, t("2024-01-01T00:00:00"), t("2024-01-02T00:00:00")) == []


def test_unknown_policy_lists_valid_names() -> None:
    with pytest.raises(UnknownPolicyError) as info:
        select([], "LatestValcover", t("2024-01-01T00:00:00"), t("2024-01-02T00:00:00"))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'LatestValcover'" in message
    assert "did you mean 'LatestValCover'" in message
    for name in POLICIES:
        assert name in message
    with pytest.raises(UnknownPolicyError):
        check_policy("ValIntersectWithoutDuplicates")
    with pytest.raises(UnknownPolicyError):
        policy_window_kind("Nope")


def test_policy_window_kind() -> None:
    kinds = {policy: policy_window_kind(policy) for policy in POLICIES}
    assert {p for p, k in kinds.items() if k == "cover"} == {
        "ValCover",
        "LatestValCover",
        "BestCentredCover",
        "LatestValCoverClosest",
    }
    assert {p for p, k in kinds.items() if k == "intersect"} == {
        "ValIntersect",
        "LatestValIntersect",
        "ValIntersectWithoutDuplicate",
        "LargestOverlap",
        "LargestOverlap85",
    }
    assert {p for p, k in kinds.items() if k == "any"} == {
        "LatestValidity",
        "LatestStopValidity",
        "LatestValidityClosest",
        "ClosestStartValidity",
        "ClosestStopValidity",
        "LatestGeneration",
    }


@pytest.mark.parametrize(
    ("start", "end", "kw", "match"),
    [
        (t("2024-01-02T00:00:00"), t("2024-01-01T00:00:00"), {}, "before its start"),
        (datetime(2024, 1, 1), t("2024-01-02T00:00:00"), {}, "naive"),
        (t("2024-01-01T00:00:00"), datetime(2024, 1, 2), {}, "naive"),
        (t("2024-01-01T00:00:00"), t("2024-01-02T00:00:00"), {"margin_before_s": -1}, ">= 0"),
        (t("2024-01-01T00:00:00"), t("2024-01-02T00:00:00"), {"margin_after_s": -0.5}, ">= 0"),
        (
            t("2024-01-01T00:00:00"),
            t("2024-01-02T00:00:00"),
            {"margin_after_s": float("nan")},
            "finite",
        ),
        (t("0001-01-01T00:00:00"), t("2024-01-02T00:00:00"), {"margin_before_s": 60}, "range"),
    ],
)
def test_invalid_windows(start: datetime, end: datetime, kw: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select([], "ValCover", start, end, **kw)


def test_processing_window_applies_margins_in_utc() -> None:
    cet = timezone(timedelta(hours=1))
    w = processing_window(
        datetime(2024, 4, 12, 11, 0, tzinfo=cet), t("2024-04-12T10:25:00"), 7000, 60
    )
    assert w == Validity(t("2024-04-12T08:03:20"), t("2024-04-12T10:26:00"))
    assert w.start.tzinfo is UTC


@pytest.mark.parametrize("policy", POLICIES)
def test_item_without_dates_is_an_error_naming_it(policy: str) -> None:
    good = make_item("good", t("2024-01-01T00:00:00"), t("2024-01-03T00:00:00"))
    bad = make_item("S1__AUX_WND_broken", t("2024-01-01T00:00:00"), t("2024-01-03T00:00:00"))
    del bad.properties["start_datetime"], bad.properties["end_datetime"]
    bad.datetime = None
    with pytest.raises(ValueError, match="S1__AUX_WND_broken"):
        select([good, bad], policy, t("2024-01-02T00:00:00"), t("2024-01-02T01:00:00"))


def test_bad_item_dates_are_errors_naming_the_item() -> None:
    garbage = make_item("garbage", "yesterday", "2024-01-02T00:00:00Z")
    with pytest.raises(ValueError, match=r"garbage.*start_datetime"):
        validity(garbage)
    reversed_item = make_item("reversed", t("2024-01-02T00:00:00"), t("2024-01-01T00:00:00"))
    with pytest.raises(ValueError, match=r"reversed.*before"):
        validity(reversed_item)
    bad_gen = make_item("bad-gen", t("2024-01-01T00:00:00"), None, gen="soon")
    with pytest.raises(ValueError, match=r"bad-gen.*processing:datetime"):
        generation_time(bad_gen)


# --------------------------------------------------------------------------- item dates


def test_validity_reading() -> None:
    closed = make_item("closed", "2024-01-01T00:00:00.123Z", "2024-01-02t00:00:00z")
    assert validity(closed) == Validity(t("2024-01-01T00:00:00.123000"), t("2024-01-02T00:00:00"))
    offset = make_item("offset", "2024-01-01T01:00:00+01:00", "2024-01-01T12:00:00")  # naive end
    assert validity(offset) == Validity(t("2024-01-01T00:00:00"), t("2024-01-01T12:00:00"))
    assert validity(offset).end.tzinfo is UTC

    open_ended = make_item("open", t("2024-01-01T00:00:00"), None)
    assert validity(open_ended).end == datetime.max.replace(tzinfo=UTC)

    open_start = make_item("open-start", None, t("2024-01-01T00:00:00"))
    assert validity(open_start).start == datetime.min.replace(tzinfo=UTC)

    instant = pystac.Item("instant", None, None, t("2024-01-01T06:00:00"), {})
    assert validity(instant) == Validity(t("2024-01-01T06:00:00"), t("2024-01-01T06:00:00"))

    far = make_item("far", t("2020-01-01T00:00:00"), OPEN_END)
    assert validity(far).end == t("9999-12-31T23:59:59")


def test_generation_time_fallbacks() -> None:
    base = t("2024-01-01T00:00:00")
    item = make_item("x", base, None, created="2024-01-03T00:00:00Z")
    assert generation_time(item) == t("2024-01-03T00:00:00")
    item.properties["published"] = "2024-01-02T00:00:00Z"
    assert generation_time(item) == t("2024-01-02T00:00:00")
    item.properties["processing:datetime"] = "2024-01-01T12:00:00Z"
    assert generation_time(item) == t("2024-01-01T12:00:00")
    assert generation_time(make_item("bare", base, None)) == datetime.min.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- ValCover, edges


POE_VS = t("2024-04-11T22:59:42")
POE_VE = t("2024-04-13T00:59:42")


def test_valcover_bounds_are_inclusive_on_file_edges() -> None:
    poe = make_item("POE", POE_VS, POE_VE, POE_VS + timedelta(days=21, hours=7))
    # The window starts and ends exactly on the file's validity edges.
    assert sel_ids([poe], "ValCover", POE_VS, POE_VE) == ["POE"]
    assert sel_ids([poe], "LatestValCover", POE_VS, POE_VS + timedelta(seconds=25)) == ["POE"]
    assert sel_ids([poe], "LatestValCover", POE_VE - timedelta(seconds=25), POE_VE) == ["POE"]
    # A strict implementation (CQL2 T_CONTAINS, COPRS: vs < W0 and ve > W1) would reject it.
    v = validity(poe)
    assert not (v.start < POE_VS and v.end > POE_VE)
    # One microsecond outside either edge: no longer covered.
    tick = timedelta(microseconds=1)
    assert sel_ids([poe], "ValCover", POE_VS - tick, POE_VE) == []
    assert sel_ids([poe], "ValCover", POE_VS, POE_VE + tick) == []


def test_multi_result_order_is_validity_then_generation_then_id() -> None:
    start, end = t("2024-01-01T00:00:00"), t("2024-01-10T00:00:00")
    items = [
        make_item("d", start, end, t("2024-01-02T00:00:00")),
        make_item("c", start, end, t("2024-01-01T00:00:00")),
        make_item("b", start - timedelta(days=1), end, t("2024-01-05T00:00:00")),
        make_item("a2", start, end + timedelta(days=1), t("2023-01-01T00:00:00")),
        make_item("a1", start, end + timedelta(days=1), t("2023-01-01T00:00:00")),
    ]
    window = (t("2024-01-02T00:00:00"), t("2024-01-03T00:00:00"))
    assert sel_ids(items, "ValCover", *window) == ["b", "c", "d", "a1", "a2"]
    assert sel_ids(items, "ValIntersect", *window) == ["b", "c", "d", "a1", "a2"]


# --------------------------------------------------------------------------- S1 orbits


def resorb(k: int) -> pystac.Item:
    vs = t("2024-04-01T00:00:00") + k * timedelta(minutes=98.6)
    ve = vs + timedelta(hours=3, minutes=17, seconds=30)
    gen = ve + timedelta(minutes=30)
    return make_item(f"RES_{k:03d}", vs, ve, gen, gen + timedelta(minutes=5))


def poeorb(day: datetime, regenerated: bool = False) -> pystac.Item:
    vs = day - timedelta(hours=1, seconds=18)
    ve = day + timedelta(days=1, minutes=59, seconds=42)
    gen = vs + timedelta(days=21, hours=7) + (timedelta(days=400) if regenerated else timedelta())
    name = f"POE_{day:%Y%m%d}" + ("_v2" if regenerated else "")
    return make_item(name, vs, ve, gen, gen + timedelta(minutes=10))


def test_s1_slice_two_resorb_and_one_poeorb() -> None:
    resorbs = [resorb(k) for k in range(60)]
    poeorbs = [poeorb(t("2024-04-01T00:00:00") + timedelta(days=d)) for d in range(4)]
    # Slice of 25 s inside the overlap of RES_020 and RES_021 (k·98.6 min grid).
    start = t("2024-04-01T00:00:00") + 21 * timedelta(minutes=98.6) + timedelta(minutes=30)
    end = start + timedelta(seconds=25)
    assert sel_ids(resorbs, "ValCover", start, end) == ["RES_020", "RES_021"]
    assert sel_ids(resorbs, "LatestValCover", start, end) == ["RES_021"]
    assert sel_ids(poeorbs, "ValCover", start, end) == ["POE_20240402"]
    assert sel_ids(poeorbs, "LatestValCover", start, end) == ["POE_20240402"]
    # Near midnight, two POEORB overlap; the newest generation wins.
    late = t("2024-04-02T23:30:00")
    assert sel_ids(poeorbs, "ValCover", late, late + timedelta(seconds=25)) == [
        "POE_20240402",
        "POE_20240403",
    ]
    assert sel_ids(poeorbs, "LatestValCover", late, late + timedelta(seconds=25)) == [
        "POE_20240403"
    ]
    # A re-published POEORB (same validity, newer generation) replaces the original.
    again = [*poeorbs, poeorb(t("2024-04-02T00:00:00"), regenerated=True)]
    assert sel_ids(again, "LatestValCover", start, end) == ["POE_20240402_v2"]


# --------------------------------------------------------------------------- "latest"


def test_latest_is_generation_not_publication() -> None:
    start, end = t("2024-01-01T00:00:00"), t("2024-02-01T00:00:00")
    new = make_item("new", start, end, t("2024-01-10T00:00:00"), t("2024-01-10T01:00:00"))
    # Reprocessed/re-published later by CDSE, but generated earlier: must not win.
    old = make_item("old", start, end, t("2023-06-01T00:00:00"), t("2025-01-01T00:00:00"))
    window = (t("2024-01-15T00:00:00"), t("2024-01-16T00:00:00"))
    for policy in ("LatestValCover", "LatestValIntersect", "LatestGeneration", "LatestValidity"):
        assert sel_ids([old, new], policy, *window) == ["new"], policy
    assert sel_ids([old, new], "ValIntersectWithoutDuplicate", *window) == ["new"]


def test_latest_ties_later_published_then_greater_id() -> None:
    start, end, gen = t("2024-01-01T00:00:00"), t("2024-02-01T00:00:00"), t("2024-01-02T00:00:00")
    a = make_item("a", start, end, gen, t("2024-01-03T00:00:00"))
    b = make_item("b", start, end, gen, t("2024-01-02T00:00:00"))
    c = make_item("c", start, end, gen, t("2024-01-02T00:00:00"))
    window = (t("2024-01-15T00:00:00"), t("2024-01-16T00:00:00"))
    assert sel_ids([a, b, c], "LatestValCover", *window) == ["a"]
    assert sel_ids([b, c], "LatestValCover", *window) == ["c"]


def test_s3_fro_with_7000_s_margins() -> None:
    day0 = t("2024-04-12T00:00:00")

    def fro(d: int, pub: datetime | None = None) -> pystac.Item:
        vs = day0 + timedelta(days=d)
        gen = vs + timedelta(days=3, hours=6, minutes=55)
        return make_item(
            f"FRO_{vs:%Y%m%d}", vs, vs + timedelta(days=10), gen, pub or gen + timedelta(hours=1)
        )

    items = [fro(d) for d in range(-12, 3)]
    start, end = t("2024-04-12T10:00:00"), t("2024-04-12T10:25:00")
    covering = sel_ids(items, "ValCover", start, end, margin_before_s=7000, margin_after_s=7000)
    assert covering == [f"FRO_{day0 + timedelta(days=d):%Y%m%d}" for d in range(-9, 1)]
    assert sel_ids(items, "LatestValCover", start, end, margin_before_s=7000) == ["FRO_20240412"]

    # A reprocessed old FRO (old generation, newest publication) must not win.
    reprocessed = fro(-5, pub=t("2024-06-01T00:00:00"))
    reprocessed.id = "FRO_20240407_reprocessed"
    assert sel_ids([*items, reprocessed], "LatestValCover", start, end, margin_before_s=7000) == [
        "FRO_20240412"
    ]

    # Margins widen the window: at 00:30 the 7000 s margin reaches into the previous day.
    early = t("2024-04-12T00:30:00")
    assert sel_ids(items, "LatestValCover", early, early) == ["FRO_20240412"]
    assert sel_ids(items, "LatestValCover", early, early, margin_before_s=7000) == ["FRO_20240411"]
    wide = sel_ids(items, "ValCover", early, early, margin_before_s=7000, margin_after_s=7000)
    assert "FRO_20240412" not in wide and len(wide) == 9


def test_open_ended_files_latest_generation_even_for_historical_windows() -> None:
    end = "2100-01-01T00:00:00Z"
    items = [
        make_item("CAL_V2020_G2020", t("2020-01-01T00:00:00"), end, t("2020-01-01T00:00:00")),
        make_item("CAL_V2020_G2023", t("2020-01-01T00:00:00"), end, t("2023-06-01T00:00:00")),
        make_item("CAL_V2022_G2022", t("2022-01-01T00:00:00"), end, t("2022-01-01T00:00:00")),
        make_item("OSF_V2021", t("2021-06-01T00:00:00"), OPEN_END, t("2021-06-01T00:00:00")),
    ]
    historical = (t("2021-01-01T00:00:00"), t("2021-01-01T00:10:00"))
    assert sel_ids(items, "LatestValCover", *historical) == ["CAL_V2020_G2023"]
    recent = (t("2024-01-01T00:00:00"), t("2024-01-01T00:10:00"))
    assert sel_ids(items, "LatestValCover", *recent) == ["CAL_V2020_G2023"]
    assert sel_ids(items, "LatestValCoverClosest", *recent) == ["CAL_V2022_G2022"]
    assert sel_ids(items, "ValCover", *recent) == [
        "CAL_V2020_G2020",
        "CAL_V2020_G2023",
        "OSF_V2021",
        "CAL_V2022_G2022",
    ]
    # A window far in the future is still covered by 9999-12-31 but not by 2100-01-01.
    assert sel_ids(items, "ValCover", t("2200-01-01T00:00:00"), t("2200-01-02T00:00:00")) == [
        "OSF_V2021"
    ]


# --------------------------------------------------------------------------- instants


def wnd_items() -> list[pystac.Item]:
    """S1 AUX_WND: instant validities every 3 h; two runs overlap (runs at 06 and 18 UTC)."""
    items = []
    for run in (t("2024-04-11T18:00:00"), t("2024-04-12T06:00:00")):
        for h in range(6, 49, 3):
            v = run + timedelta(hours=h)
            items.append(make_item(f"WND_V{v:%Y%m%dT%H}_G{run:%Y%m%dT%H}", v, v, run, run))
    return items


def test_instant_validities() -> None:
    items = wnd_items()
    day = (t("2024-04-13T00:00:00"), t("2024-04-14T00:00:00"))
    assert sel_ids(items, "ValCover", *day) == []
    assert sel_ids(items, "LatestValCover", *day) == []
    # Nearest instant to the centre (11:10), the newest run among equal validities.
    start, end = t("2024-04-13T11:00:00"), t("2024-04-13T11:20:00")
    assert sel_ids(items, "ClosestStartValidity", start, end) == ["WND_V20240413T12_G20240412T06"]
    assert sel_ids(items, "ClosestStopValidity", start, end) == ["WND_V20240413T12_G20240412T06"]
    # Instants inside the window or on its edge intersect it.
    edge = (t("2024-04-13T09:00:00"), t("2024-04-13T12:00:00"))
    assert sel_ids(items, "ValIntersectWithoutDuplicate", *edge) == [
        "WND_V20240413T09_G20240412T06",
        "WND_V20240413T12_G20240412T06",
    ]
    assert len(sel_ids(items, "ValIntersect", *edge)) == 4


def test_closest_start_tie_prefers_the_file_before_the_centre() -> None:
    before = make_item(
        "before", t("2024-04-13T09:00:00"), t("2024-04-13T09:00:00"), gen="2024-01-01T00:00:00Z"
    )
    after = make_item(
        "after", t("2024-04-13T12:00:00"), t("2024-04-13T12:00:00"), gen="2024-04-12T00:00:00Z"
    )
    centre = t("2024-04-13T10:30:00")
    # Equal distance: COPRS picks the file before the centre even if the other is newer.
    assert sel_ids([after, before], "ClosestStartValidity", centre, centre) == ["before"]
    assert sel_ids([after, before], "ClosestStopValidity", centre, centre) == ["before"]
    # LatestValidityClosest has no side preference: the newer generation wins.
    assert sel_ids([after, before], "LatestValidityClosest", centre, centre) == ["after"]
    # Any closer file wins regardless of side.
    assert sel_ids(
        [after, before], "ClosestStartValidity", centre, centre + timedelta(seconds=2)
    ) == ["after"]


def test_closest_start_uses_the_window_centre_not_w0() -> None:
    at_w0 = make_item("at_w0", t("2024-04-13T00:00:00"), t("2024-04-13T00:00:00"))
    near_centre = make_item("near_centre", t("2024-04-13T03:30:00"), t("2024-04-13T03:30:00"))
    start, end = t("2024-04-13T00:00:00"), t("2024-04-13T06:00:00")
    # prosEO (reference W0) would pick at_w0.
    assert sel_ids([at_w0, near_centre], "ClosestStartValidity", start, end) == ["near_centre"]


def test_closest_stop_validity_with_one_day_after_margin() -> None:
    # S1 AUX_ECE / ERRMAT style: [2000-01-01, ve], ClosestStopValidity(0, 86400 s).
    items = [
        make_item(
            f"ECE_{d}",
            t("2000-01-01T00:00:00"),
            t("2024-04-10T00:00:00") + timedelta(days=d),
            t("2024-04-10T16:00:00") + timedelta(days=d),
        )
        for d in range(6)
    ]
    start = end = t("2024-04-12T00:00:00")
    assert sel_ids(items, "ClosestStopValidity", start, end) == ["ECE_2"]
    # W = [04-12, 04-13]: centre 04-12T12:00; ve 04-12 and 04-13 tie, the one before wins.
    assert sel_ids(items, "ClosestStopValidity", start, end, margin_after_s=86400) == ["ECE_2"]
    assert sel_ids(items, "ClosestStopValidity", start, end, margin_after_s=86400 + 2) == ["ECE_3"]


# --------------------------------------------------------------------------- intersect family


def test_val_intersect_edges() -> None:
    start, end = t("2024-01-01T10:00:00"), t("2024-01-01T12:00:00")
    touch_before = make_item("touch_before", t("2024-01-01T08:00:00"), start)
    touch_after = make_item("touch_after", end, t("2024-01-01T14:00:00"))
    inside = make_item("inside", t("2024-01-01T10:30:00"), t("2024-01-01T11:00:00"))
    overlap = make_item("overlap", t("2024-01-01T11:59:59"), t("2024-01-01T14:00:00"))
    instant_edge = make_item("instant_edge", end, end)
    instant_out = make_item("instant_out", end + timedelta(seconds=1), end + timedelta(seconds=1))
    items = [touch_before, touch_after, inside, overlap, instant_edge, instant_out]
    assert sel_ids(items, "ValIntersect", start, end) == ["inside", "overlap", "instant_edge"]
    # A zero-length window on a file edge intersects the file (inclusive).
    assert sel_ids(items, "ValIntersect", start, start) == ["touch_before"]
    assert sel_ids(items, "ValIntersect", end, end) == ["overlap", "instant_edge", "touch_after"]
    # Margins widen the window past the touching edges.
    assert sel_ids(items, "ValIntersect", start, end, margin_before_s=1) == [
        "touch_before",
        "inside",
        "overlap",
        "instant_edge",
    ]


def test_latest_val_intersect() -> None:
    start, end = t("2024-01-01T10:00:00"), t("2024-01-01T12:00:00")
    items = [
        make_item(
            "old_static", t("2019-01-01T00:00:00"), "2099-12-31T23:59:59Z", t("2019-01-01T00:00:00")
        ),
        make_item(
            "new_static", t("2023-01-01T00:00:00"), "2099-12-31T23:59:59Z", t("2023-01-01T00:00:00")
        ),
        make_item(
            "future", t("2024-06-01T00:00:00"), "2099-12-31T23:59:59Z", t("2024-05-01T00:00:00")
        ),
    ]
    assert sel_ids(items, "LatestValIntersect", start, end) == ["new_static"]
    assert sel_ids(items, "LatestGeneration", start, end) == ["future"]


def test_val_intersect_without_duplicate_keeps_latest_per_validity() -> None:
    # S3 MA1: 12 h validities at 03/09/15/21, some regenerated.
    items = []
    for hour in range(3, 48, 6):
        vs = t("2024-04-12T00:00:00") + timedelta(hours=hour)
        gen = vs + timedelta(hours=14, minutes=36)
        items.append(make_item(f"MA1_{vs:%d%H}_g1", vs, vs + timedelta(hours=12), gen))
        if hour in (9, 15):
            items.append(
                make_item(
                    f"MA1_{vs:%d%H}_g2", vs, vs + timedelta(hours=12), gen + timedelta(days=2)
                )
            )
    start, end = t("2024-04-12T14:00:00"), t("2024-04-12T16:00:00")
    assert sel_ids(items, "ValIntersect", start, end) == [
        "MA1_1203_g1",
        "MA1_1209_g1",
        "MA1_1209_g2",
        "MA1_1215_g1",
        "MA1_1215_g2",
    ]
    assert sel_ids(items, "ValIntersectWithoutDuplicate", start, end) == [
        "MA1_1203_g1",
        "MA1_1209_g2",
        "MA1_1215_g2",
    ]


def test_largest_overlap_and_85_percent_threshold() -> None:
    start, end = t("2024-01-01T00:00:00"), t("2024-01-01T10:00:00")  # |W| = 10 h

    def f(name: str, vs_h: float, ve_h: float, gen: str = "2024-01-01T00:00:00Z") -> pystac.Item:
        return make_item(name, start + timedelta(hours=vs_h), start + timedelta(hours=ve_h), gen)

    ninety = [f("small", 3, 5), f("ninety", 1, 12)]
    assert sel_ids(ninety, "LargestOverlap", start, end) == ["ninety"]
    assert sel_ids(ninety, "LargestOverlap85", start, end) == ["ninety"]

    eighty = [f("small", 3, 5), f("eighty", -2, 8)]
    assert sel_ids(eighty, "LargestOverlap", start, end) == ["eighty"]
    assert sel_ids(eighty, "LargestOverlap85", start, end) == []

    exactly = [f("exactly85", 1.5, 20)]
    assert sel_ids(exactly, "LargestOverlap85", start, end) == ["exactly85"]
    just_under = [f("under85", 1.5, 20)]
    assert sel_ids(just_under, "LargestOverlap85", start, end, margin_before_s=1) == []

    # Zero-length window: kept if it intersects.
    assert sel_ids(
        exactly, "LargestOverlap85", start + timedelta(hours=2), start + timedelta(hours=2)
    ) == ["exactly85"]
    assert sel_ids(exactly, "LargestOverlap85", start, start) == []

    # Equal overlap: vs closest to W0 wins, then the latest generation.
    full = [
        f("far", -5, 11, "2024-01-15T00:00:00Z"),
        f("near_old", -1, 12),
        f("near_new", -1, 12, "2024-02-01T00:00:00Z"),
    ]
    assert sel_ids(full, "LargestOverlap", start, end) == ["near_new"]
    # The vs criterion comes before the generation.
    assert sel_ids(full[:2], "LargestOverlap", start, end) == ["near_old"]


# --------------------------------------------------------------------------- validity-free


def test_latest_validity_and_latest_stop_validity() -> None:
    # S3 MW_1 style: [2000-01-01, ve = G - 20 min].
    items = [
        make_item(
            f"MW1_{d}",
            t("2000-01-01T00:00:00"),
            t("2024-04-01T00:00:00") + timedelta(days=d),
            t("2024-04-01T00:20:00") + timedelta(days=d),
        )
        for d in range(5)
    ]
    items.append(
        make_item(
            "MW1_3_regen",
            t("2000-01-01T00:00:00"),
            t("2024-04-04T00:00:00"),
            t("2024-05-01T00:00:00"),
        )
    )
    items.append(
        make_item(
            "late_start",
            t("2024-03-01T00:00:00"),
            t("2024-03-02T00:00:00"),
            t("2024-03-01T00:00:00"),
        )
    )
    window = (t("2024-01-01T00:00:00"), t("2024-01-01T01:00:00"))  # far from every file
    assert sel_ids(items, "LatestStopValidity", *window) == ["MW1_4"]
    assert sel_ids(items, "LatestValidity", *window) == ["late_start"]
    # Ties on vs: the latest generation.
    assert sel_ids(items[:-1], "LatestValidity", *window) == ["MW1_3_regen"]
    # Ties on ve: the latest generation.
    assert sel_ids([*items[:4], items[5]], "LatestStopValidity", *window) == ["MW1_3_regen"]


def test_latest_validity_closest() -> None:
    # S3 SL_1_VSC: nearest vs to the centre of W, newest on ties.
    items = [
        make_item(
            "vsc_a", t("2024-01-01T00:00:00"), t("2024-01-02T00:00:00"), t("2024-01-01T00:00:00")
        ),
        make_item(
            "vsc_b", t("2024-01-03T00:00:00"), t("2024-01-04T00:00:00"), t("2024-01-03T00:00:00")
        ),
        make_item(
            "vsc_b2", t("2024-01-03T00:00:00"), t("2024-01-04T00:00:00"), t("2024-01-05T00:00:00")
        ),
    ]
    assert sel_ids(
        items, "LatestValidityClosest", t("2024-01-02T00:00:00"), t("2024-01-03T12:00:00")
    ) == ["vsc_b2"]
    assert sel_ids(
        items, "LatestValidityClosest", t("2024-01-01T00:00:00"), t("2024-01-02T00:00:00")
    ) == ["vsc_a"]


def test_best_centred_cover_and_latest_val_cover_closest() -> None:
    # Annex B Figure B-1 style: R1 covers barely, R2 starts closest to W0, R3 best centred.
    start, end = t("2024-01-01T10:00:00"), t("2024-01-01T12:00:00")
    items = [
        make_item(
            "R1", t("2024-01-01T09:00:00"), t("2024-01-01T12:00:00"), t("2024-01-05T00:00:00")
        ),
        make_item(
            "R2", t("2024-01-01T09:30:00"), t("2024-01-01T20:00:00"), t("2024-01-02T00:00:00")
        ),
        make_item(
            "R3", t("2024-01-01T06:00:00"), t("2024-01-01T16:00:00"), t("2024-01-01T00:00:00")
        ),
        make_item(
            "R4", t("2024-01-01T11:00:00"), t("2024-01-02T00:00:00"), t("2024-01-06T00:00:00")
        ),
    ]
    assert sel_ids(items, "BestCentredCover", start, end) == ["R3"]
    assert sel_ids(items, "LatestValCoverClosest", start, end) == ["R2"]
    assert sel_ids(items, "LatestValCover", start, end) == ["R1"]
    assert sel_ids(items, "LatestGeneration", start, end) == ["R4"]
    # Ties go to the latest generation.
    twin = make_item(
        "R3_regen", t("2024-01-01T06:00:00"), t("2024-01-01T16:00:00"), t("2024-01-03T00:00:00")
    )
    assert sel_ids([*items, twin], "BestCentredCover", start, end) == ["R3_regen"]


# --------------------------------------------------------------------------- invariants


def mixed_pool() -> list[pystac.Item]:
    """Closed, instant, open-ended and duplicated files with many ties."""
    base = t("2024-01-01T00:00:00")
    items = []
    for i in range(40):
        vs = base + timedelta(hours=3 * (i % 13))
        kind = i % 4
        ve = {0: vs + timedelta(hours=12), 1: vs, 2: None, 3: vs + timedelta(hours=6)}[kind]
        gen = base + timedelta(days=i % 5)
        pub = gen + timedelta(hours=i % 3)
        items.append(make_item(f"f{i:02d}", vs, ve, gen, pub))
    # The same id twice (e.g. from two sources), differing only in the asset; newest generation.
    for href in ("https://a.example/x", "https://b.example/x"):
        newest = base + timedelta(days=10)
        dup = make_item(
            "dup", base + timedelta(hours=9), base + timedelta(hours=21), newest, newest
        )
        dup.add_asset("file", pystac.Asset(href))
        items.append(dup)
    return items


WINDOWS = [
    (t("2024-01-01T09:00:00"), t("2024-01-01T09:00:00"), 0.0, 0.0),
    (t("2024-01-01T10:00:00"), t("2024-01-01T11:00:00"), 0.0, 0.0),
    (t("2024-01-01T12:00:00"), t("2024-01-01T15:00:00"), 3600.0, 7200.0),
    (t("2024-01-02T00:00:00"), t("2024-01-02T12:00:00"), 0.0, 0.0),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_input_order_never_changes_the_result(policy: str) -> None:
    pool = mixed_pool()
    rng = random.Random(20240412)
    for start, end, before, after in WINDOWS:
        expected = select(pool, policy, start, end, before, after)
        for _ in range(8):
            shuffled = pool[:]
            rng.shuffle(shuffled)
            got = select(shuffled, policy, start, end, before, after)
            assert [i.to_dict() for i in got] == [i.to_dict() for i in expected]


def passes_prefilter(item: pystac.Item, kind: str, w: Validity) -> bool:
    """The server-side validity filter a caller would apply for ``policy_window_kind``."""
    v = validity(item)
    if kind == "cover":
        return v.start <= w.start and v.end >= w.end
    if kind == "intersect":
        return v.start <= w.end and v.end >= w.start
    return True


@pytest.mark.parametrize("policy", POLICIES)
def test_server_side_prefilter_of_the_policy_kind_is_safe(policy: str) -> None:
    pool = mixed_pool()
    kind = policy_window_kind(policy)
    for start, end, before, after in WINDOWS:
        w = processing_window(start, end, before, after)
        prefiltered = [item for item in pool if passes_prefilter(item, kind, w)]
        assert len(prefiltered) < len(pool) or kind == "any"
        assert select(prefiltered, policy, start, end, before, after) == select(
            pool, policy, start, end, before, after
        )


def test_single_result_policies_return_at_most_one() -> None:
    pool = mixed_pool()
    multi = {"ValCover", "ValIntersect", "ValIntersectWithoutDuplicate"}
    for policy in POLICIES:
        if policy in multi:
            continue
        for start, end, before, after in WINDOWS:
            assert len(select(pool, policy, start, end, before, after)) <= 1


# policy families and margins

FAMILIES = {
    "ValCover": "cover",
    "LatestValCover": "cover",
    "BestCentredCover": "cover",
    "LatestValCoverClosest": "cover",
    "ValIntersect": "intersect",
    "LatestValIntersect": "intersect",
    "ValIntersectWithoutDuplicate": "intersect",
    "LargestOverlap": "intersect",
    "LargestOverlap85": "intersect",
    "LatestValidityClosest": "closest",
    "ClosestStartValidity": "closest",
    "ClosestStopValidity": "closest",
    "LatestValidity": "latest",
    "LatestStopValidity": "latest",
    "LatestGeneration": "latest",
}
DAY_MIN = datetime.min.replace(tzinfo=UTC)
DAY_MAX = datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize(("policy", "family"), FAMILIES.items())
def test_every_policy_belongs_to_its_family(policy: str, family: str) -> None:
    assert policy_family(policy) == family


def test_policies_are_the_families_keys_in_the_documented_order() -> None:
    assert set(POLICIES) == set(FAMILIES)
    # the module docstring describes them in the same order
    assert tuple(re.findall(r"(?m)^    ([A-Z][A-Za-z0-9]+)$", selection.__doc__ or "")) == POLICIES


def test_closest_edge_names_exactly_the_closest_policies() -> None:
    closest = {policy for policy, family in FAMILIES.items() if family == "closest"}
    assert set(CLOSEST_EDGE) == closest
    assert CLOSEST_EDGE["ClosestStopValidity"] == "end"
    assert CLOSEST_EDGE["ClosestStartValidity"] == CLOSEST_EDGE["LatestValidityClosest"] == "start"


@pytest.mark.parametrize("policy", ["ValCovr", "valcover", "", "LatestValCover "])
def test_policy_family_refuses_an_unknown_policy(policy: str) -> None:
    with pytest.raises(UnknownPolicyError, match="valid policies: ValCover, LatestValCover"):
        policy_family(policy)


def test_an_unknown_policy_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownPolicyError, match="did you mean 'ValCover'"):
        policy_family("ValCovr")


def test_widen_subtracts_the_before_margin_and_adds_the_after_margin() -> None:
    start, end = t("2026-01-05T00:00:00"), t("2026-01-06T00:00:00")
    assert Margins(60, 7200).widen(start, end) == Validity(
        t("2026-01-04T23:59:00"), t("2026-01-06T02:00:00")
    )
    assert Margins(0.5, 0).widen(start, end).start == start - timedelta(milliseconds=500)
    assert Margins().widen(start, end) == Validity(start, end)


def test_covering_is_the_span_of_windows_whose_widened_window_lies_in_the_validity() -> None:
    margins = Margins(60, 7200)
    v = Validity(t("2026-01-05T00:00:00"), t("2026-01-06T00:00:00"))
    span = margins.covering(v)
    assert span == Validity(t("2026-01-05T00:01:00"), t("2026-01-05T22:00:00"))
    # the extreme window of the span widens exactly to the validity ...
    assert margins.widen(span.start, span.end) == v
    # ... and a second more on either side leaves it
    second = timedelta(seconds=1)
    assert margins.widen(span.start - second, span.end).start < v.start
    assert margins.widen(span.start, span.end + second).end > v.end


def test_covering_a_validity_shorter_than_the_margins_is_empty() -> None:
    v = Validity(t("2026-01-05T00:00:00"), t("2026-01-05T01:00:00"))
    span = Margins(1800, 3600).covering(v)
    assert span.end < span.start


def test_meeting_is_the_span_touched_by_windows_whose_widened_window_meets_the_validity() -> None:
    margins = Margins(60, 7200)
    v = Validity(t("2026-01-05T00:00:00"), t("2026-01-06T00:00:00"))
    span = margins.meeting(v)
    # [vs - dt1, ve + dt0]: a window ending at span.start or starting at span.end still meets v
    assert span == Validity(t("2026-01-04T22:00:00"), t("2026-01-06T00:01:00"))
    assert margins.widen(span.start - timedelta(hours=1), span.start).end == v.start
    assert margins.widen(span.end, span.end + timedelta(hours=1)).start == v.end


def test_covering_and_meeting_hold_at_the_ends_of_the_date_range() -> None:
    margins = Margins(60, 7200)
    open_ended = Validity(t("2020-01-01T00:00:00"), datetime.fromisoformat(OPEN_END))
    assert margins.meeting(open_ended).end == DAY_MAX
    assert margins.meeting(Validity(DAY_MIN, DAY_MAX)) == Validity(DAY_MIN, DAY_MAX)
    assert margins.covering(Validity(DAY_MIN, DAY_MAX)) == Validity(
        DAY_MIN + timedelta(seconds=60), DAY_MAX - timedelta(seconds=7200)
    )
    late = Validity(datetime.fromisoformat(OPEN_END), DAY_MAX)
    assert margins.covering(late).start == DAY_MAX
    early = Validity(DAY_MIN, DAY_MIN)
    assert margins.covering(early) == Validity(DAY_MIN + timedelta(seconds=60), DAY_MIN)


@pytest.mark.parametrize(
    ("before", "after", "name"),
    [
        (-1, 0, "margin_before_s"),
        (0, -0.5, "margin_after_s"),
        (math.nan, 0, "margin_before_s"),
        (0, math.nan, "margin_after_s"),
        (math.inf, 0, "margin_before_s"),
        (0, -math.inf, "margin_after_s"),
    ],
)
def test_a_negative_or_non_finite_margin_is_refused_by_name(
    before: float, after: float, name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        Margins(before, after)
    with pytest.raises(ValueError, match=name):
        processing_window(t("2026-01-05T00:00:00"), t("2026-01-06T00:00:00"), before, after)


def test_a_margin_longer_than_the_date_range_is_refused_not_overflowed() -> None:
    with pytest.raises(ValueError, match="margin_after_s 1e\\+20 s is longer than"):
        Margins(0, 1e20)
    huge = Margins(3e11, 3e11)  # just within the range: the spans are held at its ends
    span = huge.meeting(Validity(t("2026-01-05T00:00:00"), t("2026-01-06T00:00:00")))
    assert (span.start, span.end) == (DAY_MIN, DAY_MAX)


def test_widen_refuses_a_window_that_leaves_the_date_range() -> None:
    with pytest.raises(ValueError, match="leaves the supported date range"):
        Margins(1, 0).widen(DAY_MIN, t("2026-01-05T00:00:00"))
    with pytest.raises(ValueError, match="leaves the supported date range"):
        Margins(0, 1).widen(t("2026-01-05T00:00:00"), DAY_MAX)
    open_end = datetime.fromisoformat(OPEN_END)
    with pytest.raises(ValueError, match="leaves the supported date range"):
        processing_window(t("2026-01-05T00:00:00"), open_end, 0, 3600)
    assert processing_window(t("2026-01-05T00:00:00"), open_end).end == open_end


def test_processing_window_is_the_widened_window_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    start = datetime(2026, 1, 5, 1, tzinfo=paris)
    end = datetime(2026, 1, 6, 1, tzinfo=paris)
    w = processing_window(start, end, 90, 30)
    assert w == Margins(90, 30).widen(start, end)
    assert w == Validity(t("2026-01-04T23:58:30"), t("2026-01-06T00:00:30"))
    assert w.start.utcoffset() == w.end.utcoffset() == timedelta(0)


@pytest.mark.parametrize("naive", ["start", "end"])
def test_processing_window_refuses_naive_datetimes(naive: str) -> None:
    start, end = t("2026-01-05T00:00:00"), t("2026-01-06T00:00:00")
    bounds = {"start": start, "end": end}
    bounds[naive] = bounds[naive].replace(tzinfo=None)
    with pytest.raises(ValueError, match=f"{naive} .* is a naive datetime"):
        processing_window(bounds["start"], bounds["end"], 60, 60)


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "S1A_OPER_AUX_POEORB_OPOD_20260126T070842_V20260105T225942_20260107T005942",
            ("sentinel-1", "sentinel-1a"),
        ),
        (
            "S1A_IW_RAW__0NDV_20260105T173951_20260105T174016_062342_07A1B2_1F3E.SAFE",
            ("sentinel-1", "sentinel-1a"),
        ),
        (
            "S2B_OPER_GIP_PROBAS_MPC__20260101T000000_V20260101T000000_21000101T000000_B00",
            ("sentinel-2", "sentinel-2b"),
        ),
        (
            "S2__OPER_AUX_ECMWFD_PDMC_20260104T180000_V20260105T000000_20260105T120000",
            ("sentinel-2", None),
        ),
        (
            "S3__AX___MA1_AX_20260105T000000_20260106T000000_20260104T120000___________________ECW_O_SN_001",
            ("sentinel-3", None),
        ),
        (
            "S3B_SR___POEPAX_20260105T000000_20260106T000000_20260106T000000___________________CNE_O_NT_001",
            ("sentinel-3", "sentinel-3b"),
        ),
        ("AUX_FOO_20260105", None),
        ("S1AOPER", None),
    ],
)
def test_platform_of_name(name: str, expected: tuple[str, str | None] | None) -> None:
    assert platform_of_name(name) == expected


def _unit_item(item_id: str, platform: str | None = None) -> pystac.Item:
    extra = {"platform": platform} if platform else {}
    return make_item(item_id, t("2026-01-05T00:00:00"), t("2026-01-05T12:00:00"), **extra)


S2_UNITS = ("sentinel-2a", "sentinel-2b")


@pytest.mark.parametrize(
    ("item_id", "platform", "unit", "served"),
    [
        # the platform, when the source gives one, decides
        ("S2A_OPER_AUX_X", "sentinel-2b", "sentinel-2b", ["sentinel-2b"]),
        ("S2A_OPER_AUX_X", "sentinel-2c", "sentinel-2c", []),
        # rs-server gave none: the unit the name names
        ("S2A_OPER_AUX_X", None, "sentinel-2a", ["sentinel-2a"]),
        ("S2C_OPER_AUX_X", None, "sentinel-2c", []),
        # a file of the whole constellation serves every listed unit of its mission, only
        ("S2__OPER_AUX_ECMWFD", None, None, list(S2_UNITS)),
        ("S1__OPER_AUX_SCS", None, None, []),
        # no platform and no mission in the name: nothing says it serves a listed unit
        ("AUX_FOO", None, None, []),
    ],
)
def test_units_of_an_item(
    item_id: str, platform: str | None, unit: str | None, served: list[str]
) -> None:
    item = _unit_item(item_id, platform)
    assert item_unit(item) == unit
    assert served_units(item, S2_UNITS) == served


def test_a_file_of_a_constellation_serves_only_its_missions_units() -> None:
    mixed = ("sentinel-1a", "sentinel-2b", "sentinel-3a", "sentinel-2a")
    assert served_units(_unit_item("S2__OPER_AUX_ECMWFD"), mixed) == ["sentinel-2b", "sentinel-2a"]
    assert served_units(_unit_item("S3__AX___MA1_AX"), mixed) == ["sentinel-3a"]
