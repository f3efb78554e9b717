"""Tests for aux_assets.documents: the builders and readers of the three asset documents."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pystac

from aux_assets.documents import (
    Gap,
    catalog_document,
    catalog_features,
    coverage_gaps,
    empty_selections,
    failed_items,
    feature,
    feature_collection,
    mandatory_gaps,
    replacements,
    search_numbers,
    staged_document,
    staged_numbers,
    unreachable_optional,
    wanted_items,
)

DAY = "2026-01-05"
WINDOW = {"start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z"}


def make_item(item_id: str, collection: str = "aux", href: str | None = None) -> pystac.Item:
    item = pystac.Item(
        item_id,
        None,
        None,
        datetime(2026, 1, 5, tzinfo=UTC),
        {"product:type": "AUX_X"},
        collection=collection,
    )
    item.add_asset(
        "product", pystac.Asset(href or f"https://store.example/{collection}/{item_id}.zip")
    )
    return item


def search_product(
    product_type: str,
    ids: Iterable[str],
    *,
    collection: str = "aux",
    mandatory: bool = True,
    missing: Iterable[str] = (),
    candidates: Iterable[str] | None = None,
) -> dict[str, Any]:
    ids = list(ids)
    return {
        "product_type": product_type,
        "source": "auxip",
        "collection": collection,
        "policy": "LatestValCover",
        "mandatory": mandatory,
        "assets": None,
        "unpack": False,
        "filter": {"op": "=", "args": [{"property": "product:type"}, product_type]},
        "n_candidates": len(ids if candidates is None else list(candidates)),
        "candidates": [{"id": i} for i in (ids if candidates is None else candidates)],
        "used_types": {"None": [product_type]},
        "missing_units": list(missing),
        "selected": feature_collection(make_item(i, collection) for i in ids),
    }


def staged_item(
    item_id: str, collection: str = "aux", status: str = "staged", reason: str | None = None
) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "collection": collection,
        "source": "auxip",
        "status": status,
        "reason": reason,
        "bytes_transferred": 0,
        "assets": [],
    }


def staged_product(
    product_type: str,
    items: Iterable[str | dict[str, Any]],
    *,
    collection: str = "aux",
    mandatory: bool = True,
    missing: Iterable[str] = (),
) -> dict[str, Any]:
    return {
        "product_type": product_type,
        "policy": "LatestValCover",
        "mandatory": mandatory,
        "collection": collection,
        "missing_units": list(missing),
        "items": [
            staged_item(i, collection) if isinstance(i, str) else i  # type: ignore[arg-type]
            for i in items
        ],
    }


def document(products: list[dict[str, Any]], key: str = DAY, **extra: Any) -> Any:
    return {"partition": key, "window": WINDOW, "products": products, **extra}


def item_url(collection: str, item_id: str) -> str:
    return f"https://catalog.example/collections/{collection}/items/{item_id}"


def held(*items: pystac.Item, collections: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {c: {} for c in collections}
    for item in items:
        assert item.collection_id is not None
        out.setdefault(item.collection_id, {})[item.id] = item
    return out


# staged_document


def test_staged_document_asks_for_each_selected_item_in_the_search_order() -> None:
    search = document(
        [
            search_product("AUX_A", ["b", "a", "c"], missing=["sentinel-1b"]),
            search_product("AUX_B", ["z"], collection="other", mandatory=False),
            search_product("AUX_C", []),
        ]
    )
    calls: list[tuple[str, str]] = []

    def outcome(collection: str, item_id: str) -> Any:
        calls.append((collection, item_id))
        return staged_item(item_id, collection, status="present")

    staged = staged_document(search, outcome)
    assert calls == [("aux", "b"), ("aux", "a"), ("aux", "c"), ("other", "z")]
    assert [[i["item_id"] for i in p["items"]] for p in staged["products"]] == [
        ["b", "a", "c"],
        ["z"],
        [],
    ]
    assert all(i["status"] == "present" for p in staged["products"] for i in p["items"])
    first, second, _ = staged["products"]
    assert first["missing_units"] == ["sentinel-1b"] and first["mandatory"] is True
    assert second["collection"] == "other" and second["mandatory"] is False
    assert first["policy"] == "LatestValCover"


def test_staged_document_copies_the_envelope_of_the_search_document() -> None:
    search = document([search_product("AUX_A", ["a"])], key="2026-02-01")
    staged = staged_document(search, lambda c, i: staged_item(i, c))  # type: ignore[arg-type,return-value]
    assert set(staged) == {"partition", "window", "products"}
    assert staged["partition"] == "2026-02-01" and staged["window"] == WINDOW


# catalog_document


def test_a_mandatory_type_is_covered_only_when_all_its_selection_is_held_without_gaps() -> None:
    staged = document(
        [
            staged_product("FULL", ["f1", "f2"]),
            staged_product("PARTIAL", ["p1", "p2"]),
            staged_product("EMPTY", []),
            staged_product("GAP", ["g1"], missing=["sentinel-1b"]),
            staged_product("OPTIONAL", ["o1"], mandatory=False),
            staged_product("OPTIONAL_MISSING", ["x"], mandatory=False),
        ]
    )
    catalog = held(*(make_item(i) for i in ("f1", "f2", "p2", "g1", "o1")))
    doc = catalog_document(staged, catalog, item_url)
    assert doc["coverage"] == {"FULL": True, "PARTIAL": False, "EMPTY": False, "GAP": False}
    by_type = {p["product_type"]: p for p in doc["products"]}
    assert [f["id"] for f in by_type["PARTIAL"]["items"]["features"]] == ["p2"]
    assert by_type["PARTIAL"]["item_urls"] == {"p2": item_url("aux", "p2")}
    assert [f["id"] for f in by_type["OPTIONAL"]["items"]["features"]] == ["o1"]
    assert by_type["OPTIONAL_MISSING"]["items"]["features"] == []


def test_a_type_listed_twice_is_covered_only_when_both_entries_are() -> None:
    entries = [
        staged_product("AUX_T", ["a1"], collection="a"),
        staged_product("AUX_T", ["b1"], collection="b"),
    ]
    only_a = held(make_item("a1", "a"), collections=["b"])
    only_b = held(make_item("b1", "b"), collections=["a"])
    both = held(make_item("a1", "a"), make_item("b1", "b"))
    for order in (entries, entries[::-1]):
        assert catalog_document(document(order), only_a, item_url)["coverage"] == {"AUX_T": False}
        assert catalog_document(document(order), only_b, item_url)["coverage"] == {"AUX_T": False}
        assert catalog_document(document(order), both, item_url)["coverage"] == {"AUX_T": True}


def test_catalog_document_uses_the_url_callback_and_hides_userinfo() -> None:
    secret = "https://user:s3cret@store.example/aux/a.zip"
    staged = document([staged_product("AUX_A", ["a", "b"])], key="2026-03-01")
    calls: list[tuple[str, str]] = []

    def url(collection: str, item_id: str) -> str:
        calls.append((collection, item_id))
        return item_url(collection, item_id)

    doc = catalog_document(staged, held(make_item("a", href=secret), make_item("b")), url)
    assert sorted(calls) == [("aux", "a"), ("aux", "b")]
    [product] = doc["products"]
    assert product["item_urls"] == {"a": item_url("aux", "a"), "b": item_url("aux", "b")}
    hrefs = [f["assets"]["product"]["href"] for f in product["items"]["features"]]
    assert hrefs == ["https://store.example/aux/a.zip", "https://store.example/aux/b.zip"]
    assert "s3cret" not in repr(doc)
    assert doc["partition"] == "2026-03-01" and doc["window"] == WINDOW


# feature


def test_feature_strips_userinfo_from_asset_and_link_hrefs() -> None:
    item = make_item("a", href="https://user:pass@store.example:8443/aux/a.zip?x=1")
    item.add_asset("plain", pystac.Asset("https://store.example/aux/a@1.xml"))
    item.add_link(pystac.Link("via", "https://bob:hunter2@source.example/items/a"))
    doc = feature(item)
    assert doc["assets"]["product"]["href"] == "https://store.example:8443/aux/a.zip?x=1"
    assert doc["assets"]["plain"]["href"] == "https://store.example/aux/a@1.xml"
    assert [link["href"] for link in doc["links"] if link["rel"] == "via"] == [
        "https://source.example/items/a"
    ]
    assert "pass" not in repr(doc) and "hunter2" not in repr(doc)
    # the item itself keeps its hrefs
    assert item.assets["product"].href == "https://user:pass@store.example:8443/aux/a.zip?x=1"


# readers


def test_wanted_items_are_sorted_and_deduplicated_per_collection() -> None:
    docs = [
        document([staged_product("A", ["c", "a"]), staged_product("B", ["z"], collection="b")]),
        document([staged_product("A", ["a", "b"]), staged_product("C", [], collection="c")]),
    ]
    wanted = wanted_items(docs)
    assert wanted == {"aux": ["a", "b", "c"], "b": ["z"], "c": []}
    assert list(wanted) == ["aux", "b", "c"]


def test_empty_selections_name_the_day_and_the_product_type() -> None:
    documents = {
        "2026-01-05": document([search_product("A", []), search_product("B", ["b"])]),
        "2026-01-06": document([search_product("A", ["a"]), search_product("C", [])]),
    }
    assert empty_selections(documents) == ["2026-01-05 A", "2026-01-06 C"]
    assert empty_selections({"2026-01-07": document([search_product("A", ["a"])])}) == []


def test_mandatory_gaps_name_the_type_and_units_of_mandatory_types_only() -> None:
    doc = document(
        [
            search_product("A", ["a"]),
            search_product("B", [], missing=["sentinel-1a", "sentinel-1c"]),
            search_product("B", [], collection="b", missing=["sentinel-1b"]),
            search_product("C", [], missing=["*"]),
            search_product("D", [], missing=["None"]),  # items without a platform
            search_product("OPT", [], mandatory=False, missing=["sentinel-1a"]),
        ]
    )
    assert {t: g.text for t, g in mandatory_gaps(doc).items()} == {
        "B": "not covered for sentinel-1a, sentinel-1c; not covered for sentinel-1b",
        "C": "no candidate at all",  # no delay known for the type: no verdict on publication
        "D": "not covered",
    }
    assert not any(g.awaited for g in mandatory_gaps(doc).values())
    assert mandatory_gaps(document([search_product("A", ["a"])])) == {}


def test_mandatory_gaps_show_the_spans_of_the_day_a_partial_selection_leaves() -> None:
    partial = search_product("E", ["e"], missing=["sentinel-1a"])
    partial["gaps"] = {
        "sentinel-1a": [
            ["2026-01-05T00:00:00+00:00", "2026-01-05T01:00:00+00:00"],
            ["2026-01-05T22:30:00+00:00", "2026-01-06T00:00:00+00:00"],
        ]
    }
    assert mandatory_gaps(document([partial]))["E"].text == (
        "not covered for sentinel-1a (uncovered 00:00:00..01:00:00, 22:30:00..24:00:00)"
    )


def _due(ptype: str, at: str) -> dict[str, str]:
    return {"product_type": ptype, "at": at}


def test_a_gap_says_not_yet_published_and_when_never_published_or_source_unreachable() -> None:
    waiting = search_product("AUX_POEORB", [], missing=["sentinel-1a", "sentinel-1c"])
    waiting["searched_at"] = "2026-01-06T02:30:00+02:00"  # 00:30 UTC
    waiting["expected"] = {
        "sentinel-1a": [_due("AUX_RESORB", "2026-01-06T05:00:00+00:00")],  # ahead: not yet
        "sentinel-1c": [_due("AUX_RESORB", "2026-01-06T00:00:00+00:00")],  # past: never
    }
    awaited = search_product("AUX_ECMWFD", [], missing=["*"])
    awaited |= {"searched_at": "2026-01-06T00:30:00+00:00"}
    awaited["expected"] = {"*": [_due("AUX_ECMWFD", "2026-01-06T06:00:00+00:00")]}
    down = search_product("AUX_CAL", [], missing=["*"])
    down["error"] = "search in auxip at http://127.0.0.1:9/stac failed: connection refused"
    optional = search_product("AUX_ICE", [], missing=["*"], mandatory=False)
    optional["error"] = "search in prip failed"
    doc = document([waiting, awaited, down, optional])
    gaps = mandatory_gaps(doc)
    assert gaps["AUX_POEORB"].text == (
        "not yet published (AUX_RESORB expected by 2026-01-06 05:00 UTC) for sentinel-1a; "
        "never published (AUX_RESORB expected by 2026-01-06 00:00 UTC) for sentinel-1c"
    )
    assert not gaps["AUX_POEORB"].awaited  # one unit is overdue: a failure
    assert gaps["AUX_ECMWFD"] == Gap("not yet published (expected by 2026-01-06 06:00 UTC)", True)
    assert gaps["AUX_CAL"] == Gap(
        "source unreachable: search in auxip at http://127.0.0.1:9/stac failed: connection refused",
        False,
    )
    assert "AUX_ICE" not in gaps
    assert unreachable_optional(doc) == {
        "AUX_ICE (optional)": "source unreachable: search in prip failed"
    }


def test_a_hole_early_in_the_day_is_never_published_even_with_a_pending_gap_after_it() -> None:
    product = search_product("AUX_POEORB", ["x"], missing=["sentinel-1a"])
    product["searched_at"] = "2026-01-06T00:30:00+00:00"
    product["gaps"] = {
        "sentinel-1a": [
            ["2026-01-05T03:00:00+00:00", "2026-01-05T04:00:00+00:00"],
            ["2026-01-05T23:00:00+00:00", "2026-01-06T00:00:00+00:00"],
        ]
    }
    product["expected"] = {
        "sentinel-1a": [
            _due("AUX_RESORB", "2026-01-05T09:00:00+00:00"),
            _due("AUX_RESORB", "2026-01-06T05:00:00+00:00"),
        ]
    }
    gap = mandatory_gaps(document([product]))["AUX_POEORB"]
    assert gap == Gap(
        "never published (AUX_RESORB expected by 2026-01-05 09:00 UTC) for sentinel-1a "
        "(uncovered 03:00:00..04:00:00, 23:00:00..24:00:00)",
        False,
    )


def test_failed_items_map_type_collection_and_id_to_the_reason() -> None:
    doc = document(
        [
            staged_product(
                "A",
                [
                    staged_item("ok", status="staged"),
                    staged_item("there", status="present"),
                    staged_item("bad", status="failed", reason="HTTP 404"),
                ],
            ),
            staged_product(
                "B", [staged_item("gone", "b", status="failed", reason=None)], collection="b"
            ),
        ]
    )
    assert failed_items(doc) == {"A aux/bad": "HTTP 404", "B b/gone": None}


def test_coverage_gaps_say_per_uncovered_type_which_units_and_items_are_missing() -> None:
    staged = document(
        [
            staged_product("A", ["a1", staged_item("a2", status="failed", reason="HTTP 404")]),
            staged_product("B", [], missing=["sentinel-1a"]),
            staged_product("C", ["c1"]),
            staged_product("OPT", ["o1"], mandatory=False),
        ]
    )
    catalog = catalog_document(staged, held(make_item("a1"), make_item("c1")), item_url)
    assert catalog["coverage"] == {"A": False, "B": False, "C": True}
    assert coverage_gaps(staged, catalog) == {
        "A": Gap("a2 not in the catalog (failed: HTTP 404)", False),
        "B": Gap("not covered for sentinel-1a", False),
    }


def test_coverage_gaps_keep_why_the_search_found_nothing() -> None:
    search = document([search_product("AUX_POEORB", [], missing=["sentinel-1a"])])
    search["products"][0] |= {
        "gaps": {"sentinel-1a": [["2026-01-05T23:00:00+00:00", "2026-01-06T00:00:00+00:00"]]},
        "expected": {"sentinel-1a": [_due("AUX_RESORB", "2026-01-06T05:00:00+00:00")]},
        "searched_at": "2026-01-06T00:30:00+00:00",
    }
    staged = staged_document(search, lambda c, i: staged_item(i, c))  # type: ignore[arg-type]
    catalog = catalog_document(staged, held(), item_url)
    assert coverage_gaps(staged, catalog) == {
        "AUX_POEORB": Gap(
            "not yet published (AUX_RESORB expected by 2026-01-06 05:00 UTC) for sentinel-1a "
            "(uncovered 23:00:00..24:00:00)",
            True,
        )
    }


def test_replacements_name_what_a_new_selection_replaces_in_the_same_day() -> None:
    def day(*ids: str, ptype: str = "AUX_POEORB") -> Any:
        staged = document([staged_product(ptype, ids), staged_product("AUX_CAL", ["cal"])])
        items = [make_item(i) for i in (*ids, "cal")]
        return catalog_document(staged, held(*items), item_url)

    before, after = day("RESORB_1", "RESORB_2"), day("POEORB_1")
    assert replacements(before, after) == {"AUX_POEORB": "POEORB_1 replaces RESORB_1, RESORB_2"}
    assert replacements(None, after) == {}  # the day's first run replaces nothing
    assert replacements(after, after) == {}
    assert replacements(day("X", ptype="OTHER"), after) == {}  # a new product type is no change
    assert replacements(before, day()) == {}  # items gone with nothing new replace nothing


def test_replacements_take_entries_of_one_type_together_and_name_collections() -> None:
    def day(s1: list[str], s2: list[str]) -> Any:
        staged = document(
            [
                staged_product("MPL_ORBPRE", s1[:1], collection="s1"),
                staged_product("MPL_ORBPRE", s1[1:], collection="s1"),  # a second platform
                staged_product("MPL_ORBPRE", s2, collection="s2"),
            ]
        )
        items = [make_item(i, "s1") for i in s1] + [make_item(i, "s2") for i in s2]
        return catalog_document(staged, held(*items), item_url)

    before = day(["A1", "B1"], ["C1"])
    assert replacements(before, day(["A1", "B1"], ["C1"])) == {}
    assert replacements(before, day(["A2", "B1"], ["C2"])) == {
        "MPL_ORBPRE (s1)": "A2 replaces A1",
        "MPL_ORBPRE (s2)": "C2 replaces C1",
    }


def test_search_numbers_count_candidates_selections_types_and_mandatory_gaps() -> None:
    doc = document(
        [
            search_product("A", ["a1", "a2"], candidates=["a1", "a2", "a3"]),
            search_product("A", ["a4"], collection="b", missing=["sentinel-1b"]),
            search_product("B", [], candidates=["b1"], missing=["*"]),
            search_product("OPT", [], mandatory=False, missing=["sentinel-1a"]),
        ]
    )
    assert search_numbers(doc) == {
        "n_candidates": 5,
        "n_selected": 3,
        "n_product_types": 3,
        "n_missing_mandatory": 2,
    }


def test_staged_numbers_count_the_bytes_of_an_item_on_the_first_day_it_appears() -> None:
    documents = {
        "2026-01-06": document(
            [staged_product("A", [staged_item("x"), staged_item("y", status="present")])]
        ),
        "2026-01-05": document(
            [
                staged_product(
                    "A",
                    [
                        staged_item("x"),
                        staged_item("z", status="failed", reason="boom"),
                        staged_item("x", "b"),
                    ],
                )
            ]
        ),
    }
    moved = {("aux", "x"): 100, ("aux", "y"): 7, ("b", "x"): 1000}
    assert staged_numbers(documents, moved) == {
        "2026-01-05": {"n_staged": 2, "n_present": 0, "n_failed": 1, "bytes_staged": 1100},
        "2026-01-06": {"n_staged": 1, "n_present": 1, "n_failed": 0, "bytes_staged": 7},
    }


def test_catalog_features_count_distinct_items_by_collection_and_id() -> None:
    doc = catalog_document(
        document(
            [
                staged_product("A", ["x", "y"]),
                staged_product("B", ["x"]),
                staged_product("C", ["x"], collection="b"),
            ]
        ),
        held(make_item("x"), make_item("y"), make_item("x", "b")),
        item_url,
    )
    n, collection = catalog_features(doc)
    assert n == 3
    assert collection["type"] == "FeatureCollection"
    assert sorted((f["collection"], f["id"]) for f in collection["features"]) == [
        ("aux", "x"),
        ("aux", "y"),
        ("b", "x"),
    ]
