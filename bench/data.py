"""The data sets, written once under the cache folder and reused: random files (tiny, small,
large, and one 2 GiB file for the memory target) and a month of the AUXIP sample generator.

Each set has a ``manifest.json`` (written last) giving every file's URL path, size and sha256;
the inputs of each contender (an ItemCollection, a curl config) are derived from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

DATA_VERSION = 1
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
# name -> (number of files, bytes per file)
RANDOM_SETS: dict[str, tuple[int, int]] = {
    "tiny": (1000, 64 * KIB),
    "small": (200, MIB),
    "large": (4, 256 * MIB),
    "huge": (1, 2 * GIB),
}
MONTH_START = date(2026, 1, 1)
SHA256_FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
_CHUNK = 8 * MIB

Log = Callable[[str], None]


def default_data_dir() -> Path:
    """``$AUX_BENCH_DATA`` or ``~/.cache/aux_assets/bench-data``."""
    env = os.environ.get("AUX_BENCH_DATA")
    return Path(env) if env else Path.home() / ".cache" / "aux_assets" / "bench-data"


@dataclass(frozen=True)
class FileEntry:
    """One file of a set: its item id, URL path under the www root, size and sha256."""

    item_id: str
    path: str
    size: int
    sha256: str
    item_json: str | None = None  # month: the sample's item document, under the www root


@dataclass(frozen=True)
class DataSet:
    """A data set served from ``www/<name>/``."""

    name: str
    www: Path
    files: tuple[FileEntry, ...]
    month_days: int = 0

    @property
    def n_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def is_month(self) -> bool:
        return self.month_days > 0


def month_name(days: int, max_size: int) -> str:
    """The folder of a month sample: ``month-30d-256k``."""
    return f"month-{days}d-{max_size // KIB}k"


def _load(www: Path, name: str, expect: dict[str, Any]) -> DataSet | None:
    """The set if its manifest exists, matches ``expect`` and every file has its size."""
    manifest = www / name / "manifest.json"
    try:
        doc = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if any(doc.get(k) != v for k, v in expect.items()):
        return None
    files = tuple(FileEntry(**f) for f in doc["files"])
    for f in files:
        try:
            if (www / f.path).stat().st_size != f.size:
                return None
        except OSError:
            return None
    return DataSet(name, www, files, int(doc.get("month_days", 0)))


def _save(www: Path, name: str, meta: dict[str, Any], files: list[FileEntry]) -> DataSet:
    doc = {**meta, "files": [vars(f) for f in files]}
    tmp = www / name / "manifest.json.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, www / name / "manifest.json")
    return DataSet(name, www, tuple(files), int(meta.get("month_days", 0)))


def _write_random(path: Path, size: int, seed: str) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; their sha256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = rng.randbytes(min(left, _CHUNK))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def ensure_random_set(www: Path, name: str, log: Log) -> DataSet:
    """The random set ``name`` (written on first use)."""
    count, size = RANDOM_SETS[name]
    meta = {"version": DATA_VERSION, "kind": "random", "count": count, "size": size}
    found = _load(www, name, meta)
    if found is not None:
        return found
    began = time.monotonic()
    log(f"writing data set {name}: {count} x {size // KIB} KiB of random bytes")
    folder = www / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    width = len(str(count - 1))
    files = []
    for i in range(count):
        file_name = f"f{i:0{width}d}.bin"
        sha = _write_random(folder / file_name, size, f"{name}-{i}")
        files.append(FileEntry(f"{name}-{i:0{width}d}", f"{name}/{file_name}", size, sha))
    log(f"  done in {time.monotonic() - began:.1f} s")
    return _save(www, name, meta, files)


def ensure_month_set(www: Path, days: int, max_size: int, log: Log) -> DataSet:
    """``days`` days of the AUXIP sample (files clipped to ``max_size`` bytes)."""
    name = month_name(days, max_size)
    meta = {
        "version": DATA_VERSION,
        "kind": "month",
        "month_days": days,
        "max_size": max_size,
        "start": MONTH_START.isoformat(),
    }
    found = _load(www, name, meta)
    if found is not None:
        return found
    from aux_assets.sample import generate_sample  # imported only when writing

    began = time.monotonic()
    log(f"writing data set {name}: the AUXIP sample over {days} days, files <= {max_size} bytes")
    folder = www / name
    shutil.rmtree(folder, ignore_errors=True)
    generate_sample(folder, MONTH_START, MONTH_START + timedelta(days=days), max_size=max_size)
    files = []
    for doc_path in sorted(folder.glob("*/*.json")):
        item = json.loads(doc_path.read_text())
        (asset,) = item["assets"].values()
        rel = doc_path.parent.relative_to(www) / Path(asset["href"]).name
        digest = hashlib.sha256((www / rel).read_bytes()).hexdigest()
        files.append(
            FileEntry(
                item["id"],
                rel.as_posix(),
                int(asset["file:size"]),
                digest,
                doc_path.relative_to(www).as_posix(),
            )
        )
    log(f"  {len(files)} items written in {time.monotonic() - began:.1f} s")
    return _save(www, name, meta, files)


def _shifted(item: dict[str, Any], copy: int, days: int) -> dict[str, Any]:
    """Copy ``copy`` of a month item: id suffixed, validity ``copy * days`` days later."""
    from aux_assets.utils.times import parse_utc, utc_text  # the project's one timestamp form

    props = dict(item["properties"])
    for key in ("datetime", "start_datetime", "end_datetime"):
        text = props.get(key)
        if isinstance(text, str) and not text.startswith("9999"):
            props[key] = utc_text(parse_utc(text) + timedelta(copy * days))
    return {**item, "id": f"{item['id']}-{copy}", "properties": props, "links": []}


def ensure_static_set(month: DataSet, n_items: int, log: Log) -> Path:
    """A static collection of ``n_items`` item documents, one file each: copies of the month's
    items one month apart (assets: the month's files). Returns its folder."""
    folder = month.www / f"static-{n_items // 1000}k"
    meta = {"version": DATA_VERSION, "month": month.name, "items": n_items}
    try:
        if json.loads((folder / "manifest.json").read_text()) == meta:
            return folder
    except (OSError, ValueError):
        pass
    began = time.monotonic()
    log(f"writing data set {folder.name}: {n_items} items, copies of {month.name}")
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "items").mkdir(parents=True)
    sources = [f for f in month.files if f.item_json]
    links = []
    for i in range(n_items):
        entry = sources[i % len(sources)]
        item = json.loads((month.www / str(entry.item_json)).read_text())
        for asset in item["assets"].values():
            asset["href"] = (month.www / entry.path).as_uri()
        doc = _shifted(item, i // len(sources), month.month_days)
        (folder / "items" / f"{doc['id']}.json").write_text(json.dumps(doc))
        links.append({"rel": "item", "href": f"./items/{doc['id']}.json"})
    collection = json.loads((month.www / month.name / "collection.json").read_text())
    collection["links"] = [{"rel": "root", "href": "./collection.json"}, *links]
    (folder / "collection.json").write_text(json.dumps(collection))
    (folder / "manifest.json").write_text(json.dumps(meta))
    log(f"  written in {time.monotonic() - began:.1f} s")
    return folder


def target_collection(item: dict[str, Any], default: str) -> str:
    """The collection an item is staged into: ``s1-aux``/``s2-aux``/``s3-aux`` for sample
    items (as the demo products file does), else ``default``."""
    constellation = str(item.get("properties", {}).get("constellation", ""))
    if constellation.startswith("sentinel-") and constellation[-1].isdigit():
        return f"s{constellation[-1]}-aux"
    return default


def _random_item(entry: FileEntry, url: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [SHA256_FILE_EXT],
        "id": entry.item_id,
        "geometry": None,
        "properties": {"datetime": "2026-01-01T00:00:00Z"},
        "links": [],
        "assets": {
            "data": {
                "href": url,
                "type": "application/octet-stream",
                "roles": ["data"],
                "file:size": entry.size,
                "file:checksum": "1220" + entry.sha256,  # sha2-256 multihash
            }
        },
    }


def item_collection(data: DataSet, base_url: str) -> dict[str, Any]:
    """The set as an ItemCollection whose asset hrefs point at ``base_url``. Random files get
    a sha256 ``file:checksum``; sample items keep theirs (MD5, as AUXIP publishes)."""
    features = []
    for entry in data.files:
        url = f"{base_url}/{entry.path}"
        if entry.item_json is None:
            features.append(_random_item(entry, url))
            continue
        item = json.loads((data.www / entry.item_json).read_text())
        (asset,) = item["assets"].values()
        asset["href"] = url
        item["links"] = []
        features.append(item)
    return {"type": "FeatureCollection", "features": features}


def curl_config(data: DataSet, base_url: str) -> str:
    """A curl ``--config``: one url/output pair per file, outputs ``<item id>/<file name>``
    relative to the directory curl runs in (the layout stac-asset and our workers use)."""
    lines = []
    for entry in data.files:
        lines.append(f'url = "{base_url}/{entry.path}"')
        lines.append(f'output = "{entry.item_id}/{entry.path.rsplit("/", 1)[1]}"')
    return "\n".join(lines) + "\n"


def warm(data: DataSet) -> None:
    """Read every file once so that nginx serves them from the page cache."""
    buffer = bytearray(_CHUNK)
    for entry in data.files:
        with (data.www / entry.path).open("rb", buffering=0) as f:
            while f.readinto(buffer):
                pass
