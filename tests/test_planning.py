from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pystac
import pytest

from aux_assets.documents import feature
from aux_assets.planning import Window, plan_windows, select_covering
from aux_assets.products import ProductSpec
from aux_assets.sources.base import SearchError, SearchRequest

D = datetime(2026, 1, 5, tzinfo=UTC)


def _item(item_id, start, end, ptype="AUX_ECMWFD", gen=None, platform=None):
    props = {
        "datetime": None,
        "start_datetime": start.isoformat(),
        "end_datetime": end.isoformat(),
        "product:type": ptype,
        "processing:datetime": (gen or start).isoformat(),
    }
    if platform:
        props["platform"] = platform
    return pystac.Item(item_id, None, None, None, props)


def _ecmwfd(run_hours, shift=0):
    """12 h files every 3 h, as two ECMWF runs publish them."""
    items = []
    for run in run_hours:
        for i in range(14):
            vs = D + timedelta(hours=run + 9 + 3 * i - 24 + shift)
            items.append(
                _item(
                    f"E{run}_{i}", vs, vs + timedelta(hours=12), gen=D + timedelta(hours=run - 24)
                )
            )
    return items


def test_single_cover_is_used_when_one_file_covers_the_window():
    poe = _item("POE", D - timedelta(hours=1), D + timedelta(hours=25), "AUX_POEORB")
    chosen, gaps = select_covering([poe], "LatestValCover", D, D + timedelta(days=1))
    assert [i.id for i in chosen] == ["POE"] and gaps == []


def test_twelve_hour_files_cover_a_day_by_sub_windows():
    items = _ecmwfd([0, 12])
    chosen, gaps = select_covering(items, "LatestValCover", D, D + timedelta(days=1))
    assert gaps == []
    covered = sorted(
        (
            datetime.fromisoformat(i.properties["start_datetime"]),
            datetime.fromisoformat(i.properties["end_datetime"]),
        )
        for i in chosen
    )
    assert covered[0][0] <= D and covered[-1][1] >= D + timedelta(days=1)
    for (_, end), (start, _) in pairwise(covered):
        assert start <= end  # no hole between consecutive files
    # for every instant, the newest run's file covering it was chosen
    assert all(
        i.id.startswith("E12") for i in chosen if i.properties["start_datetime"] >= "2026-01-04T21"
    )


def test_gaps_are_reported_and_merged():
    a = _item("A", D - timedelta(hours=1), D + timedelta(hours=6))
    b = _item("B", D + timedelta(hours=12), D + timedelta(hours=30))
    chosen, gaps = select_covering([a, b], "LatestValCover", D, D + timedelta(days=1))
    assert [i.id for i in chosen] == ["A", "B"]
    assert gaps == [(D + timedelta(hours=6), D + timedelta(hours=12))]
    none, all_gap = select_covering([], "ClosestStartValidity", D, D + timedelta(days=1))
    assert none == [] and all_gap == [(D, D + timedelta(days=1))]


class CountingSource:
    """A real in-memory source that counts searches (filters evaluated with cql2)."""

    name = "auxip"
    local = True
    dialect = "stac"

    def __init__(self, items):
        import cql2

        self.items = items
        self.requests: list[SearchRequest] = []
        self._cql2 = cql2

    def search(self, request):
        self.requests.append(request)
        expr = self._cql2.Expr(request.filter)
        return [i for i in self.items if expr.matches(i.to_dict())]

    def describe(self):
        return "counting"


def _spec(**kw):
    base = {"product_type": "AUX_POEORB", "collection": "s1-aux", "policy": "LatestValCover"}
    return ProductSpec(**{**base, **kw})


def test_alternatives_fill_a_missing_unit_and_units_are_selected_apart():
    poe_a = _item(
        "POE_A",
        D - timedelta(hours=1),
        D + timedelta(hours=25),
        "AUX_POEORB",
        platform="sentinel-1a",
    )
    res_c = [
        _item(
            f"RES_C{k}",
            D + timedelta(hours=3 * k - 1),
            D + timedelta(hours=3 * k + 2.3),
            "AUX_RESORB",
            platform="sentinel-1c",
        )
        for k in range(9)
    ]
    res_a = _item("RES_A", D, D + timedelta(hours=3), "AUX_RESORB", platform="sentinel-1a")
    source = CountingSource([poe_a, *res_c, res_a])
    spec = _spec(platforms=("sentinel-1a", "sentinel-1c"), alternatives=("AUX_RESORB",))
    window = Window("2026-01-05", D, D + timedelta(days=1))
    (doc,) = plan_windows([spec], [window], {"auxip": source}).values()
    (product,) = doc["products"]
    ids = [f["id"] for f in product["selected"]["features"]]
    assert "POE_A" in ids and "RES_A" not in ids
    assert {i for i in ids if i.startswith("RES_C")} == {f"RES_C{k}" for k in range(9)}
    assert product["used_types"] == {"sentinel-1a": ["AUX_POEORB"], "sentinel-1c": ["AUX_RESORB"]}
    assert product["missing_units"] == []


def test_missing_unit_is_reported_with_its_gap():
    poe_a = _item(
        "POE_A",
        D - timedelta(hours=1),
        D + timedelta(hours=25),
        "AUX_POEORB",
        platform="sentinel-1a",
    )
    spec = _spec(platforms=("sentinel-1a", "sentinel-1c"))
    window = Window("2026-01-05", D, D + timedelta(days=1))
    (doc,) = plan_windows([spec], [window], {"auxip": CountingSource([poe_a])}).values()
    (product,) = doc["products"]
    assert product["missing_units"] == ["sentinel-1c"]
    assert product["gaps"]["sentinel-1c"] == [[D.isoformat(), (D + timedelta(days=1)).isoformat()]]


def test_a_missing_unit_gets_when_its_files_are_expected_from_its_types_and_alternatives():
    spec = _spec(platforms=("sentinel-1c",), alternatives=("AUX_RESORB",))
    window = Window("2026-01-05", D, D + timedelta(days=1))
    now = D + timedelta(days=1, minutes=30)
    (doc,) = plan_windows([spec], [window], {"auxip": CountingSource([])}, now=now).values()
    (product,) = doc["products"]
    # a restituted orbit (5 h after the gap's end) comes before the precise one (20 days)
    end = D + timedelta(days=1)
    assert product["expected"] == {
        "sentinel-1c": [
            {"product_type": "AUX_RESORB", "at": (end + timedelta(hours=5)).isoformat()}
        ]
    }
    assert product["searched_at"] == now.isoformat() and product["error"] is None
    unknown = _spec(product_type="XX_UNKNOWN")
    (doc,) = plan_windows([unknown], [window], {"auxip": CountingSource([])}, now=now).values()
    assert doc["products"][0]["expected"] == {}  # no delay known: no expectation


class FailingSource(CountingSource):
    def search(self, request):
        raise SearchError("search in auxip at http://127.0.0.1:9/stac failed: refused")


def test_a_failing_source_is_recorded_for_its_types_and_the_others_go_on():
    poe = _item("POE", D - timedelta(hours=1), D + timedelta(hours=25), "AUX_POEORB")
    specs = [_spec(), _spec(product_type="AUX_CAL", source="prip")]
    window = Window("2026-01-05", D, D + timedelta(days=1))
    sources = {"auxip": CountingSource([poe]), "prip": FailingSource([])}
    lines: list[str] = []
    (doc,) = plan_windows(specs, [window], sources, log=lines.append).values()
    found, failed = doc["products"]
    assert [f["id"] for f in found["selected"]["features"]] == ["POE"]
    assert failed["error"] == "search in auxip at http://127.0.0.1:9/stac failed: refused"
    assert failed["missing_units"] == ["*"] and failed["selected"]["features"] == []
    assert "2026-01-05 AUX_CAL: source prip unreachable: search in auxip" in lines[0]


class RsServerLikeSource(CountingSource):
    """Answers as rs-server does: the product type (and nothing else here) decides; platforms
    are the client's, and files that name no unit come with ``platform`` null."""

    dialect = "rs-server"

    def search(self, request):
        self.requests.append(request)
        (equal,) = [a for a in request.filter.get("args", [request.filter]) if a["op"] == "="]
        wanted = set(equal["args"][1].split(","))
        return [i for i in self.items if i.properties["product:type"] in wanted]


def test_a_file_that_names_no_unit_serves_every_listed_unit_of_its_mission():
    noon = D + timedelta(hours=12)
    ecmwfd = [
        _item("S2__OPER_AUX_ECMWFD_PDMC_A", D, noon),
        _item("S2__OPER_AUX_ECMWFD_PDMC_B", noon, D + timedelta(days=1)),
    ]
    # rs-server's platform is null here too: the unit comes from the name (S2A_)
    orbit = _item(
        "S2A_OPER_MPL_ORBPRE_X", D - timedelta(days=1), D + timedelta(days=2), "MPL_ORBPRE"
    )
    source = RsServerLikeSource([*ecmwfd, orbit])
    units = ("sentinel-2a", "sentinel-2b")
    specs = [
        _spec(product_type="AUX_ECMWFD", collection="s2-aux", platforms=units),
        _spec(product_type="MPL_ORBPRE", collection="s2-aux", platforms=units),
    ]
    window = Window("2026-01-05", D, D + timedelta(days=1))
    (doc,) = plan_windows(specs, [window], {"auxip": source}).values()
    meteo, orbits = doc["products"]
    assert meteo["used_types"] == {unit: ["AUX_ECMWFD"] for unit in units}
    assert meteo["missing_units"] == []
    # each file once, though both units selected it
    assert [f["id"] for f in meteo["selected"]["features"]] == [i.id for i in ecmwfd]
    assert orbits["used_types"] == {"sentinel-2a": ["MPL_ORBPRE"], "sentinel-2b": []}
    assert orbits["missing_units"] == ["sentinel-2b"]
    assert [f["id"] for f in orbits["selected"]["features"]] == [orbit.id]


def test_a_range_is_searched_once_per_type_and_selected_per_day():
    poes = [
        _item(
            f"POE_{d}",
            D + timedelta(days=d, hours=-1),
            D + timedelta(days=d, hours=25),
            "AUX_POEORB",
        )
        for d in range(-1, 4)
    ]
    source = CountingSource(poes)
    windows = [
        Window(f"day{d}", D + timedelta(days=d), D + timedelta(days=d + 1)) for d in range(3)
    ]
    docs = plan_windows([_spec()], windows, {"auxip": source})
    assert len(source.requests) == 1
    for d in range(3):
        (product,) = docs[f"day{d}"]["products"]
        # the day's file, and the next day's for the last hour it covers (newer generation)
        assert [f["id"] for f in product["selected"]["features"]] == [f"POE_{d}", f"POE_{d + 1}"]


def test_window_end_before_start_is_refused():
    with pytest.raises(ValueError, match="before start"):
        Window("x", D, D - timedelta(seconds=1))


def test_a_newer_open_ended_file_starting_inside_the_day_is_selected_too():
    far = datetime(2100, 1, 1, tzinfo=UTC)
    g1 = _item(
        "CAL_G1",
        datetime(2020, 1, 1, tzinfo=UTC),
        far,
        "AUX_CAL",
        gen=datetime(2020, 1, 2, tzinfo=UTC),
    )
    g2 = _item("CAL_G2", D + timedelta(hours=12), far, "AUX_CAL", gen=D)
    chosen, gaps = select_covering([g1, g2], "LatestValCover", D, D + timedelta(days=1))
    assert [i.id for i in chosen] == ["CAL_G1", "CAL_G2"] and gaps == []


def test_invalid_candidates_are_set_aside_with_their_reason():
    good = _item("POE", D - timedelta(hours=1), D + timedelta(hours=25), "AUX_POEORB")
    broken = _item("BROKEN", D, D, "AUX_POEORB")
    broken.properties["end_datetime"] = "not a date"
    window = Window("2026-01-05", D, D + timedelta(days=1))
    source = CountingSource([good])
    source.search = lambda request: [good, broken]  # a source returning a broken record
    (doc,) = plan_windows([_spec()], [window], {"auxip": source}).values()
    (product,) = doc["products"]
    assert [f["id"] for f in product["selected"]["features"]] == ["POE"]
    (invalid,) = product["invalid_candidates"]
    assert invalid["id"] == "BROKEN" and "end_datetime" in invalid["reason"]


def _wnd(day_offset: int) -> pystac.Item:
    v = D + timedelta(days=day_offset, hours=12)
    return _item(f"WND_{day_offset}", v, v, "AUX_WND")


def test_closest_policies_search_around_the_window_and_widen_only_when_needed():
    window = Window("2026-01-05", D, D + timedelta(days=1))
    spec = _spec(product_type="AUX_WND", policy="ClosestStartValidity")
    dense = CountingSource([_wnd(d) for d in range(-60, 60)])
    (doc,) = plan_windows([spec], [window], {"auxip": dense}).values()
    (product,) = doc["products"]
    assert [f["id"] for f in product["selected"]["features"]] == ["WND_0"]
    assert len(dense.requests) == 1  # the look-around proved the nearest
    assert product["n_candidates"] < 20  # not the whole history
    sparse = CountingSource([_wnd(-30), _wnd(45)])
    (doc,) = plan_windows([spec], [window], {"auxip": sparse}).values()
    (product,) = doc["products"]
    assert [f["id"] for f in product["selected"]["features"]] == ["WND_-30"]
    assert len(sparse.requests) == 2  # nothing within the look-around: searched without bound


def test_documents_never_show_a_password_written_into_an_href():
    item = pystac.Item("X", None, None, datetime(2026, 1, 5, tzinfo=UTC), {})
    item.add_asset("a", pystac.Asset("https://alice:pa55word@aux.example/x.zip?sig=%2F1"))
    item.add_link(pystac.Link("via", "https://bob:s3cret@aux.example/items/X"))
    doc = feature(item)
    assert doc["assets"]["a"]["href"] == "https://aux.example/x.zip?sig=%2F1"
    assert [link["href"] for link in doc["links"]] == ["https://aux.example/items/X"]
    assert "pa55word" not in str(doc) and "s3cret" not in str(doc)
