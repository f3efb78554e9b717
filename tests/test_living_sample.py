"""The living sample (aux_assets.sample.living) and its source: every day from the first day to
now, each file written once on first use, published on the real service's clock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from aux_assets.discovery import new_items_request
from aux_assets.filters import window_filter
from aux_assets.products import ProductSpec
from aux_assets.sample.generator import plan
from aux_assets.sample.living import MAX_PUBLICATION_DELAY, LivingSample
from aux_assets.sample.rules import RULES, Seeds
from aux_assets.sources.base import SearchRequest
from aux_assets.sources.sample import LivingSampleSource

FIRST = date(2026, 1, 1)
DAY = date(2026, 3, 10)
T = datetime(2026, 3, 10, tzinfo=UTC)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _generate_in_process(root: Path, day: date) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from datetime import date; from pathlib import Path; "
        "from aux_assets.sample.living import LivingSample; "
        "sample = LivingSample(Path(sys.argv[1]), date(2026, 1, 1)); "
        "sample.generate_day(date.fromisoformat(sys.argv[2]))"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(root), day.isoformat()])


def test_a_day_is_the_same_bytes_everywhere_and_written_once(tmp_path: Path) -> None:
    one = LivingSample(tmp_path / "one", FIRST)
    began = time.perf_counter()
    folders = one.generate_day(DAY)
    first_s = time.perf_counter() - began
    began = time.perf_counter()
    one.generate_day(DAY + timedelta(days=1))
    next_s = time.perf_counter() - began
    print(f"\ngenerate a day: {len(folders)} files in {first_s:.2f} s; the next day {next_s:.2f} s")
    assert len(folders) > 400
    tree = _tree(one.root)
    mtimes = {p: p.stat().st_mtime_ns for p in one.root.rglob("*")}
    one.generate_day(DAY)  # again: nothing written
    assert {p: p.stat().st_mtime_ns for p in one.root.rglob("*")} == mtimes

    # two processes at once on another root: the same tree, no temporary folder left
    racers = [_generate_in_process(tmp_path / "two", DAY) for _ in range(2)]
    racers.append(_generate_in_process(tmp_path / "two", DAY + timedelta(days=1)))
    assert [r.wait(120) for r in racers] == [0, 0, 0]
    two = LivingSample(tmp_path / "two", FIRST)
    assert _tree(two.root) == tree
    assert not list(two.root.glob(".tmp-*"))


def test_a_file_serving_several_days_is_the_same_from_each(tmp_path: Path) -> None:
    a, b = LivingSample(tmp_path / "a", FIRST), LivingSample(tmp_path / "b", FIRST)
    from_a = {p.name for p in a.generate_day(DAY)}
    from_b = {p.name for p in b.generate_day(DAY + timedelta(days=1))}
    shared = from_a & from_b
    assert len(shared) > 100  # orbit scenarios, predicted orbits, calibration files...
    for name in sorted(shared):
        assert _tree(a.root / name) == _tree(b.root / name), name


def _poeorb(sample: LivingSample, unit: str, start: str) -> tuple[str, datetime]:
    """The id and publication of the precise orbit of ``unit`` starting at ``start``."""
    days = sample.days(DAY, DAY, datetime(2027, 1, 1, tzinfo=UTC))
    assert days is not None
    (product,) = [
        p
        for p in sample.products(days, ["AUX_POEORB"], datetime(2027, 1, 1, tzinfo=UTC))
        if p.platform == unit and f"_V{start}_" in p.name
    ]
    return product.item_id, product.dates.publication


def test_a_search_sees_only_what_is_published_by_its_clock(tmp_path: Path) -> None:
    sample = LivingSample(tmp_path, FIRST)
    poeorb, published = _poeorb(sample, "S1A", "20260309T225942")
    assert timedelta(days=19) < published - T < timedelta(days=21)
    clock = [published - timedelta(seconds=1)]
    source = LivingSampleSource("auxip", sample, lambda: clock[0])
    cql = window_filter("AUX_POEORB", T, T + timedelta(days=1), "cover", ["sentinel-1a"])
    assert [i.id for i in source.search(SearchRequest(filter=cql))] == []
    clock[0] = published
    (item,) = source.search(SearchRequest(filter=cql))
    assert item.id == poeorb and item.properties["published"].startswith(f"{published:%Y-%m-%d}")
    asset = next(iter(item.assets.values()))
    assert asset.href.startswith(sample.root.resolve().as_uri())
    assert (
        Path(asset.href.removeprefix("file://")).stat().st_size == asset.extra_fields["file:size"]
    )
    # a restituted orbit is published hours after its validity; nothing exists after "now"
    clock[0] = T + timedelta(hours=12)
    resorb = window_filter("AUX_RESORB", T, T + timedelta(days=1), "intersect", ["sentinel-1a"])
    ends = [i.properties["end_datetime"] for i in source.search(SearchRequest(filter=resorb))]
    assert ends and max(ends) < "2026-03-10T12" and max(ends) > "2026-03-10T06"
    assert source.search(SearchRequest(filter=resorb, collections=("elsewhere",))) == []
    clock[0] = datetime(2025, 12, 1, tzinfo=UTC)  # before the first day: nothing at all
    assert source.search(SearchRequest(filter=resorb)) == []
    assert not any(sample.root.glob("*RESORB*V202603101*"))  # files are written on demand only


def test_a_published_after_search_finds_exactly_what_was_published_in_between(
    tmp_path: Path,
) -> None:
    first, now = date(2026, 2, 1), datetime(2026, 5, 1, 12, tzinfo=UTC)
    since = now - timedelta(days=3)
    types = ("AUX_POEORB", "OL_1_EO__AX", "GIP_R2EQOG", "AUX_RESORB")  # re-published, lagging
    specs = [ProductSpec(product_type=t, collection="aux") for t in types]
    source = LivingSampleSource("auxip", LivingSample(tmp_path, first), lambda: now)
    found = source.search(new_items_request(specs, since, 100_000))
    rules = [r for r in RULES if r.product_type in types]
    every = plan(rules, first, now.date() + timedelta(days=1), Seeds(0))
    expected = sorted(p.item_id for p in every if since < p.dates.publication <= now)
    assert sorted(i.id for i in found) == expected and len(expected) > 50
    published = [i.properties["published"] for i in found]
    assert published == sorted(published)  # the sensor's order


def test_no_product_is_published_longer_after_its_last_day_than_the_bound() -> None:
    """What a search for the files published after T relies on (MAX_PUBLICATION_DELAY)."""
    first, days = date(2026, 1, 1), 150
    last_day: dict[str, tuple[date, datetime]] = {}
    for n in range(days):
        day = first + timedelta(days=n)
        for p in plan(RULES, day, day + timedelta(days=1), Seeds(0)):
            last_day[p.name] = (day, p.dates.publication)
    end = first + timedelta(days=days - 1)
    delays = [
        published - datetime.combine(day, datetime.min.time(), UTC)
        for day, published in last_day.values()
        if day < end  # a file may serve days after the range
    ]
    assert max(delays) <= MAX_PUBLICATION_DELAY
    assert max(delays) > MAX_PUBLICATION_DELAY - timedelta(days=20)  # the bound is not loose


@pytest.mark.parametrize(
    ("first", "last", "now", "expected"),
    [
        (None, None, datetime(2026, 1, 3, 5, tzinfo=UTC), (FIRST, date(2026, 1, 3))),
        (date(2025, 6, 1), date(2026, 2, 1), T, (FIRST, date(2026, 2, 1))),
        (date(2026, 4, 1), date(2026, 4, 2), T, None),  # after today
        (date(2025, 6, 1), date(2025, 12, 31), T, None),  # before the first day
    ],
)
def test_the_days_that_exist_run_from_the_first_day_to_today(
    tmp_path: Path,
    first: date | None,
    last: date | None,
    now: datetime,
    expected: tuple[date, date] | None,
) -> None:
    days = LivingSample(tmp_path, FIRST).days(first, last, now)
    assert (None if days is None else (days.first, days.last)) == expected


def _search_days(tmp_path: Path, request: SearchRequest, now: datetime) -> tuple[date, date] | None:
    days = LivingSampleSource("auxip", LivingSample(tmp_path, FIRST), lambda: now).days(
        request, now
    )
    return None if days is None else (days.first, days.last)


def _cql(*terms: dict) -> dict:
    return {"op": "and", "args": list(terms)}


def _term(op: str, prop: str, when: str) -> dict:
    return {"op": op, "args": [{"property": prop}, {"timestamp": when}]}


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        # a window filter: the days between its bounds (a cover filter has them the other way)
        (
            SearchRequest(filter=window_filter("X", T, T + timedelta(days=2), "intersect")),
            (date(2026, 3, 9), date(2026, 3, 12)),  # bounds are widened by a second
        ),
        (
            SearchRequest(filter=window_filter("X", T, T + timedelta(days=2), "cover")),
            (DAY, date(2026, 3, 11)),
        ),
        # one side only: the other is open (to today, or from the first day)
        (
            SearchRequest(filter=_term(">=", "end_datetime", "2026-03-01T12:00:00Z")),
            (date(2026, 3, 1), date(2026, 3, 20)),
        ),
        (
            SearchRequest(filter=_term("<=", "start_datetime", "2026-02-01T00:00:00Z")),
            (FIRST, date(2026, 2, 1)),
        ),
        # an offset is a UTC day: 03-01T01:00+02:00 is 02-28T23:00Z
        (
            SearchRequest(filter=_term(">=", "end_datetime", "2026-03-01T01:00:00+02:00")),
            (date(2026, 2, 28), date(2026, 3, 20)),
        ),
        # a STAC datetime, when the filter bounds nothing
        (
            SearchRequest(datetime="2026-03-02T00:00:00Z/2026-03-03T12:00:00Z"),
            (date(2026, 3, 2), date(2026, 3, 3)),
        ),
        (SearchRequest(datetime="../2026-01-03T00:00:00Z"), (FIRST, date(2026, 1, 3))),
        # published after T: from T - 75 days; with validity bounds too, the later of both
        (
            SearchRequest(filter=_term(">", "published", "2026-03-19T00:00:00Z")),
            (date(2026, 1, 3), date(2026, 3, 20)),
        ),
        (
            SearchRequest(
                filter=_cql(
                    _term(">", "published", "2026-03-19T00:00:00Z"),
                    _term(">=", "end_datetime", "2026-03-10T12:00:00Z"),
                )
            ),
            (DAY, date(2026, 3, 20)),
        ),
        (
            SearchRequest(filter=_term(">", "published", "0001-01-01T00:00:00Z")),
            (FIRST, date(2026, 3, 20)),
        ),
        (SearchRequest(), (FIRST, date(2026, 3, 20))),
    ],
)
def test_the_days_a_search_sees_follow_its_bounds(
    tmp_path: Path, request_: SearchRequest, expected: tuple[date, date]
) -> None:
    assert _search_days(tmp_path, request_, datetime(2026, 3, 20, 12, tzinfo=UTC)) == expected


def test_a_damaged_file_is_written_again(tmp_path: Path) -> None:
    sample = LivingSample(tmp_path, FIRST)
    product = plan([r for r in RULES if r.product_type == "AUX_UT1UTC"], DAY, DAY, Seeds(0))[0]
    first = sample.item(product)
    path = Path(next(iter(first["assets"].values()))["href"].removeprefix("file://"))
    whole = path.read_bytes()
    path.write_bytes(whole[:100])  # as a crash could leave it
    again = sample.item(product)
    assert path.read_bytes() == whole and again == first
    (tmp_path / "v1-seed0-max16384" / ".tmp-old").mkdir()  # left by a killed process
    os.utime(tmp_path / "v1-seed0-max16384" / ".tmp-old", (0, 0))
    LivingSample(tmp_path, FIRST).item(product)
    assert not (tmp_path / "v1-seed0-max16384" / ".tmp-old").exists()
