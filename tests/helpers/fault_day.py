"""The demo day as stage tasks served over HTTP, and the checks the fault suite makes on disk.

:func:`plan_day` runs the real search and selection (demo products file, the generated AUXIP
sample) for one day; :func:`served_tasks` points the selected items' hrefs at a
:class:`~tests.helpers.fault_server.FaultServer` serving the sample. The checks re-hash what is
on disk and compare it with the source files, independently of the code under test.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pystac

import aux_assets
from aux_assets.auth import Auth
from aux_assets.planning import Window, plan_windows
from aux_assets.products import load_products
from aux_assets.sources.static import LocalStacSource
from aux_assets.staging.items import asset_filename
from aux_assets.staging.stager import StageTask
from aux_assets.utils.checksums import Checksum, new_hasher
from aux_assets.utils.urls import file_path

DAY = "2026-01-05"
SOURCE = "auxip"


@dataclass(frozen=True)
class DayTask:
    """One selected item: its feature with hrefs relative to the sample root."""

    feature: dict[str, Any]
    collection: str
    unpack: bool

    @property
    def item_id(self) -> str:
        return str(self.feature["id"])


def plan_day(sample: Path, day: str = DAY) -> list[DayTask]:
    """What the demo products file selects for ``day`` from the sample (hrefs made relative)."""
    specs = load_products(Path(aux_assets.__file__).parent / "demo_products.yaml").products
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    window = Window(day, start, start + timedelta(days=1))
    docs = plan_windows(specs, [window], {SOURCE: LocalStacSource(SOURCE, sample)})
    root = sample.resolve()
    tasks: dict[tuple[str, str], DayTask] = {}
    for product in docs[day]["products"]:
        for feature in product["selected"]["features"]:
            for asset in feature["assets"].values():
                path = file_path(asset["href"])
                assert path is not None
                asset["href"] = path.resolve().relative_to(root).as_posix()
            task = DayTask(feature, product["collection"], bool(product["unpack"]))
            tasks.setdefault((task.collection, task.item_id), task)
    return list(tasks.values())


def served_tasks(day: Sequence[DayTask], base: str, auth: Auth | None = None) -> list[StageTask]:
    """Stage tasks whose hrefs point at ``base/files/<rel>``."""
    out = []
    for task in day:
        feature = json.loads(json.dumps(task.feature))
        for asset in feature["assets"].values():
            asset["href"] = f"{base}/files/{asset['href']}"
        item = pystac.Item.from_dict(feature)
        out.append(StageTask(item, task.collection, SOURCE, auth=auth, unpack=task.unpack))
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tar_members(data: bytes, into: PurePosixPath) -> Iterator[tuple[PurePosixPath, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for info in tf:
            if info.isreg():
                member = tf.extractfile(info)
                assert member is not None
                yield from _unpacked(into / info.name, member.read())


def _unpacked(path: PurePosixPath, data: bytes) -> Iterator[tuple[PurePosixPath, bytes]]:
    """Nested tar/tgz members are unpacked next to themselves, as the Stager does."""
    if path.name.lower().endswith((".tar", ".tgz", ".tar.gz")):
        yield from _tar_members(data, path.parent)
    else:
        yield path, data


def archive_members(data: bytes, name: str) -> dict[str, str]:
    """``{member path: sha256}`` of the regular files an archive unpacks to."""
    members: dict[str, str] = {}
    if name.lower().endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    for path, body in _unpacked(PurePosixPath(info.filename), zf.read(info)):
                        members[path.as_posix()] = sha256(body)
    else:
        for path, body in _tar_members(data, PurePosixPath()):
            members[path.as_posix()] = sha256(body)
    return members


def expected_files(day: Sequence[DayTask], sample: Path) -> dict[str, str]:
    """``{storage key: sha256 of the source bytes}`` for every file the day stores."""
    expected: dict[str, str] = {}
    for task in day:
        for key, raw in task.feature["assets"].items():
            data = (sample / raw["href"]).read_bytes()
            name = asset_filename(key, pystac.Asset.from_dict(raw))
            announced = raw.get("file:checksum")
            algorithm = Checksum.parse(announced).algorithm if announced else "sha256"
            generation = hashlib.new(algorithm, data).hexdigest()[:16]  # the digest's first 16
            prefix = f"{task.collection}/{task.item_id}/{generation}"
            if task.unpack and name.lower().endswith((".zip", ".tar", ".tgz", ".tar.gz")):
                for member, digest in archive_members(data, name).items():
                    expected[f"{prefix}/{member}"] = digest
            else:
                expected[f"{prefix}/{name}"] = sha256(data)
    return expected


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of the files under ``root``; tolerates a tree that is changing."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            yield path.relative_to(root).as_posix(), path


def visible_files(storage: Path) -> dict[str, Path]:
    """Files under a final name: no path component is hidden (``.x.part``, ``.x.work``)."""
    return {
        rel: path
        for rel, path in _files(storage)
        if not any(part.startswith(".") for part in rel.split("/"))
    }


def leftovers(storage: Path) -> list[str]:
    """Hidden ``.part`` files and ``.work`` trees left behind (e.g. by a killed run)."""
    found = {rel for rel, _ in _files(storage) if rel.endswith(".part")}
    for folder, dirs, _ in os.walk(storage):
        found |= {
            (Path(folder) / d).relative_to(storage).as_posix() for d in dirs if d.endswith(".work")
        }
    return sorted(found)


def storage_problems(storage: Path, expected: dict[str, str]) -> list[str]:
    """Every visible file must be one the day stores, with the source's bytes."""
    problems = []
    for rel, path in sorted(visible_files(storage).items()):
        if rel.endswith(".part"):
            problems.append(f"{rel}: a .part file under a final name")
        elif rel not in expected:
            problems.append(f"{rel}: not a file of the day")
        elif sha256(path.read_bytes()) != expected[rel]:
            problems.append(f"{rel}: bytes differ from the source")
    return problems


@dataclass
class CatalogState:
    """What a local catalog holds: items per collection, its links, and what is wrong."""

    items: dict[str, set[str]]
    links: dict[str, list[str]]
    problems: list[str]


def check_catalog(catalog: Path, storage: Path, expected: dict[str, str]) -> CatalogState:
    """Every registered asset must exist in storage and match its ``file:size`` and
    ``file:checksum`` (re-hashed from disk) and the source bytes."""
    items: dict[str, set[str]] = {}
    links: dict[str, list[str]] = {}
    problems: list[str] = []
    for coll_file in sorted(catalog.glob("*/collection.json")):
        coll = coll_file.parent.name
        doc = json.loads(coll_file.read_text())
        links[coll] = [lk["href"] for lk in doc["links"] if lk.get("rel") == "item"]
        items[coll] = set()
        for item_file in sorted(coll_file.parent.glob("*/*.json")):
            if item_file.name.startswith("."):
                continue
            item = json.loads(item_file.read_text())
            items[coll].add(item["id"])
            for key, asset in item["assets"].items():
                problems.extend(_asset_problems(f"{coll}/{item['id']}:{key}", asset, storage))
                path = file_path(asset["href"])
                rel = path.relative_to(storage).as_posix() if path else ""
                if path and path.is_file() and expected.get(rel) != sha256(path.read_bytes()):
                    problems.append(f"{coll}/{item['id']}:{key}: not the source's bytes")
    return CatalogState(items, links, problems)


def _asset_problems(where: str, asset: dict[str, Any], storage: Path) -> list[str]:
    href = asset["href"]
    if urlparse(href).scheme != "file":
        return [f"{where}: href {href} is not in our storage"]
    path = file_path(href)
    assert path is not None
    if not path.resolve().is_relative_to(storage.resolve()):
        return [f"{where}: href {href} is outside the storage root"]
    if not path.is_file():
        return [f"{where}: href {href} points at a missing file"]
    data = path.read_bytes()
    problems = []
    if len(data) != asset.get("file:size"):
        problems.append(f"{where}: {len(data)} bytes on disk, file:size {asset.get('file:size')}")
    checksum = Checksum.parse(str(asset.get("file:checksum")))
    hasher = new_hasher(checksum.algorithm)
    hasher.update(data)
    if hasher.hexdigest() != checksum.hexdigest:
        problems.append(f"{where}: file:checksum does not match the bytes on disk")
    return problems
