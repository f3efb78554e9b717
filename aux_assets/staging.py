"""Staging: dedupe against the catalog, transfer, verify, optionally unpack, register.

Invariants (architecture.md, section 7):
- a file appears under its final name only complete and verified (the transfer engine streams
  into a ``.part`` file and verifies size and checksum; the storage commits it atomically);
- an item is registered only after all its selected assets are stored and verified; its
  asset hrefs point at our storage, the source asset is kept as ``alternate.source``, and
  ``file:checksum`` is a multihash;
- ids and asset keys become paths only after validation; ``file://`` hrefs are read only
  from local sources;
- every failure is reported per item; what succeeded is kept; a re-run stages only what is
  missing. Two runs of the same items use distinct ``.part`` files and idempotent upserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import pystac

from aux_assets.archives import (
    ArchiveError,
    ExtractedFile,
    Limits,
    extract_archive,
    is_archive,
    strip_archive_suffix,
)
from aux_assets.catalog import Catalog
from aux_assets.checksums import Checksum, ChecksumError
from aux_assets.gates import OpenGate, SourceGate, admitted
from aux_assets.names import UnsafeNameError, check_collection_id, check_item_id, check_safe_name
from aux_assets.storage import Storage
from aux_assets.transfer import (
    Auth,
    RetryPolicy,
    TransferEngine,
    TransferError,
    TransferRequest,
    TransferResult,
    strip_userinfo,
)

Status = Literal["staged", "present", "failed"]
ALTERNATE_EXT = "https://stac-extensions.github.io/alternate-assets/v1.2.0/schema.json"
FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
DEFAULT_CONNECTIONS = 8  # per source, when ``limits`` does not name it


@dataclass(frozen=True)
class StageTask:
    """One selected source item to stage into ``collection``."""

    item: pystac.Item
    collection: str
    source: str
    local_source: bool = False
    auth: Auth | None = None
    asset_keys: tuple[str, ...] | None = None
    unpack: bool = False


@dataclass
class AssetOutcome:
    """Where one asset now lives, with its verified size and checksum."""

    key: str
    href: str
    size: int
    checksum: str
    source_href: str


@dataclass
class ItemOutcome:
    """What happened to one item."""

    item_id: str
    collection: str
    source: str
    status: Status
    reason: str | None = None
    assets: list[AssetOutcome] = field(default_factory=list)
    bytes_transferred: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "collection": self.collection,
            "source": self.source,
            "status": self.status,
            "reason": self.reason,
            "bytes_transferred": self.bytes_transferred,
            "assets": [vars(a) for a in self.assets],
        }


@dataclass
class _Planned:
    """An item to transfer: its validated assets and their storage keys."""

    task: StageTask
    assets: dict[str, pystac.Asset]
    keys: dict[str, str]
    requests: dict[str, TransferRequest] = field(default_factory=dict)


class _ItemFailed(Exception):
    """An item that cannot be staged; the message is its reason."""


@dataclass
class _Ready:
    """A verified asset ready to commit: its file, or the tree it was unpacked into."""

    source_key: str
    source: pystac.Asset
    result: TransferResult
    storage_key: str
    key: str = ""
    tree: Path | None = None
    files: list[ExtractedFile] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = self.key or self.source_key


def asset_filename(key: str, asset: pystac.Asset) -> str:
    """The file name of an asset in storage: its key when it looks like a file name, else the
    last segment of its href when that does, else the key."""
    if "." in key.strip("."):
        return check_safe_name(key, "asset key")
    tail = PurePosixPath(unquote(urlparse(asset.href).path)).name
    with contextlib.suppress(UnsafeNameError):
        if "." in tail.strip(".") and check_safe_name(tail, "asset file name"):
            return tail
    return check_safe_name(key, "asset key")


def _source_checksum(asset: pystac.Asset) -> Checksum | None:
    value = asset.extra_fields.get("file:checksum")
    return Checksum.parse(str(value)) if value else None


def _alternate_source(asset: pystac.Asset) -> dict[str, Any]:
    """What a registered asset records of its source (``alternate.source``)."""
    source: dict[str, Any] = asset.extra_fields.get("alternate", {}).get("source", {})
    return source


def _registered_outcome(key: str, asset: pystac.Asset) -> AssetOutcome:
    return AssetOutcome(
        key,
        asset.href,
        int(asset.extra_fields.get("file:size", 0)),
        str(asset.extra_fields.get("file:checksum", "")),
        str(_alternate_source(asset).get("href", "")),
    )


def _registered_checksum(asset: pystac.Asset) -> Checksum | None:
    value = _alternate_source(asset).get("file:checksum") or asset.extra_fields.get("file:checksum")
    try:
        return Checksum.parse(str(value)) if value else None
    except ChecksumError:
        return None


class Stager:
    """Stages items into a catalog and a storage with one transfer engine per call."""

    def __init__(
        self,
        catalog: Catalog,
        storage: Storage,
        *,
        limits: Mapping[str, int] | None = None,
        retry: RetryPolicy | None = None,
        archive_limits: Limits | None = None,
        gate: SourceGate | None = None,
        read_timeout_s: float = 60.0,
    ) -> None:
        self.catalog = catalog
        self.storage = storage
        self.limits = dict(limits or {})
        self.gate = gate or OpenGate()
        self.read_timeout_s = read_timeout_s  # longest silence of a server mid-transfer
        self.retry = retry or RetryPolicy()
        self.archive_limits = archive_limits or Limits()

    def stage(self, tasks: Sequence[StageTask]) -> list[ItemOutcome]:
        """Stage ``tasks`` (duplicates by collection and id are staged once); outcomes follow
        the order of the first occurrence of each item."""
        unique: dict[tuple[str, str], StageTask] = {}
        for task in tasks:
            unique.setdefault((task.collection, task.item.id), task)
        outcomes: dict[tuple[str, str], ItemOutcome] = {}
        planned: list[_Planned] = []
        for key, task in unique.items():
            result = self._plan(task)
            if isinstance(result, ItemOutcome):
                outcomes[key] = result
            else:
                planned.append(result)
        todo = self._dedupe(planned, outcomes)
        results = asyncio.run(self._transfer(todo)) if todo else []
        registered: dict[str, list[tuple[_Planned, pystac.Item, ItemOutcome]]] = {}
        for plan, transfers in zip(todo, results, strict=True):
            outcome, item = self._finish(plan, transfers)
            outcomes[(plan.task.collection, plan.task.item.id)] = outcome
            if item is not None:
                registered.setdefault(plan.task.collection, []).append((plan, item, outcome))
        for collection, entries in registered.items():
            try:
                self.catalog.upsert(collection, [item for _, item, _ in entries])
            except Exception as exc:  # only the items the catalog did not store have failed
                failed = getattr(exc, "failed_ids", None)
                for _, item, outcome in entries:
                    if failed is None or item.id in failed:
                        outcome.status, outcome.reason = "failed", f"catalog registration: {exc}"
        return [outcomes[key] for key in unique]

    def _fail(self, task: StageTask, reason: str) -> ItemOutcome:
        return ItemOutcome(task.item.id, task.collection, task.source, "failed", reason)

    def _plan(self, task: StageTask) -> _Planned | ItemOutcome:
        """Validate names, the asset selection and hrefs: no I/O happens for a bad item."""
        try:
            check_item_id(task.item.id)
            check_collection_id(task.collection)
            assets = dict(task.item.assets)
            if task.asset_keys is not None:
                missing = [k for k in task.asset_keys if k not in assets]
                if missing:
                    return self._fail(
                        task,
                        f"asset(s) {', '.join(missing)} not in the item; it has "
                        f"{', '.join(sorted(assets)) or 'no assets'}",
                    )
                assets = {k: assets[k] for k in task.asset_keys}
            if not assets:
                return self._fail(task, "the item has no assets to stage")
            keys: dict[str, str] = {}
            for key, asset in assets.items():
                check_safe_name(key, "asset key")
                scheme = urlparse(asset.href).scheme
                if scheme == "file" and not task.local_source:
                    return self._fail(
                        task,
                        f"asset {key!r} has a file:// href but source '{task.source}' is remote; "
                        "only local sources may point at local files",
                    )
                if scheme not in {"http", "https", "file"}:
                    return self._fail(
                        task, f"asset {key!r} href scheme {scheme or 'none'!r} cannot be fetched"
                    )
                _source_checksum(asset)
                size = asset.extra_fields.get("file:size")
                if size is not None and (type(size) is not int or size < 0):
                    return self._fail(
                        task, f"asset {key!r} has file:size {size!r}; it must be an integer >= 0"
                    )
                keys[key] = f"{task.collection}/{task.item.id}/{asset_filename(key, asset)}"
        except (UnsafeNameError, ChecksumError) as exc:
            return self._fail(task, str(exc))
        if len(set(keys.values())) < len(keys):
            return self._fail(task, f"assets {', '.join(keys)} would be stored under one name")
        return _Planned(task, assets, keys)

    def _dedupe(
        self, planned: list[_Planned], outcomes: dict[tuple[str, str], ItemOutcome]
    ) -> list[_Planned]:
        """Drop items already registered (same id, same checksum where both have one, files
        present), with one batched catalog lookup per collection."""
        todo: list[_Planned] = []
        by_collection: dict[str, list[_Planned]] = {}
        for plan in planned:
            by_collection.setdefault(plan.task.collection, []).append(plan)
        for collection, plans in by_collection.items():
            try:
                self.catalog.ensure_collection(collection)
                existing = self.catalog.get_items(collection, [p.task.item.id for p in plans])
            except Exception as exc:  # the catalog is down or refuses: every item says why
                for plan in plans:
                    outcomes[(collection, plan.task.item.id)] = self._fail(
                        plan.task, f"catalog lookup in {self.catalog.describe()} failed: {exc}"
                    )
                continue
            for plan in plans:
                present = existing.get(plan.task.item.id)
                try:
                    same = present is not None and self._same(plan, present)
                except Exception as exc:  # e.g. the storage cannot be asked: this item says why
                    outcomes[(collection, plan.task.item.id)] = self._fail(
                        plan.task, f"checking the stored files failed: {exc}"
                    )
                    continue
                if present is not None and same:
                    outcomes[(collection, plan.task.item.id)] = ItemOutcome(
                        plan.task.item.id,
                        collection,
                        plan.task.source,
                        "present",
                        assets=[_registered_outcome(k, a) for k, a in present.assets.items()],
                    )
                else:
                    todo.append(plan)
        return todo

    def _same(self, plan: _Planned, present: pystac.Item) -> bool:
        registered = list(present.assets.values())
        if not registered or not all(self.storage.exists(a.href) for a in registered):
            return False
        ours = {str(_alternate_source(a).get("href")): a for a in registered}
        for asset in plan.assets.values():
            theirs = _source_checksum(asset)
            href = strip_userinfo(asset.href)
            mine = _registered_checksum(ours[href]) if href in ours else None
            if theirs is not None and mine is not None and theirs != mine:
                return False
        return True

    async def _transfer(
        self, plans: list[_Planned]
    ) -> list[dict[str, TransferResult | TransferError]]:
        for plan in plans:
            for key, asset in plan.assets.items():
                size = asset.extra_fields.get("file:size")
                plan.requests[key] = TransferRequest(
                    url=asset.href,
                    part_path=self.storage.part_path(plan.keys[key]),
                    expected_size=size,
                    expected_checksum=_source_checksum(asset),
                    pool=plan.task.source,
                    allow_file=plan.task.local_source,
                    auth=plan.task.auth,
                    expected_media_type=asset.media_type,
                )
        by_source: dict[str, list[TransferRequest]] = {}
        for plan in plans:
            by_source.setdefault(plan.task.source, []).extend(plan.requests.values())
        async with asyncio.TaskGroup() as group:
            fetches = [group.create_task(self._fetch_source(s, r)) for s, r in by_source.items()]
        done: dict[int, TransferResult | TransferError] = {}
        for fetch in fetches:
            done.update(fetch.result())
        return [{key: done[id(req)] for key, req in plan.requests.items()} for plan in plans]

    async def _fetch_source(
        self, source: str, requests: list[TransferRequest]
    ) -> dict[int, TransferResult | TransferError]:
        """Transfer one source's files once the gate admits this run to the source."""
        wanted = self.limits.get(source, DEFAULT_CONNECTIONS)
        async with admitted(self.gate, source, wanted) as granted:
            engine = TransferEngine(
                limits={source: granted}, retry=self.retry, read_timeout=self.read_timeout_s
            )
            try:
                results = await engine.fetch_all(requests)
            finally:
                await engine.aclose()
        return {id(req): result for req, result in zip(requests, results, strict=True)}

    def _finish(
        self, plan: _Planned, transfers: dict[str, TransferResult | TransferError]
    ) -> tuple[ItemOutcome, pystac.Item | None]:
        """Unpack what must be, then commit every verified file of the item and build its
        catalog item; nothing is committed unless every asset is ready."""
        task = plan.task
        results = [r for r in transfers.values() if isinstance(r, TransferResult)]
        received = sum(r.bytes_received for r in results)
        errors = [f"{k}: {r}" for k, r in transfers.items() if isinstance(r, TransferError)]
        ready: list[_Ready] = []
        try:
            if errors:
                raise _ItemFailed("; ".join(errors))
            for key, result in transfers.items():
                assert isinstance(result, TransferResult)
                ready.append(self._prepare(plan, key, result))
            _check_collisions(ready)
            assets = {r.key: self._commit(plan, r) for r in ready}
        except Exception as exc:
            for result in results:
                result.request.part_path.unlink(missing_ok=True)
            for entry in ready:
                if entry.tree is not None:
                    shutil.rmtree(entry.tree, ignore_errors=True)
            reason = (
                str(exc)
                if isinstance(exc, _ItemFailed | ArchiveError | OSError)
                else (f"{type(exc).__name__}: {exc}")
            )
            failed = self._fail(task, reason)
            failed.bytes_transferred = received
            return failed, None
        item = copy.deepcopy(task.item)
        item.clear_links()
        item.collection_id = task.collection
        item.assets = assets
        for ext in (FILE_EXT, ALTERNATE_EXT):
            if ext not in item.stac_extensions:
                item.stac_extensions.append(ext)
        outcome = ItemOutcome(task.item.id, task.collection, task.source, "staged")
        outcome.bytes_transferred = received
        outcome.assets = [
            AssetOutcome(
                r.key,
                assets[r.key].href,
                int(assets[r.key].extra_fields["file:size"]),
                str(assets[r.key].extra_fields["file:checksum"]),
                strip_userinfo(r.source.href),
            )
            for r in ready
        ]
        return outcome, item

    def _prepare(self, plan: _Planned, key: str, result: TransferResult) -> _Ready:
        """A verified asset, unpacked into a scratch tree when asked (nothing committed)."""
        storage_key = plan.keys[key]
        name = storage_key.rsplit("/", 1)[1]
        ready = _Ready(key, plan.assets[key], result, storage_key)
        if plan.task.unpack and is_archive(name):
            tree = self.storage.scratch_dir(storage_key)
            ready.files = extract_archive(result.request.part_path, tree, self.archive_limits, name)
            ready.tree = tree
            if not ready.files:
                raise ArchiveError(f"{name}: the archive is empty")
            ready.key = strip_archive_suffix(key)
        return ready

    def _commit(self, plan: _Planned, ready: _Ready) -> pystac.Asset:
        """Commit one verified file (or its unpacked tree); return the registered asset."""
        result = ready.result
        if ready.tree is None:
            href = self.storage.commit(result.request.part_path, ready.storage_key)
            asset = _asset(ready.source, href, result.size, result.checksum)
        else:
            prefix = ready.storage_key.rsplit("/", 1)[0]
            hrefs = self.storage.commit_tree(ready.tree, prefix)
            result.request.part_path.unlink(missing_ok=True)
            largest = min(ready.files, key=lambda f: (-f.size, f.path.as_posix()))
            checksum = Checksum("sha256", largest.sha256)
            asset = _asset(ready.source, hrefs[largest.path.as_posix()], largest.size, checksum)
            asset.media_type = None
        # a password in a source href is neither sent (see transfer.py) nor registered
        alternate: dict[str, Any] = {"href": strip_userinfo(ready.source.href)}
        for name in ("file:size", "file:checksum"):
            if name in ready.source.extra_fields:
                alternate[name] = ready.source.extra_fields[name]
        asset.extra_fields["alternate"] = {"source": alternate}
        return asset


def _asset(source: pystac.Asset, href: str, size: int, checksum: Checksum) -> pystac.Asset:
    """The registered asset: the source's fields, our href, the verified size and checksum."""
    extra = {k: v for k, v in source.extra_fields.items() if not k.startswith("file:")}
    extra.update({"file:size": size, "file:checksum": checksum.multihash()})
    return pystac.Asset(
        href=href,
        title=source.title,
        description=source.description,
        media_type=source.media_type,
        roles=source.roles,
        extra_fields=extra,
    )


def _check_collisions(ready: Sequence[_Ready]) -> None:
    """Refuse an item whose assets (or unpacked members) would write the same file."""
    owners: dict[str, str] = {}
    for entry in ready:
        name = entry.storage_key.rsplit("/", 1)[1]
        paths = [f.path.as_posix() for f in entry.files] if entry.tree is not None else [name]
        for path in paths:
            if path in owners:
                raise _ItemFailed(
                    f"assets {owners[path]!r} and {entry.source_key!r} would both write {path!r}"
                )
            owners[path] = entry.source_key
