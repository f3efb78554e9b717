"""ESA auxiliary-data selection policies ("ValCover" family) as pure functions over STAC items.

``select(items, policy, start, end, margin_before_s, margin_after_s)`` returns the items that
``policy`` selects for the processing window ``[start, end]``. Definitions follow Annex B of the
*Generic IPF Interface Specification* as quoted by prosEO, CS-Group and COPRS
(``docs/design/policies.md``). Where those implementations disagree, the choice made here is
given with its reason.

Notation
    W = [W0, W1] = [start - margin_before_s, end + margin_after_s]. Margins only enlarge the
    window (prosEO rejects negative ones, so do we); ``end < start`` and naive datetimes are
    errors; everything is compared in UTC (:func:`processing_window` computes W). A file's
    validity is [vs, ve] (:func:`validity`), its generation g (:func:`generation_time`), its
    publication p (``published``).

Item dates
    [vs, ve] = [start_datetime, end_datetime]; both absent: [datetime, datetime] (an instant).
    A missing end with a start present is open-ended (``datetime.max`` UTC); a missing start with
    an end present is open at the start (``datetime.min`` UTC). Naive item timestamps are read as
    UTC (STAC and OData timestamps are UTC by definition). An item with no date at all, an
    unparsable date or ve < vs raises ValueError naming the item.

"Latest"
    Maximum generation time (``processing:datetime``; ``published``, then ``created`` only when
    it is absent), as ESA, prosEO and COPRS do. Publication is NOT the order: CDSE re-publishes
    old files, so a reprocessed file with an old generation but a new publication must not win.
    Ties: later ``published``, then greater item id, then greater collection id; items still
    equal (the same id twice in one input) are ordered by their canonical JSON, so the input
    order never changes the result.

Policies (single-result policies return [] or [item]; multi-result ones are sorted by
(vs, ve, g, p, id))
    ValCover
        All files with vs <= W0 and ve >= W1. Bounds are INCLUSIVE (Annex B via CS-Group, prosEO,
        sentineleof). COPRS, sentineleof's CDSE query and the seed's CQL2 ``t_contains`` are
        strict and wrongly drop files aligned on a window edge, which is common (POEORB at
        ...225942, FRO at T000000, ECMWFD on 3-hour marks).
    LatestValCover
        The latest ValCover file. With open-ended files (S1 SAFE ADFs, S2 GIPPs) this is the
        newest generation even for historical windows, as in the ESA task tables.
    ValIntersect
        Positive overlap: vs < W1 and ve > W0 (prosEO in memory), so a file that merely touches
        the window edge does not match. When the file validity or the window has zero length
        the test is inclusive (vs <= W1 and ve >= W0), so instant files inside or on the edge
        of the window match (generalises prosEO's t0 == t1 special case).
    LatestValIntersect
        The latest ValIntersect file.
    ValIntersectWithoutDuplicate
        ValIntersect keeping, per distinct (vs, ve), only the latest file. prosEO treats it as
        plain ValIntersect and CS-Group only tests whether W0 or W1 lies inside the file
        (missing files strictly inside W); we follow the intent of the name.
    LatestValidity
        Max vs over all files (validity-free, newer prosEO; COPRS adds an intersect condition).
        Tie: latest.
    LatestStopValidity
        Max ve over all files; tie: latest.
    LatestValidityClosest
        Min |vs - c| with c = (W0 + W1) / 2; tie: latest (newer prosEO; older prosEO used later
        vs).
    ClosestStartValidity
        Min |vs - c| with c the centre of W, as COPRS (the operational S1 production for
        AUX_WND/WAV/ICE) does; prosEO measures from W0 instead. On equal distance the file
        before the centre (vs < c) wins (COPRS), then the latest.
    ClosestStopValidity
        Same on ve (COPRS; prosEO measures from W1).
    BestCentredCover
        Among ValCover files, max min(W0 - vs, ve - W1); tie: latest.
    LatestValCoverClosest
        Among ValCover files, the one whose vs is closest to W0 (max vs); tie: latest.
    LargestOverlap
        Among ValIntersect files (prosEO; CS-Group uses ValCover files, for which every overlap
        equals |W| and the rule degenerates), max |[vs, ve] ∩ W|; tie: vs closest to W0, then
        latest.
    LargestOverlap85
        The LargestOverlap file only if its overlap is >= 85 % of |W| (prosEO); when |W| = 0 it
        is kept, since it intersects W.
    LatestGeneration
        The latest file, validity ignored (prosEO ``LastCreated``).

Cost: one streaming pass reads every validity (so every item is checked) and keeps only the
candidates, or the files tied on the policy's own criterion; generation times are read only for
those. O(n) for single-result policies, plus O(k log k) to order k multi-result candidates.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any, Final, Literal

import pystac
from pystac.utils import str_to_datetime

from aux_assets.utils.names import platform_of_name

Family = Literal["cover", "intersect", "closest", "latest"]
# every policy (names as ESA writes them, in the order messages list them) and its family
_FAMILIES: dict[str, Family] = {
    "ValCover": "cover",
    "LatestValCover": "cover",
    "ValIntersect": "intersect",
    "LatestValIntersect": "intersect",
    "ValIntersectWithoutDuplicate": "intersect",
    "LatestValidity": "latest",
    "LatestStopValidity": "latest",
    "LatestValidityClosest": "closest",
    "ClosestStartValidity": "closest",
    "ClosestStopValidity": "closest",
    "BestCentredCover": "cover",
    "LatestValCoverClosest": "cover",
    "LargestOverlap": "intersect",
    "LargestOverlap85": "intersect",
    "LatestGeneration": "latest",
}
POLICIES: tuple[str, ...] = tuple(_FAMILIES)
# the validity edge a closest policy compares with the window centre
CLOSEST_EDGE: dict[str, Literal["start", "end"]] = {
    "ClosestStartValidity": "start",
    "ClosestStopValidity": "end",
    "LatestValidityClosest": "start",
}

_MIN = datetime.min.replace(tzinfo=UTC)
_MAX = datetime.max.replace(tzinfo=UTC)
MAX_MARGIN_S = (_MAX - _MIN).total_seconds()  # a longer margin leaves every date range

_Key = tuple[Any, ...]


class UnknownPolicyError(ValueError):
    """A policy name that is not one of :data:`POLICIES`."""


@dataclass(frozen=True, slots=True)
class Validity:
    """A closed time interval [start, end] in aware UTC datetimes."""

    start: datetime
    end: datetime


_Rec = tuple[datetime, datetime, pystac.Item]  # (vs, ve, item); a plain tuple for speed
_VS: Final = 0
_VE: Final = 1
_ITEM: Final = 2


def check_policy(policy: str) -> str:
    """Return ``policy`` if it is in :data:`POLICIES`, else raise :class:`UnknownPolicyError`."""
    if policy in POLICIES:
        return policy
    close = difflib.get_close_matches(str(policy), POLICIES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownPolicyError(
        f"unknown selection policy {policy!r}{hint}; valid policies: {', '.join(POLICIES)}"
    )


def policy_family(policy: str) -> Family:
    """``cover``: the file must cover W; ``intersect``: it must meet W; ``closest``: one
    validity edge is compared with W's centre; ``latest``: the window does not matter."""
    return _FAMILIES[check_policy(policy)]


def policy_window_kind(policy: str) -> Literal["cover", "intersect", "any"]:
    """Which server-side prefilter keeps every file ``policy`` could select.

    ``"cover"``: vs <= W0 and ve >= W1; ``"intersect"``: vs <= W1 and ve >= W0; ``"any"``: no
    validity filter. W includes the margins (:class:`Margins`).
    """
    family = policy_family(policy)
    if family == "closest" or family == "latest":
        return "any"
    return family


def _shift(t: datetime, delta: timedelta) -> datetime:
    """``t + delta``, held at the ends of the date range."""
    try:
        return t + delta
    except OverflowError:
        return _MAX if delta > timedelta(0) else _MIN


@dataclass(frozen=True)
class Margins:
    """The margins dt0 (``before_s``) and dt1 (``after_s``) of a products entry: the one place
    where a window and its margins are combined.

    The processing window of ``[start, end]`` is W = [start - dt0, end + dt1] (:meth:`widen`).
    The inverse questions, which windows a validity covers or meets, are :meth:`covering` and
    :meth:`meeting`.
    """

    before_s: float = 0
    after_s: float = 0

    def __post_init__(self) -> None:
        for name, margin in (("margin_before_s", self.before_s), ("margin_after_s", self.after_s)):
            if not math.isfinite(margin) or margin < 0:
                raise ValueError(
                    f"{name} must be a finite number of seconds >= 0 (margins only enlarge the "
                    f"window), got {margin!r}"
                )
            if margin > MAX_MARGIN_S:
                raise ValueError(f"{name} {margin!r} s is longer than the supported date range")

    @property
    def before(self) -> timedelta:
        return timedelta(seconds=self.before_s)

    @property
    def after(self) -> timedelta:
        return timedelta(seconds=self.after_s)

    def widen(self, start: datetime, end: datetime) -> Validity:
        """W = [start - dt0, end + dt1]; ``ValueError`` if it leaves the date range."""
        try:
            return Validity(start - self.before, end + self.after)
        except OverflowError as exc:
            raise ValueError(
                f"window [{start.isoformat()}, {end.isoformat()}] with margins "
                f"({self.before_s} s, {self.after_s} s) leaves the supported date range"
            ) from exc

    def covering(self, v: Validity) -> Validity:
        """The span of the windows whose W lies inside ``v``: [vs + dt0, ve - dt1] (may be
        empty: end before start)."""
        return Validity(_shift(v.start, self.before), _shift(v.end, -self.after))

    def meeting(self, v: Validity) -> Validity:
        """The span the windows whose W meets ``v`` touch: a window [s, e] meets it when
        s <= ve + dt0 and e >= vs - dt1."""
        return Validity(_shift(v.start, -self.after), _shift(v.end, self.before))


def processing_window(
    start: datetime, end: datetime, margin_before_s: float = 0, margin_after_s: float = 0
) -> Validity:
    """W = [start - margin_before_s, end + margin_after_s] in UTC, validated."""
    for name, value in (("start", start), ("end", end)):
        if value.utcoffset() is None:
            raise ValueError(
                f"{name} {value.isoformat()} is a naive datetime; pass a timezone-aware one (UTC)"
            )
    margins = Margins(margin_before_s, margin_after_s)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end < start:
        raise ValueError(f"window end {end.isoformat()} is before its start {start.isoformat()}")
    return margins.widen(start, end)


def _parse(value: object, item: pystac.Item, name: str) -> datetime:
    """An item timestamp (RFC 3339 string or datetime) as an aware UTC datetime."""
    try:  # fast path: an RFC 3339 string in UTC
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
        if isinstance(parsed, datetime) and parsed.tzinfo is UTC:
            return parsed
    except ValueError:
        pass
    try:
        if isinstance(value, str):  # also the RFC 3339 forms fromisoformat refuses ("t", "z")
            parsed = str_to_datetime(value)
        elif not isinstance(value, datetime):
            raise TypeError(type(value).__name__)
        else:
            parsed = value
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"item {item.id!r}: {name} {value!r} is not an RFC 3339 timestamp"
        ) from exc


def _record(item: pystac.Item) -> _Rec:
    props = item.properties
    start, end = props.get("start_datetime"), props.get("end_datetime")
    if start is None and end is None:
        if item.datetime is None:
            raise ValueError(
                f"item {item.id!r} has no datetime, start_datetime or end_datetime; "
                "its validity is unknown"
            )
        instant = _parse(item.datetime, item, "datetime")
        return instant, instant, item
    vs = _MIN if start is None else _parse(start, item, "start_datetime")
    ve = _MAX if end is None else _parse(end, item, "end_datetime")
    if ve < vs:
        raise ValueError(
            f"item {item.id!r}: end_datetime {ve.isoformat()} is before start_datetime "
            f"{vs.isoformat()}"
        )
    return vs, ve, item


def validity(item: pystac.Item) -> Validity:
    """The validity [vs, ve] of ``item`` (see the module docstring for missing dates)."""
    vs, ve, _ = _record(item)
    return Validity(vs, ve)


def item_unit(item: pystac.Item) -> str | None:
    """The unit (platform) of ``item``: its ``platform``, else the unit its id names
    (``S1A_...``: ``sentinel-1a``; rs-server leaves ``platform`` null when the station's
    attributes do not give it), else ``None`` (``S2__...``: no unit)."""
    platform = item.properties.get("platform")
    if platform:
        return str(platform)
    named = platform_of_name(item.id)
    return named[1] if named else None


def served_units(item: pystac.Item, platforms: Sequence[str]) -> list[str]:
    """The listed ``platforms`` (units) ``item`` serves: its unit (:func:`item_unit`) when it
    has one; when it names none, every listed unit of its mission (``S2__...`` serves
    sentinel-2a and sentinel-2b: the file is the whole constellation's), and none when its id
    names no mission either (nothing says it is for a listed unit)."""
    unit = item_unit(item)
    if unit is not None:
        return [unit] if unit in platforms else []
    named = platform_of_name(item.id)
    if named is None:
        return []
    mission = named[0]
    return [p for p in platforms if p.startswith(mission) and len(p) == len(mission) + 1]


def generation_time(item: pystac.Item) -> datetime:
    """``processing:datetime``, else ``published``, else ``created``, else ``datetime.min`` UTC."""
    for name in ("processing:datetime", "published", "created"):
        value = item.properties.get(name)
        if value is not None:
            return _parse(value, item, name)
    return _MIN


def _latest_key(item: pystac.Item) -> _Key:
    published = item.properties.get("published")
    return (
        generation_time(item),
        _MIN if published is None else _parse(published, item, "published"),
        item.id,
        item.collection_id or "",
    )


def _fingerprint(item: pystac.Item) -> str:
    """Canonical JSON, the last resort to order items that are otherwise equal."""
    return json.dumps(
        item.to_dict(include_self_link=False, transform_hrefs=False), sort_keys=True, default=str
    )


def _latest(recs: Sequence[_Rec]) -> _Rec:
    """The latest of non-empty ``recs``."""
    keys = [_latest_key(rec[_ITEM]) for rec in recs]
    top = max(keys)
    tied = [rec for rec, key in zip(recs, keys, strict=True) if key == top]
    return tied[0] if len(tied) == 1 else min(tied, key=lambda rec: _fingerprint(rec[_ITEM]))


def _best(recs: Iterable[_Rec], primary: Callable[[_Rec], _Key] | None = None) -> _Rec | None:
    """The record maximising ``primary``, ties broken by :func:`_latest`; None if no record.

    Streams: only the records tied on ``primary`` are kept.
    """
    top: _Key | None = None
    tied: list[_Rec] = []
    for rec in recs:
        key = () if primary is None else primary(rec)
        if top is None or key > top:
            top, tied = key, [rec]
        elif key == top:
            tied.append(rec)
    return _latest(tied) if tied else None


def _one(rec: _Rec | None) -> list[pystac.Item]:
    return [] if rec is None else [rec[_ITEM]]


def _ordered(recs: Iterable[_Rec]) -> list[pystac.Item]:
    """Items sorted by (vs, ve, latest key), fully equal ones by canonical JSON."""
    keyed = sorted(
        (((rec[_VS], rec[_VE], *_latest_key(rec[_ITEM])), rec[_ITEM]) for rec in recs),
        key=itemgetter(0),
    )
    out: list[pystac.Item] = []
    for _, group in groupby(keyed, key=itemgetter(0)):
        items = [item for _, item in group]
        out.extend(items if len(items) == 1 else sorted(items, key=_fingerprint))
    return out


def _covering(recs: Iterable[_Rec], w: Validity) -> Iterator[_Rec]:
    return (rec for rec in recs if rec[_VS] <= w.start and rec[_VE] >= w.end)


def _intersecting(recs: Iterable[_Rec], w: Validity) -> Iterator[_Rec]:
    instant_window = w.start == w.end
    return (
        rec
        for rec in recs
        if (rec[_VS] < w.end and rec[_VE] > w.start)
        or ((instant_window or rec[_VS] == rec[_VE]) and rec[_VS] <= w.end and rec[_VE] >= w.start)
    )


def _centre(w: Validity) -> datetime:
    return w.start + (w.end - w.start) / 2


def _val_cover(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    return _ordered(_covering(recs, w))


def _latest_val_cover(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    return _one(_best(_covering(recs, w)))


def _val_intersect(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    return _ordered(_intersecting(recs, w))


def _latest_val_intersect(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    return _one(_best(_intersecting(recs, w)))


def _val_intersect_without_duplicate(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    groups: dict[tuple[datetime, datetime], list[_Rec]] = {}
    for rec in _intersecting(recs, w):
        groups.setdefault((rec[_VS], rec[_VE]), []).append(rec)
    return _ordered(_latest(group) for group in groups.values())


def _latest_validity(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    return _one(_best(recs, lambda rec: (rec[_VS],)))


def _latest_stop_validity(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    return _one(_best(recs, lambda rec: (rec[_VE],)))


def _latest_validity_closest(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    c = _centre(w)
    return _one(_best(recs, lambda rec: (-abs(rec[_VS] - c),)))


def _closest_start_validity(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    c = _centre(w)
    return _one(_best(recs, lambda rec: (-abs(rec[_VS] - c), rec[_VS] < c)))


def _closest_stop_validity(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    c = _centre(w)
    return _one(_best(recs, lambda rec: (-abs(rec[_VE] - c), rec[_VE] < c)))


def _best_centred_cover(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    return _one(_best(_covering(recs, w), lambda rec: (min(w.start - rec[_VS], rec[_VE] - w.end),)))


def _latest_val_cover_closest(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    return _one(_best(_covering(recs, w), lambda rec: (rec[_VS],)))


def _overlap(rec: _Rec, w: Validity) -> timedelta:
    return min(rec[_VE], w.end) - max(rec[_VS], w.start)


def _largest_overlap_rec(recs: Iterator[_Rec], w: Validity) -> _Rec | None:
    return _best(_intersecting(recs, w), lambda rec: (_overlap(rec, w), -abs(rec[_VS] - w.start)))


def _largest_overlap(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    return _one(_largest_overlap_rec(recs, w))


def _largest_overlap_85(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    rec = _largest_overlap_rec(recs, w)
    if rec is None or _overlap(rec, w) * 100 < (w.end - w.start) * 85:
        return []
    return [rec[_ITEM]]


def _latest_generation(recs: Iterator[_Rec], w: Validity) -> list[pystac.Item]:
    return _one(_best(recs, lambda rec: (generation_time(rec[_ITEM]),)))


_SELECTORS: dict[str, Callable[[Iterator[_Rec], Validity], list[pystac.Item]]] = {
    "ValCover": _val_cover,
    "LatestValCover": _latest_val_cover,
    "ValIntersect": _val_intersect,
    "LatestValIntersect": _latest_val_intersect,
    "ValIntersectWithoutDuplicate": _val_intersect_without_duplicate,
    "LatestValidity": _latest_validity,
    "LatestStopValidity": _latest_stop_validity,
    "LatestValidityClosest": _latest_validity_closest,
    "ClosestStartValidity": _closest_start_validity,
    "ClosestStopValidity": _closest_stop_validity,
    "BestCentredCover": _best_centred_cover,
    "LatestValCoverClosest": _latest_val_cover_closest,
    "LargestOverlap": _largest_overlap,
    "LargestOverlap85": _largest_overlap_85,
    "LatestGeneration": _latest_generation,
}


def select(
    items: Iterable[pystac.Item],
    policy: str,
    start: datetime,
    end: datetime,
    margin_before_s: float = 0,
    margin_after_s: float = 0,
) -> list[pystac.Item]:
    """Apply ESA selection ``policy`` to ``items`` for the window [start, end] plus margins.

    Returns [] or [item] for single-result policies, all matches in (vs, ve, generation,
    publication, id) order for ValCover, ValIntersect and ValIntersectWithoutDuplicate. Raises
    :class:`UnknownPolicyError`, or ValueError for an invalid window or an item without usable
    dates. The result never depends on the order of ``items``.
    """
    return selection_of(items, policy, margin_before_s, margin_after_s)(start, end)


def selection_of(
    items: Iterable[pystac.Item],
    policy: str,
    margin_before_s: float = 0,
    margin_after_s: float = 0,
    known: Mapping[int, Validity] | None = None,
) -> Callable[[datetime, datetime], list[pystac.Item]]:
    """:func:`select` of ``items`` for any window ``(start, end)``, their validities read once
    (for many windows over the same items); ``known``: validities the caller already read
    with :func:`validity`, by ``id()`` of the item."""
    selector = _SELECTORS[check_policy(policy)]
    known = known or {}
    recs = [
        (v.start, v.end, item) if (v := known.get(id(item))) else _record(item) for item in items
    ]

    def pick(start: datetime, end: datetime) -> list[pystac.Item]:
        return selector(iter(recs), processing_window(start, end, margin_before_s, margin_after_s))

    return pick
