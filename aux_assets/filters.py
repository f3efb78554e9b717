"""CQL2-JSON filters: the seed's ValCover, the inclusive windows we send, ids, validation.

Filters are built as JSON structures, never by pasting strings, so an id or product type with a
quote in it cannot change the meaning of a filter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import cql2

from aux_assets.utils.times import utc_text

JsonDict = dict[str, Any]
WindowKind = Literal["cover", "intersect", "any"]
# How a STAC API takes a window: "stac", any CQL2 comparison; "rs-server", the Reference
# System's AUXIP and PRIP, which answer 422 to anything but '=', 'and' and temporal operators;
# "rs-catalog", the Reference System's catalog (owner-scoped collections), which answers 500 to
# any comparison on start_datetime: only the end of a validity is compared there (a superset:
# the client decides the start; `datetime` is not the start in every item).
Dialect = Literal["stac", "rs-server", "rs-catalog"]
SOURCE_DIALECTS: tuple[Dialect, ...] = ("stac", "rs-server")
CATALOG_DIALECTS: tuple[Dialect, ...] = ("stac", "rs-catalog")

# rs-server PRIP (1.0a4) answers a station's legacy product type (IW_RAW__0N) as its EOPF type
# (S01SIWRAW) in ``product:type``, but forwards a ``product:type`` filter to the station as
# given, where only the legacy types are known: asked for S01SIWRAW it finds nothing. The
# rs-server dialect therefore asks for an EOPF type of this table by its legacy types (one
# comma-separated '=', which rs-server sends as one OData 'in'). The table inverts
# rs-server-common 1.0a4's config/product_type_mapping.yaml (the EOPF types without a legacy
# type are left out); any other type (every AUXIP type) is sent as it is.
RS_LEGACY_TYPES: dict[str, tuple[str, ...]] = {
    "S01SSMGRD": tuple(f"S{n}_GRD{r}_1{c}" for n in "123456" for r in "FHM" for c in "AS"),
    "S01SIWRAWS": ("IW_RAW__0S",),
    "S01SIWRAW": ("IW_RAW__0N",),
    "S01SEWRAW": ("EW_RAW__0S",),
    "S01SSMRAW": ("SM_RAW__0S",),
    "S01SWVRAW": ("WV_RAW__0S",),
    "S01SIWANC": ("IW_RAW__0A",),
    "S01SEWANC": ("EW_RAW__0C",),
    "S01SWVANC": ("WV_RAW__0N",),
    "S01SEWGRD": ("EW_GRDH_1S",),
    "S01SIWGRD": ("IW_GRDH_1S",),
    "S01SIWOCN": ("IW_OCN__2S",),
    "S01SSMOCN": ("SM_OCN__2S",),
    "S01SEWSLC": ("EW_SLC__1S",),
    "S01SIWSLC": ("IW_SLC__1S",),
    "S01SWVOCN": ("WV_OCN__2S",),
    "S01GPSRAW": ("GP_RAW__0_",),
    "S01HKMRAW": ("HK_RAW__0_",),
    "S01AISRAW": ("RAW",),
    "S02MSIL0_": ("MSI_L0__DS",),
    "S02MSIL1A": ("MSI_L1A_DS",),
    "S02MSIL1B": ("MSI_L1B_DS",),
    "S02MSIL1C": ("MSI_L1C_DS",),
    "S02MSIL2A": ("MSI_L2A_DS",),
    "S03SRAL0_": ("SR_0_SRA___",),
    "S03SRAL0C": ("SR_0_CAL___",),
    "S03ALT1A": ("SR_1_SRA_A_",),
    "S03ALT1B": ("SR_1_SRA_BS",),
    "S03ALT2H": ("SR_2_LAN_HY",),
    "S03ALTCAL": ("SR_1_CAL",),
    "S03MWRL0_": ("MW_0_MWR",),
    "S03MWRL1_": ("MW_1_MWR",),
    "S03MWRCAL": ("MW_1_CAL",),
    "S03OLCL0_": ("OL_0_EFR",),
    "S03OLCEFR": ("OL_1_EFR",),
    "S03OLCERR": ("OL_1_ERR",),
    "S03OLCRAC": ("OL_1_RAC",),
    "S03OLCSPC": ("OL_1_SPC",),
    "S03OLCLFR": ("OL_2_LFR",),
    "S03OLCLRR": ("OL_2_LRR",),
    "S03SLSL0_": ("SL_0_SLT",),
    "S03SLSRBT": ("SL_1_RBT",),
    "S03SLSLST": ("SL_2_LST",),
    "S03SLSFRP": ("SL_2_FRP",),
    "S03SYNSDR": ("SY_2_SYN",),
    "S03SYNAOD": ("SY_2_AOD",),
    "S03SYNVGT": ("SY_2_VGT",),
    "S03SYNVGK": ("SY_2_VGK",),
    "S03SYNV01": ("SY_2_VG1",),
    "S03SYNV10": ("SY_2_V10",),
    "SXXACQREP": ("REP_PASS",),
    "OPER_MSI": ("OPER_MSI", "OPER_MSI_L0", "OPER_MSI_L2A"),
}


def product_type_value(product_types: Sequence[str], dialect: Dialect) -> str | list[str]:
    """What a filter on ``product:type`` compares with: in the rs-server dialect one
    comma-separated text of the types, each EOPF type of :data:`RS_LEGACY_TYPES` replaced by
    its legacy types (the only ones the station knows); else the single type, or the list."""
    if dialect == "rs-server":
        sent = (legacy for t in product_types for legacy in RS_LEGACY_TYPES.get(t, (t,)))
        return ",".join(dict.fromkeys(sent))
    return product_types[0] if len(product_types) == 1 else list(product_types)


# Every operator of CQL2 (OGC 21-065): basic, advanced comparison, spatial, temporal, array,
# arithmetic and functions. `cql2.Expr.validate()` accepts unknown operators; we do not.
KNOWN_OPS = frozenset(
    {"and", "or", "not", "=", "<>", "<", "<=", ">", ">=", "like", "between", "in", "isNull"}
    | {"casei", "accenti", "+", "-", "*", "/", "%", "^", "div"}
    | {"s_intersects", "s_equals", "s_disjoint", "s_touches", "s_within", "s_overlaps"}
    | {"s_crosses", "s_contains", "a_equals", "a_contains", "a_containedBy", "a_overlaps"}
    | {"t_after", "t_before", "t_contains", "t_disjoint", "t_during", "t_equals"}
    | {"t_finishedBy", "t_finishes", "t_intersects", "t_meets", "t_metBy"}
    | {"t_overlappedBy", "t_overlaps", "t_startedBy", "t_starts", "anyinteracts"}
)


class FilterError(ValueError):
    """A CQL2 filter that is malformed or uses something we cannot send."""


def strftime_millis(value: datetime) -> str:
    """Format as ``%Y-%m-%dT%H:%M:%S.mmmZ``, as the seed does (no timezone conversion)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def create_valcover_filter(
    start_datetime: datetime | str, end_datetime: datetime | str, product_type: str
) -> JsonDict:
    """The seed's ValCover filter, exactly: ``product:type = T and t_contains(validity, [S, E])``.

    Datetimes are formatted with :func:`strftime_millis`; strings pass through unchanged. Note
    that ``t_contains`` is strict: a file whose validity starts or ends exactly on the window
    edge is not matched. :func:`window_filter` is what aux_assets itself sends.
    """
    start = (
        strftime_millis(start_datetime) if isinstance(start_datetime, datetime) else start_datetime
    )
    end = strftime_millis(end_datetime) if isinstance(end_datetime, datetime) else end_datetime
    return {
        "op": "and",
        "args": [
            {"op": "=", "args": [{"property": "product:type"}, product_type]},
            {
                "op": "t_contains",
                "args": [
                    {"interval": [{"property": "start_datetime"}, {"property": "end_datetime"}]},
                    {"interval": [start, end]},
                ],
            },
        ],
    }


def _instant(value: datetime) -> str:
    try:
        return utc_text(value)
    except ValueError as exc:
        raise FilterError(str(exc)) from None


def timestamp(value: datetime) -> JsonDict:
    """A CQL2 timestamp literal of an aware datetime, in UTC (:class:`FilterError` if naive)."""
    return {"timestamp": _instant(value)}


def window_filter(
    product_type: str,
    start: datetime,
    end: datetime,
    kind: WindowKind,
    platforms: Sequence[str] | None = None,
    dialect: Dialect = "stac",
) -> JsonDict:
    """The inclusive window filter we send for one product type and window ``[start, end]``.

    ``cover``: ``start_datetime <= start and end_datetime >= end`` (ValCover candidates,
    inclusive on both edges); ``intersect``: ``start_datetime <= end and end_datetime >= start``;
    ``any``: the product type alone. ``platforms`` adds ``platform in (...)``. The
    ``rs-catalog`` dialect leaves the ``start_datetime`` comparison out (the caller decides it).

    The ``rs-server`` dialect sends only the product type with ``=`` (an EOPF type by its
    station's legacy types, :func:`product_type_value`) and, unless ``any``, ``t_intersects`` of
    ``[start_datetime, end_datetime]`` and the window (a superset of both kinds); the platforms
    and the exact cover are then the caller's to decide.
    """
    if end < start:
        raise FilterError(f"window end {end.isoformat()} is before start {start.isoformat()}")
    sent = product_type_value([product_type], dialect)
    args: list[JsonDict] = [{"op": "=", "args": [{"property": "product:type"}, sent]}]
    if dialect == "rs-server":
        if kind != "any":
            validity = {"interval": [{"property": "start_datetime"}, {"property": "end_datetime"}]}
            window = {"interval": [_instant(start), _instant(end)]}
            args.append({"op": "t_intersects", "args": [validity, window]})
        return args[0] if len(args) == 1 else {"op": "and", "args": args}
    if platforms:
        args.append({"op": "in", "args": [{"property": "platform"}, list(platforms)]})
    if kind != "any":  # cover: vs <= start and ve >= end; intersect: vs <= end and ve >= start
        if dialect != "rs-catalog":
            vs_bound = start if kind == "cover" else end
            args.append({"op": "<=", "args": [{"property": "start_datetime"}, timestamp(vs_bound)]})
        ve_bound = end if kind == "cover" else start
        args.append({"op": ">=", "args": [{"property": "end_datetime"}, timestamp(ve_bound)]})
    return args[0] if len(args) == 1 else {"op": "and", "args": args}


def operators(cql: Any) -> list[str]:
    """The CQL2 operators a CQL2-JSON filter uses, sorted."""
    if isinstance(cql, dict):
        found = {cql["op"]} if isinstance(cql.get("op"), str) else set()
        return sorted(found.union(*(operators(value) for value in cql.values())))
    if isinstance(cql, list):
        return sorted(set().union(*(operators(value) for value in cql)))
    return []


def ids_filter(ids: Sequence[str]) -> JsonDict:
    """``id in (...)`` as CQL2-JSON; ids are values, never pasted into text."""
    return {"op": "in", "args": [{"property": "id"}, list(ids)]}


def _check_ops(node: Any, path: str) -> None:
    if isinstance(node, dict):
        op = node.get("op")
        if op is not None and op not in KNOWN_OPS:
            raise FilterError(
                f"unknown CQL2 operator {op!r} at {path}; see OGC CQL2 for valid ones"
            )
        for key, value in node.items():
            _check_ops(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_ops(value, f"{path}[{i}]")


def parse_filter(value: JsonDict | str, field: str = "filter") -> JsonDict:
    """Validate a user-given CQL2 filter (JSON dict, JSON text or CQL2 text) and return CQL2-JSON.

    Raises :class:`FilterError` naming ``field`` and the parser's reason; nothing is sent.
    """
    try:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                raise FilterError(f"{field} is empty; give a CQL2-JSON object or CQL2 text")
            expr = cql2.Expr(json.loads(text)) if text.startswith("{") else cql2.parse_text(text)
        elif isinstance(value, dict):
            expr = cql2.Expr(value)
        else:
            raise FilterError(f"{field} must be a CQL2-JSON object or CQL2 text, got {value!r}")
        expr.validate()
        result: JsonDict = expr.to_json()
    except FilterError:
        raise
    except Exception as exc:  # cql2 raises plain Exception for parse errors
        reason = " ".join(str(exc).split())
        raise FilterError(f"{field} is not valid CQL2: {reason}") from None
    _check_ops(result, field)
    return result
