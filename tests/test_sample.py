"""The embedded AUXIP sample: determinism, STAC validity, the rules of docs/design/sample.md."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pystac
import pytest

from aux_assets.sample import (
    COLLECTION_ID,
    DEFAULT_START,
    MIN_MAX_SIZE,
    PRODUCT_TYPES,
    SampleSummary,
    generate_sample,
)
from aux_assets.sample.rules import RULES

START, END = date(2026, 1, 4), date(2026, 1, 6)  # contains the forced re-publication day
DAY = timedelta(days=1)
FAR_END = {
    "MPL_ORBSCT": "9999-12-31T23:59:59Z",
    "AX___OSF_AX": "9999-12-31T23:59:59Z",
    "AUX_CAL": "2100-01-01T00:00:00Z",
    "AUX_INS": "2100-01-01T00:00:00Z",
    "AUX_PP1": "2100-01-01T00:00:00Z",
    "AUX_PP2": "2100-01-01T00:00:00Z",
    "AUX_SCS": "2100-01-01T00:00:00Z",
    "GIP_R2EQOG": "2100-01-01T00:00:00Z",
    "GIP_PROBAS": "2100-01-01T00:00:00Z",
    "OL_1_EO__AX": "2099-12-31T23:59:59Z",
}
INSTANT = {"AUX_WND", "AUX_WAV", "AUX_ICE"}
MONITORING = {"AMH_ERRMAT", "MW_1_NIR_AX"}
# types whose rules give files covering whole days (with the policy margins)
DAY_COVER = {
    "AUX_POEORB",
    "MPL_ORBPRE",
    "AUX_CAMSFO",
    "AUX_UT1UTC",
    "AX___FRO_AX",
    "AX___FPO_AX",
    *FAR_END,
    *MONITORING,
}
MARGINS = {r.product_type: r.margins if r.policy == "LatestValCover" else (0, 0) for r in RULES}
T = r"(\d{8}T\d{6})"
REGEXES = {  # the real naming conventions (docs/design/sample.md)
    "S1 EOF": re.compile(
        r"^(S1[A-D_])_OPER_(AUX_POEORB|AUX_RESORB|AUX_PREORB|AUX_RESATT|AMH_ERRMAT|AMV_ERRMAT)_"
        rf"(OPOD|MPC_)_{T}_V{T}_{T}\.EOF(\.zip)?$"
    ),
    "S1 SAFE": re.compile(
        rf"^(S1[A-D_])_{{1,2}}AUX_(CAL|INS|PP1|PP2|SCS|WND|WAV|ICE)_V{T}_G{T}\.SAFE(\.zip|\.TGZ)?$"
    ),
    "S2": re.compile(
        r"^(S2[A-D_])_(OPER)_(AUX_\w{6}|GIP_\w{6}|MPL_\w{6}|REP__\w{5})_(\w{4})_(\d{8}T\d{6})"
        r"(_V\d{8}T?\d{6}_\d{8}T?\d{6})?(_A\d{6})?(_B[0-9A]{2})?(_W[FP])?(_L[ND])?"
        r"\.(TGZ|tar|zip|EOF)"
    ),
    "S3": re.compile(
        rf"^(S3[A-D_])_(\w{{11}})_{T}_{T}_{T}_(_{{17}}|.{{17}})_(\w{{3}})_([OFDR])_(\w\w)_(\w{{3}})"
        r"\.SEN3(\.zip)?$"
    ),
    "MPL": re.compile(
        rf"^(S[12][A-D])_OPER_MPL_(ORBPRE|ORBSCT)_{T}_(\d{{8}}T\d{{6}})_(\d{{4}})\.EOF$"
    ),
}


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _name_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleSummary:
    return generate_sample(tmp_path_factory.mktemp("s") / "a", START, END, max_size=MIN_MAX_SIZE)


@pytest.fixture(scope="module")
def items(sample: SampleSummary) -> list[dict[str, Any]]:
    paths = sorted(sample.root.glob("*/*.json"))
    return [json.loads(p.read_text()) for p in paths]


@pytest.fixture(scope="module")
def by_type(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        out[item["properties"]["product:type"]].append(item)
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_identical_inputs_give_identical_trees(sample: SampleSummary, tmp_path: Path) -> None:
    again = generate_sample(tmp_path / "b", START, END, max_size=MIN_MAX_SIZE)
    assert again.n_items == sample.n_items and again.n_bytes == sample.n_bytes
    first, second = _tree(sample.root), _tree(again.root)
    assert sorted(first) == sorted(second)
    assert [k for k in first if first[k] != second[k]] == []


def test_a_file_does_not_depend_on_the_range(sample: SampleSummary, tmp_path: Path) -> None:
    types = ["AUX_POEORB", "AUX_WND", "AUX_SADATA", "GIP_R2EQOG"]
    other = generate_sample(
        tmp_path / "c", END - DAY, END + DAY, max_size=MIN_MAX_SIZE, product_types=types
    )
    first, second = _tree(sample.root), _tree(other.root)
    shared = [k for k in second if k in first and "/" in k]  # assets and items
    assert len(shared) > 40
    assert [k for k in shared if first[k] != second[k]] == []


def test_pystac_reads_every_item(sample: SampleSummary) -> None:
    collection = pystac.Collection.from_file(str(sample.collection_href))
    assert collection.id == COLLECTION_ID and collection.license == "other"
    found = list(collection.get_items(recursive=True))
    assert len(found) == sample.n_items == len({i.id for i in found})
    interval = collection.extent.temporal.intervals[0]
    assert interval[0] is not None and interval[1] is not None
    for item in found:
        props = item.properties
        assert item.geometry is None and item.bbox is None and item.datetime is None
        assert item.collection_id == COLLECTION_ID
        assert interval[0] <= _t(props["start_datetime"]) <= _t(props["end_datetime"])
        assert _t(props["end_datetime"]) <= interval[1]


def test_item_shape(items: list[dict[str, Any]]) -> None:
    for item in items:
        props = item["properties"]
        assert {e.split("/")[3] for e in item["stac_extensions"]} == {
            "file",
            "product",
            "processing",
            "timestamps",
        }
        published = _t(props["published"])
        assert _t(props["processing:datetime"]) < published
        assert _t(props["expires"]) == _t(props["auxip:eviction_datetime"]) == published + 35 * DAY
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
            props["auxip:id"],
        )
        assert props["constellation"] == f"sentinel-{item['id'][1]}"
        assert props["processing:facility"]
        [(key, asset)] = item["assets"].items()
        assert asset["href"] == f"./{key}" and asset["roles"] == ["data"]
        assert item["id"] == key.rsplit(".", 1)[0]
    assert len({i["properties"]["auxip:id"] for i in items}) == len(items)


def test_assets_match_size_and_md5(sample: SampleSummary, items: list[dict[str, Any]]) -> None:
    total = 0
    for item in items:
        [(key, asset)] = item["assets"].items()
        data = (sample.root / item["id"] / key).read_bytes()
        assert len(data) == asset["file:size"] <= MIN_MAX_SIZE
        assert hashlib.md5(data).hexdigest() == asset["file:checksum"]
        total += len(data)
    assert total == sample.n_bytes


def test_all_27_product_types(sample: SampleSummary, by_type: dict[str, Any]) -> None:
    assert len(PRODUCT_TYPES) == 27
    assert set(by_type) == set(PRODUCT_TYPES) and sample.product_types == PRODUCT_TYPES


def test_names_follow_the_real_conventions(items: list[dict[str, Any]]) -> None:
    for item in items:
        [name] = item["assets"]
        props = item["properties"]
        ptype, start, end = props["product:type"], props["start_datetime"], props["end_datetime"]
        family = (
            "MPL"
            if ptype.startswith("MPL_")
            else {"S1": "S1 EOF" if ".EOF" in name else "S1 SAFE", "S2": "S2", "S3": "S3"}[name[:2]]
        )
        match = REGEXES[family].match(name)
        assert match, (family, name)
        assert ptype in name
        generation = _t(props["processing:datetime"])
        if family == "S1 EOF":
            assert match.group(4, 5, 6) == tuple(
                f"{_t(v):%Y%m%dT%H%M%S}" for v in (props["processing:datetime"], start, end)
            )
        elif family == "S1 SAFE":
            assert (_name_time(match.group(3)), _name_time(match.group(4))) == (
                _t(start),
                generation,
            )
        elif family == "S3":
            assert match.group(2) == ptype
            assert _name_time(match.group(5)) == generation
            assert props["product:timeliness_category"] == match.group(9)
            assert (_name_time(match.group(3)), _name_time(match.group(4))) == (_t(start), _t(end))
        elif family == "MPL":
            assert _name_time(match.group(3)) == _t(start)


def test_unit_independent_files_have_no_platform(items: list[dict[str, Any]]) -> None:
    for item in items:
        unit, props = item["id"][2], item["properties"]
        if unit == "_":
            assert "platform" not in props
        else:
            assert props["platform"] == f"sentinel-{item['id'][1]}{unit.lower()}"
    assert any(i["id"].startswith(("S1_", "S2_", "S3_")) for i in items)


def test_validity_classes(by_type: dict[str, list[dict[str, Any]]]) -> None:
    for ptype, group in by_type.items():
        for item in group:
            props = item["properties"]
            start, end = props["start_datetime"], props["end_datetime"]
            if ptype in INSTANT:
                assert start == end
            else:
                assert start < end
            if ptype in FAR_END:
                assert end == FAR_END[ptype]
            if ptype in MONITORING:
                assert start == "2000-01-01T00:00:00Z"
                assert _t(end) < _t(props["processing:datetime"])


def test_some_validities_start_at_midnight(by_type: dict[str, list[dict[str, Any]]]) -> None:
    for ptype in ("AX___FRO_AX", "AX___FPO_AX", "AUX_CAMSFO", "AUX_UT1UTC", "GIP_R2EQOG"):
        assert all(i["properties"]["start_datetime"].endswith("T00:00:00Z") for i in by_type[ptype])
    assert any(i["properties"]["start_datetime"].endswith("T00:00:00Z") for i in by_type["AUX_WND"])


def test_republished_poeorb(by_type: dict[str, list[dict[str, Any]]]) -> None:
    versions: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for item in by_type["AUX_POEORB"]:
        p = item["properties"]
        versions[(p["platform"], p["start_datetime"], p["end_datetime"])].append(p)
    day = _t(f"{DEFAULT_START + 4 * DAY}T00:00:00Z")
    [(key, pair)] = [
        (k, v)
        for k, v in versions.items()
        if k[0] == "sentinel-1a" and _t(k[1]) <= day and day + DAY <= _t(k[2])
    ]
    assert len(pair) == 2, key
    old, new = sorted(pair, key=lambda p: p["processing:datetime"])
    assert old["processing:datetime"] < new["processing:datetime"]
    assert old["published"] < new["published"]


def test_every_day_is_served(by_type: dict[str, list[dict[str, Any]]]) -> None:
    days = [datetime.combine(START + i * DAY, datetime.min.time(), UTC) for i in range(2)]
    for ptype, group in by_type.items():
        per_platform: dict[str | None, list[tuple[datetime, datetime]]] = defaultdict(list)
        for item in group:
            p = item["properties"]
            per_platform[p.get("platform")].append((_t(p["start_datetime"]), _t(p["end_datetime"])))
        dt0, dt1 = (timedelta(seconds=s) for s in MARGINS[ptype])
        for platform, spans in per_platform.items():
            for d in days:
                assert any(s <= d + DAY and e >= d for s, e in spans), (ptype, platform, d)
                if ptype in DAY_COVER:
                    assert any(s <= d - dt0 and e >= d + DAY + dt1 for s, e in spans), (ptype, d)


def _member(archive: bytes, kind: str) -> dict[str, bytes]:
    if kind == "zip":
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            return {n: zf.read(n) for n in zf.namelist()}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_contents_look_like_the_real_formats(
    sample: SampleSummary, by_type: dict[str, Any]
) -> None:
    def first(ptype: str) -> tuple[str, bytes, datetime]:
        item = by_type[ptype][0]
        [name] = item["assets"]
        data = (sample.root / item["id"] / name).read_bytes()
        return item["id"], data, _t(item["properties"]["processing:datetime"])

    item_id, data, g = first("AUX_POEORB")
    header = ET.fromstring(data).find("Earth_Explorer_Header/Fixed_Header")
    assert header is not None and header.findtext("File_Name") == item_id
    assert header.findtext("Source/Creation_Date") == f"UTC={g:%Y-%m-%dT%H:%M:%S}"
    assert ET.fromstring(data).find("Data_Block/List_of_OSVs/OSV/X") is not None

    item_id, data, g = first("AMH_ERRMAT")
    eof = _member(data, "zip")[item_id]
    assert (
        ET.fromstring(eof).findtext("Earth_Explorer_Header/Fixed_Header/File_Type") == "AMH_ERRMAT"
    )

    for ptype, manifest in (
        ("AUX_CAL", "manifest.safe"),
        ("AUX_WND", "manifest.safe"),
        ("AX___FRO_AX", "xfdumanifest.xml"),
    ):
        item_id, data, g = first(ptype)
        members = _member(data, "zip")
        assert f"{item_id}/{manifest}" in members and len(members) == 2
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert {i.date_time for i in zf.infolist()} == {g.timetuple()[:6]}
        stream = ET.fromstring(members[f"{item_id}/{manifest}"]).find(".//byteStream")
        assert stream is not None
        href = stream.find("fileLocation").get("href")  # type: ignore[union-attr]
        payload = members[f"{item_id}/{href.removeprefix('./')}"]  # type: ignore[union-attr]
        assert int(stream.get("size", "")) == len(payload)
        assert stream.findtext("checksum") == hashlib.md5(payload).hexdigest()

    for ptype, kind in (("AUX_ECMWFD", "tgz"), ("AUX_SADATA", "tar")):
        item_id, data, g = first(ptype)
        assert data[:2] == b"\x1f\x8b" if kind == "tgz" else data[257:262] == b"ustar"
        members = _member(data, kind)
        assert sorted(members) == [f"{item_id}/{item_id}.DBL", f"{item_id}/{item_id}.HDR"]
        assert (
            ET.fromstring(members[f"{item_id}/{item_id}.HDR"]).findtext("Fixed_Header/File_Type")
            == ptype
        )
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            assert {m.mtime for m in tf.getmembers()} == {int(g.timestamp())}


def test_real_sizes_when_not_clipped(tmp_path: Path) -> None:
    types = ["MPL_ORBSCT", "AUX_UT1UTC", "AX___FPO_AX", "AUX_PREORB", "OL_1_EO__AX"]
    summary = generate_sample(
        tmp_path / "real", START, START + DAY, max_size=None, product_types=types
    )
    assert summary.product_types == tuple(t for t in PRODUCT_TYPES if t in types)
    sizes = {r.product_type: r.size for r in RULES}
    for path in summary.root.glob("*/*.json"):
        item = json.loads(path.read_text())
        [asset] = item["assets"].values()
        low, high = sizes[item["properties"]["product:type"]]
        assert low * 0.9 <= asset["file:size"] <= high


def test_generate_sample_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"2026-01-02.*2026-01-03"):
        generate_sample(tmp_path / "x", date(2026, 1, 3), date(2026, 1, 2))
    with pytest.raises(ValueError, match="NOPE"):
        generate_sample(tmp_path / "x", product_types=["NOPE"])
    with pytest.raises(ValueError, match="max_size"):
        generate_sample(tmp_path / "x", max_size=100)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    with pytest.raises(FileExistsError):
        generate_sample(tmp_path / "busy")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aux_assets.sample", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    done = _cli(
        str(out),
        "--start",
        "2026-01-02",
        "--end",
        "2026-01-03",
        "--types",
        "AUX_UT1UTC,AX___FPO_AX",
        "--max-size",
        "0",
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1 and "items" in done.stdout
    ids = [i.id for i in pystac.Collection.from_file(str(out / "collection.json")).get_items()]
    assert ids and all("UT1UTC" in i or "FPO" in i for i in ids)

    bad = _cli(str(tmp_path / "bad"), "--start", "2026-01-05", "--end", "2026-01-02")
    assert bad.returncode == 2 and "2026-01-05" in bad.stderr and "2026-01-02" in bad.stderr
    assert not (tmp_path / "bad").exists()
    assert _cli(str(tmp_path / "bad"), "--types", "AUX_NOPE").returncode == 2
    assert _cli(str(tmp_path / "bad"), "--start", "2026-13-01").returncode == 2
    again = _cli(str(out), "--types", "AUX_UT1UTC")
    assert again.returncode == 2 and "not an empty directory" in again.stderr
