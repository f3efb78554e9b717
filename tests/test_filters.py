import json
from datetime import UTC, datetime

import cql2
import pytest

from aux_assets.filters import (
    RS_LEGACY_TYPES,
    FilterError,
    create_valcover_filter,
    ids_filter,
    operators,
    parse_filter,
    product_type_value,
    strftime_millis,
    window_filter,
)


def test_valcover_filter_is_exactly_the_seeds():
    got = create_valcover_filter(
        datetime(2024, 1, 2, 3, 4, 5, 123000), datetime(2024, 1, 2, 4, 0, 0), "AUX_POEORB"
    )
    assert got == {
        "op": "and",
        "args": [
            {"op": "=", "args": [{"property": "product:type"}, "AUX_POEORB"]},
            {
                "op": "t_contains",
                "args": [
                    {"interval": [{"property": "start_datetime"}, {"property": "end_datetime"}]},
                    {"interval": ["2024-01-02T03:04:05.123Z", "2024-01-02T04:00:00.000Z"]},
                ],
            },
        ],
    }


def test_valcover_filter_passes_strings_through_unchanged():
    got = create_valcover_filter("2025-08-07T11:51:12.509000Z", "x", "AUX_WND")
    assert got["args"][1]["args"][1] == {"interval": ["2025-08-07T11:51:12.509000Z", "x"]}


def test_strftime_millis_does_not_convert_timezones():
    assert strftime_millis(datetime(2024, 1, 2, 3, 4, 5, 999999)) == "2024-01-02T03:04:05.999Z"


def _item(start: str, end: str, ptype: str = "AUX_POEORB", platform: str = "sentinel-1a"):
    return {
        "type": "Feature",
        "id": "x",
        "geometry": None,
        "properties": {
            "datetime": None,
            "start_datetime": start,
            "end_datetime": end,
            "product:type": ptype,
            "platform": platform,
        },
    }


W0 = datetime(2026, 1, 5, tzinfo=UTC)
W1 = datetime(2026, 1, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "cover", "intersect"),
    [
        ("2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", True, True),  # exactly on both edges
        ("2026-01-04T22:59:42Z", "2026-01-06T00:59:42Z", True, True),
        ("2026-01-05T00:00:01Z", "2026-01-07T00:00:00Z", False, True),
        ("2026-01-03T00:00:00Z", "2026-01-05T00:00:00Z", False, True),  # touches W0
        ("2026-01-06T00:00:01Z", "2026-01-07T00:00:00Z", False, False),
    ],
)
def test_window_filter_is_inclusive_on_edges(start, end, cover, intersect):
    item = _item(start, end)
    assert cql2.Expr(window_filter("AUX_POEORB", W0, W1, "cover")).matches(item) is cover
    assert cql2.Expr(window_filter("AUX_POEORB", W0, W1, "intersect")).matches(item) is intersect


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z"),
        ("2026-01-04T22:59:42Z", "2026-01-06T00:59:42Z"),
        ("2026-01-05T00:00:01Z", "2026-01-07T00:00:00Z"),
        ("2026-01-03T00:00:00Z", "2026-01-05T00:00:00Z"),
        ("2026-01-06T00:00:01Z", "2026-01-07T00:00:00Z"),
        ("2025-12-01T00:00:00Z", "2026-01-04T00:00:00Z"),
    ],
)
def test_the_rs_catalog_dialect_compares_only_the_end(start, end):
    """rs-server-catalog answers 500 to start_datetime: only the end is compared there, a
    superset of the generic filter's matches that still leaves out what ended before."""
    item = _item(start, end)
    for kind in ("cover", "intersect"):
        cql = window_filter("AUX_POEORB", W0, W1, kind, ["sentinel-1a"], "rs-catalog")
        assert "start_datetime" not in json.dumps(cql) and '"datetime"' not in json.dumps(cql)
        generic = window_filter("AUX_POEORB", W0, W1, kind, ["sentinel-1a"])
        ours, theirs = cql2.Expr(cql).matches(item), cql2.Expr(generic).matches(item)
        assert ours >= theirs  # never fewer
        assert ours is (end >= ("2026-01-06T00:00:00Z" if kind == "cover" else "2026-01-05"))


def test_seed_t_contains_is_strict_where_ours_is_not():
    edge = _item("2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z")
    seed = create_valcover_filter(W0, W1, "AUX_POEORB")
    assert cql2.Expr(seed).matches(edge) is False
    assert cql2.Expr(window_filter("AUX_POEORB", W0, W1, "cover")).matches(edge) is True


def test_window_filter_product_type_and_platforms():
    f = window_filter("AUX_POEORB", W0, W1, "any", ["sentinel-1c"])
    assert cql2.Expr(f).matches(_item("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z")) is False
    ok = _item("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z", platform="sentinel-1c")
    assert cql2.Expr(f).matches(ok) is True
    assert window_filter("AUX_WND", W0, W1, "any") == {
        "op": "=",
        "args": [{"property": "product:type"}, "AUX_WND"],
    }


def test_window_filter_rejects_reversed_and_naive_windows():
    with pytest.raises(FilterError, match="before start"):
        window_filter("AUX_POEORB", W1, W0, "cover")
    with pytest.raises(FilterError, match="no timezone"):
        window_filter("AUX_POEORB", datetime(2026, 1, 5), datetime(2026, 1, 6), "cover")


def test_ids_filter_is_json_so_quotes_cannot_inject():
    evil = "a') OR (1=1"
    f = ids_filter(["ok", evil])
    assert f == {"op": "in", "args": [{"property": "id"}, ["ok", evil]]}
    assert cql2.Expr(f).matches({"id": evil, "properties": {}}) is True
    assert cql2.Expr(f).matches({"id": "other", "properties": {}}) is False


@pytest.mark.parametrize(
    "value",
    [
        "product:type = 'AUX_WND'",
        '{"op": "=", "args": [{"property": "product:type"}, "AUX_WND"]}',
        {"op": "=", "args": [{"property": "product:type"}, "AUX_WND"]},
    ],
)
def test_parse_filter_accepts_text_json_and_dicts(value):
    assert parse_filter(value) == {"op": "=", "args": [{"property": "product:type"}, "AUX_WND"]}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("product:type = ", "not valid CQL2"),
        ("", "is empty"),
        ('{"op": "=", "args": [1]}', "not valid CQL2"),
        ({"op": "bogus", "args": [1, 2]}, "unknown CQL2 operator 'bogus'"),
        ("{not json", "not valid CQL2"),
        (42, "must be a CQL2-JSON object"),
    ],
)
def test_parse_filter_rejects_malformed_filters_with_the_reason(value, reason):
    with pytest.raises(FilterError, match="my_field") as err:
        parse_filter(value, "my_field")
    assert reason in str(err.value)


@pytest.mark.parametrize("kind", ["cover", "intersect"])
def test_the_rs_server_dialect_sends_only_equality_and_t_intersects(kind):
    start, end = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)
    cql = window_filter("AUX_POEORB", start, end, kind, ["sentinel-1a"], "rs-server")
    assert cql == {
        "op": "and",
        "args": [
            {"op": "=", "args": [{"property": "product:type"}, "AUX_POEORB"]},
            {
                "op": "t_intersects",
                "args": [
                    {"interval": [{"property": "start_datetime"}, {"property": "end_datetime"}]},
                    {"interval": ["2026-01-05T00:00:00.000000Z", "2026-01-06T00:00:00.000000Z"]},
                ],
            },
        ],
    }
    assert operators(cql) == ["=", "and", "t_intersects"]
    assert operators(parse_filter(cql)) == operators(cql)  # valid CQL2
    alone = window_filter("AUX_POEORB", start, end, "any", ["sentinel-1a"], "rs-server")
    assert alone == {"op": "=", "args": [{"property": "product:type"}, "AUX_POEORB"]}
    with pytest.raises(FilterError, match="naive"):
        naive = start.replace(tzinfo=None), end.replace(tzinfo=None)
        window_filter("AUX_POEORB", *naive, kind, None, "rs-server")


def test_rs_server_asks_an_eopf_type_by_the_legacy_types_its_station_knows():
    """rs-server PRIP returns S01SIWRAW for the station's IW_RAW__0N but forwards a filter on
    S01SIWRAW as it is (tests/test_rs_prip.py): the dialect sends the legacy type."""
    start, end = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)
    cql = window_filter("S01SIWRAW", start, end, "intersect", None, "rs-server")
    assert cql["args"][0] == {"op": "=", "args": [{"property": "product:type"}, "IW_RAW__0N"]}
    # the generic dialect and the types rs-server does not rename go as they are
    assert window_filter("S01SIWRAW", start, end, "any")["args"][1] == "S01SIWRAW"
    assert product_type_value(["AUX_POEORB"], "rs-server") == "AUX_POEORB"
    assert product_type_value(["AUX_POEORB", "AUX_RESORB"], "stac") == ["AUX_POEORB", "AUX_RESORB"]
    # several types, and a type of several legacy ones: one comma-separated text, no repeats
    sent = product_type_value(["S01SIWRAW", "OPER_MSI", "IW_RAW__0N"], "rs-server")
    assert sent == "IW_RAW__0N,OPER_MSI,OPER_MSI_L0,OPER_MSI_L2A"
    grd = RS_LEGACY_TYPES["S01SSMGRD"]  # rs-server's pattern S[1-6]_GRD[FHM]_1[AS], spelled out
    assert len(grd) == 36 and {"S1_GRDH_1S", "S6_GRDM_1A"} <= set(grd)
