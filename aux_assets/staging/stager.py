"""Staging: dedupe against the catalog, transfer, verify, optionally unpack, register.

Invariants (docs/design/staging.md):
- a file appears under its final name only complete and verified (the transfer engine streams
  into a ``.part`` file and verifies size and checksum; the storage commits it atomically);
- an item is registered only after all its selected assets are stored and verified; its
  asset hrefs point at our storage, the source asset is kept as ``alternate.source``, and
  ``file:checksum`` is a multihash;
- ids and asset keys become paths only after validation; ``file://`` hrefs are read only
  from local sources;
- every failure is reported per item; what succeeded is kept; a re-run stages only what is
  missing. Two runs of the same items use distinct ``.part`` files and idempotent upserts;
  a run holds a source (its gate) until the items it fetched from it are registered, and a
  run that had to wait for the source looks the catalog up again before transferring;
- dead ``.part`` files and ``.work`` folders of killed runs are swept from the folders of the
  items being staged (:func:`aux_assets.storage.base.sweep_leftovers`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

import pystac

from aux_assets import tracing
from aux_assets.auth import Auth
from aux_assets.catalog.base import Catalog
from aux_assets.documents import SearchDocument, StagedItem, Status
from aux_assets.sources.profiles import DEFAULT_MAX_CONNECTIONS, profile
from aux_assets.staging.archives import (
    ArchiveError,
    ExtractedFile,
    Limits,
    extract_archive,
    is_archive,
    strip_archive_suffix,
)
from aux_assets.staging.gates import OpenGate, SourceGate, admitted
from aux_assets.staging.items import (
    alternate_source,
    asset_filename,
    eviction,
    registered_asset,
    registered_checksum,
    registered_item,
    source_checksum,
    storage_key,
)
from aux_assets.staging.transfer import (
    TransferEngine,
    TransferError,
    TransferRequest,
    TransferResult,
)
from aux_assets.storage.base import LEFTOVER_MAX_AGE_S, Storage, StorageError
from aux_assets.utils.checksums import Checksum, ChecksumError
from aux_assets.utils.names import (
    UnsafeNameError,
    check_collection_id,
    check_item_id,
    check_safe_name,
)
from aux_assets.utils.retry import RetryPolicy
from aux_assets.utils.stac import read_item
from aux_assets.utils.tasks import run_all
from aux_assets.utils.urls import href_file_name, redact_url, strip_userinfo

if TYPE_CHECKING:
    from opentelemetry.trace import Span

_log = logging.getLogger(__name__)


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


def stage_tasks(
    documents: Iterable[SearchDocument], source: Callable[[str], tuple[bool, Auth | None]]
) -> list[StageTask]:
    """The items search documents selected, as stage tasks. Items found in our own catalog are
    not staged again; where an entry names no assets, its source's default assets are staged
    (:mod:`aux_assets.sources.profiles`). ``source(name)`` tells whether a source is local and
    gives its credentials. An item selected on several days becomes one task (the first; the
    stager stages each item once)."""
    tasks: list[StageTask] = []
    seen: set[tuple[str, str]] = set()
    for doc in documents:
        for product in doc["products"]:
            special = profile(product["source"])
            if special.ours:
                continue
            local, auth = source(special.name)
            assets = product["assets"]
            keys = tuple(assets) if assets is not None else special.default_assets
            for feature in product["selected"]["features"]:
                if (product["collection"], feature["id"]) in seen:
                    continue
                seen.add((product["collection"], feature["id"]))
                tasks.append(
                    StageTask(
                        item=read_item(feature),
                        collection=product["collection"],
                        source=special.name,
                        local_source=local,
                        auth=auth,
                        asset_keys=keys,
                        unpack=product["unpack"],
                    )
                )
    return tasks


@dataclass
class AssetOutcome:
    """Where one asset now lives, with its verified size and checksum."""

    key: str
    href: str
    size: int
    checksum: str
    source_href: str

    @classmethod
    def registered(cls, key: str, asset: pystac.Asset) -> AssetOutcome:
        """The outcome of an asset as the catalog holds it."""
        return cls(
            key,
            asset.href,
            int(asset.extra_fields.get("file:size", 0)),
            str(asset.extra_fields.get("file:checksum", "")),
            str(alternate_source(asset).get("href", "")),
        )


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

    def to_json(self) -> StagedItem:
        return {
            "item_id": self.item_id,
            "collection": self.collection,
            "source": self.source,
            "status": self.status,
            "reason": self.reason,
            "bytes_transferred": self.bytes_transferred,
            "assets": [
                {
                    "key": a.key,
                    "href": a.href,
                    "size": a.size,
                    "checksum": a.checksum,
                    "source_href": a.source_href,
                }
                for a in self.assets
            ],
        }


@dataclass
class _Accepted:
    """An item that passed the checks: its validated assets and their storage keys."""

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


class Stager:
    """Stages items into a catalog and a storage with one transfer engine per source and call.

    ``swept`` counts the dead leftovers (``.part`` files, ``.work`` folders older than
    ``leftover_max_age_s``) this stager removed.
    """

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
        leftover_max_age_s: float = LEFTOVER_MAX_AGE_S,
    ) -> None:
        self.catalog = catalog
        self.storage = storage
        self.limits = dict(limits or {})
        self.gate = gate or OpenGate()
        self.read_timeout_s = read_timeout_s  # longest silence of a server mid-transfer
        self.retry = retry or RetryPolicy()
        self.archive_limits = archive_limits or Limits()
        self.leftover_max_age_s = leftover_max_age_s
        self.swept = 0
        self._catalog_lock = threading.Lock()  # sources register from threads; clients are sync

    def stage(self, tasks: Sequence[StageTask]) -> list[ItemOutcome]:
        """Stage ``tasks`` (duplicates by collection and id are staged once); outcomes follow
        the order of the first occurrence of each item."""
        unique: dict[tuple[str, str], StageTask] = {}
        for task in tasks:
            unique.setdefault((task.collection, task.item.id), task)
        outcomes: dict[tuple[str, str], ItemOutcome] = {}
        accepted: list[_Accepted] = []
        for key, task in unique.items():
            result = self._check(task)
            if isinstance(result, ItemOutcome):
                outcomes[key] = result
            else:
                accepted.append(result)
        self.swept += self.storage.sweep(
            (key for work in accepted for key in work.keys.values()), self.leftover_max_age_s
        )
        todo = [w for w in self._dedupe(accepted, outcomes) if not self._evicted(w, outcomes)]
        for outcome in asyncio.run(self._stage_sources(todo)) if todo else []:
            outcomes[(outcome.collection, outcome.item_id)] = outcome
        return [outcomes[key] for key in unique]

    def _fail(self, task: StageTask, reason: str) -> ItemOutcome:
        return ItemOutcome(task.item.id, task.collection, task.source, "failed", reason)

    def _check(self, task: StageTask) -> _Accepted | ItemOutcome:
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
                source_checksum(asset)
                size = asset.extra_fields.get("file:size")
                if size is not None and (type(size) is not int or size < 0):
                    return self._fail(
                        task, f"asset {key!r} has file:size {size!r}; it must be an integer >= 0"
                    )
                keys[key] = storage_key(task.collection, task.item.id, asset_filename(key, asset))
        except (UnsafeNameError, ChecksumError) as exc:
            return self._fail(task, str(exc))
        if len(set(keys.values())) < len(keys):
            return self._fail(task, f"assets {', '.join(keys)} would be stored under one name")
        return _Accepted(task, assets, keys)

    def _dedupe(
        self, accepted: list[_Accepted], outcomes: dict[tuple[str, str], ItemOutcome]
    ) -> list[_Accepted]:
        """Drop items already registered (same id, same checksum where both have one, files
        present), with one batched catalog lookup per collection."""
        todo: list[_Accepted] = []
        for collection, batch in _grouped(accepted, "collection").items():
            try:
                self.catalog.ensure_collection(collection)
                existing = lookup_items(self.catalog, collection, [p.task.item.id for p in batch])
            except Exception as exc:  # the catalog is down or refuses: every item says why
                for work in batch:
                    outcomes[(collection, work.task.item.id)] = self._fail(
                        work.task, f"catalog lookup in {self.catalog.describe()} failed: {exc}"
                    )
                continue
            for work in batch:
                try:
                    present = self._present(work, existing)
                except Exception as exc:  # e.g. the storage cannot be asked: this item says why
                    outcomes[(collection, work.task.item.id)] = self._fail(
                        work.task, f"checking the stored files failed: {exc}"
                    )
                    continue
                if present is not None:
                    outcomes[(collection, work.task.item.id)] = present
                else:
                    todo.append(work)
        return todo

    def _evicted(self, work: _Accepted, outcomes: dict[tuple[str, str], ItemOutcome]) -> bool:
        """Whether an item to transfer has a file its source already evicted (it fails alone,
        before any transfer, saying when)."""
        now = datetime.now(UTC)
        for key, asset in work.assets.items():
            when = eviction(asset)
            if when is not None and when <= now:
                outcomes[(work.task.collection, work.task.item.id)] = self._fail(
                    work.task,
                    f"asset {key!r} was evicted from source '{work.task.source}' on "
                    f"{when.isoformat()}: it can no longer be downloaded there",
                )
                return True
        return False

    def _present(self, work: _Accepted, existing: Mapping[str, pystac.Item]) -> ItemOutcome | None:
        """The ``present`` outcome of an item registered with the same files, else ``None``."""
        present = existing.get(work.task.item.id)
        if present is None or not self._same(work, present):
            return None
        return ItemOutcome(
            work.task.item.id,
            work.task.collection,
            work.task.source,
            "present",
            assets=[AssetOutcome.registered(k, a) for k, a in present.assets.items()],
        )

    def _recheck(
        self, source: str, batch: list[_Accepted]
    ) -> tuple[list[_Accepted], list[ItemOutcome]]:
        """After waiting for ``source``: split ``batch`` into those to transfer and the
        ``present`` outcomes of items another run registered meanwhile, with one batched lookup
        per collection. If a lookup fails, its items are transferred (the first lookup passed)."""
        todo: list[_Accepted] = []
        present: list[ItemOutcome] = []
        for collection, group in _grouped(batch, "collection").items():
            try:
                with self._catalog_lock:
                    ids = [p.task.item.id for p in group]
                    existing = lookup_items(self.catalog, collection, ids)
                found = [(work, self._present(work, existing)) for work in group]
            except Exception as exc:  # the type only: a message may quote a URL or a reply
                _log.warning(
                    "looking up %d item(s) of %s again in %s after waiting for source %s failed "
                    "(%s): transferring them",
                    len(group),
                    collection,
                    self.catalog.describe(),
                    source,
                    type(exc).__name__,
                )
                todo.extend(group)
                continue
            for work, outcome in found:
                if outcome is None:
                    todo.append(work)
                else:
                    present.append(outcome)
        return todo, present

    def _same(self, work: _Accepted, present: pystac.Item) -> bool:
        """Whether ``present`` has every file and the checksums the source announces now.

        A registered asset is matched to its source asset by ``alternate.source``, else (a
        catalog that rewrites ``alternate``, such as rs-server-catalog) by its key or the file
        name it is stored under.
        """
        registered = list(present.assets.values())
        if not registered or not all(self._stored(a.href) for a in registered):
            return False
        ours = {str(alternate_source(a).get("href")): a for a in registered}
        by_name = {href_file_name(a.href): a for a in registered}
        for key, asset in work.assets.items():
            theirs = source_checksum(asset)
            href = strip_userinfo(asset.href)
            match = (
                ours.get(href)
                or present.assets.get(key)
                or by_name.get(href_file_name(work.keys[key]))
            )
            mine = registered_checksum(match) if match is not None else None
            if theirs is None or mine is None or theirs.algorithm != mine.algorithm:
                continue
            if theirs != mine:
                return False
        return True

    def _stored(self, href: str) -> bool:
        """Whether the file of a registered href exists. A catalog that moved it into storage
        of its own (rs-server-catalog) vouches for it when our credentials cannot look there."""
        try:
            return self.storage.exists(href)
        except StorageError as exc:
            if not self.catalog.relocates:
                raise
            _log.warning(
                "cannot check %s in the catalog's storage (%s): trusting %s",
                redact_url(href),
                type(exc).__name__,
                self.catalog.describe(),
            )
            return True

    async def _stage_sources(self, batch: list[_Accepted]) -> list[ItemOutcome]:
        """Stage each source's items concurrently; the outcomes of all of them."""
        by_source = _grouped(batch, "source").items()
        staged = await run_all(self._stage_source(s, p) for s, p in by_source)
        return [outcome for outcomes in staged for outcome in outcomes]

    async def _stage_source(self, source: str, batch: list[_Accepted]) -> list[ItemOutcome]:
        """:meth:`_stage_admitted` in a span ``aux.stage`` (source, items, outcomes, bytes)."""
        with tracing.span("aux.stage", {"aux.source": source, "aux.items": len(batch)}) as opened:
            outcomes = await self._stage_admitted(source, batch)
            if opened is not None:
                _annotate_staging(opened, outcomes)
        return outcomes

    async def _stage_admitted(self, source: str, batch: list[_Accepted]) -> list[ItemOutcome]:
        """Once the gate admits this run to ``source``: if it had to wait, drop the items another
        run registered meanwhile; transfer, commit and register the rest, then release the
        source, so that a run waiting for it finds them registered."""
        wanted = self.limits.get(source, DEFAULT_MAX_CONNECTIONS)
        present: list[ItemOutcome] = []
        async with admitted(self.gate, source, wanted) as admission:
            if admission.waited:
                batch, present = await asyncio.to_thread(self._recheck, source, batch)
            if not batch:
                return present
            transfers = await self._fetch(source, batch, admission.connections)
            return present + await asyncio.to_thread(self._register, batch, transfers)

    async def _fetch(
        self, source: str, batch: list[_Accepted], connections: int
    ) -> list[dict[str, TransferResult | TransferError]]:
        """Transfer the assets of ``batch`` from ``source`` over ``connections`` connections."""
        for work in batch:
            for key, asset in work.assets.items():
                size = asset.extra_fields.get("file:size")
                work.requests[key] = TransferRequest(
                    url=asset.href,
                    part_path=self.storage.part_path(work.keys[key]),
                    expected_size=size,
                    expected_checksum=source_checksum(asset),
                    pool=work.task.source,
                    allow_file=work.task.local_source,
                    auth=work.task.auth,
                    expected_media_type=asset.media_type,
                )
        engine = TransferEngine(
            limits={source: connections}, retry=self.retry, read_timeout=self.read_timeout_s
        )
        try:
            results = iter(await engine.fetch_all([r for p in batch for r in p.requests.values()]))
        finally:
            await engine.aclose()
        return [{key: next(results) for key in work.requests} for work in batch]

    def _register(
        self, batch: list[_Accepted], transfers: list[dict[str, TransferResult | TransferError]]
    ) -> list[ItemOutcome]:
        """Commit each item's files and register the items, one bulk upsert per collection."""
        outcomes: list[ItemOutcome] = []
        registered: dict[str, list[tuple[pystac.Item, ItemOutcome]]] = {}
        for work, transferred in zip(batch, transfers, strict=True):
            outcome, item = self._finish(work, transferred)
            outcomes.append(outcome)
            if item is not None:
                registered.setdefault(work.task.collection, []).append((item, outcome))
        for collection, entries in registered.items():
            attributes: tracing.Attributes = {
                "aux.catalog": tracing.safe_text(self.catalog.describe()),
                "aux.collection": collection,
                "aux.items": len(entries),
            }
            with tracing.span("aux.catalog.register", attributes) as opened:
                try:
                    with self._catalog_lock:
                        self.catalog.upsert(collection, [item for item, _ in entries])
                except Exception as exc:  # only the items the catalog did not store have failed
                    tracing.fail(opened, exc)
                    failed = getattr(exc, "failed_ids", None)
                    reasons: dict[str, str] = getattr(exc, "reasons", {})
                    for item, outcome in entries:
                        if failed is None or item.id in failed:
                            outcome.status = "failed"
                            reason = reasons.get(item.id) or str(exc)
                            outcome.reason = f"catalog registration: {reason}"
            if self.catalog.relocates:
                self._read_back(collection, [o for _, o in entries if o.status == "staged"])
        return outcomes

    def _read_back(self, collection: str, outcomes: list[ItemOutcome]) -> None:
        """Where a catalog that moves files into storage of its own put them: each staged
        asset's href, matched by file name, with one lookup (an error is logged: the files are
        registered, only the report keeps our hrefs)."""
        if not outcomes:
            return
        try:
            with self._catalog_lock:
                stored = self.catalog.get_items(collection, [o.item_id for o in outcomes])
        except Exception as exc:  # the type only: a message may quote a URL or a reply
            _log.warning(
                "reading back %d registered item(s) of %s failed (%s): the report shows the "
                "hrefs we staged them at",
                len(outcomes),
                collection,
                type(exc).__name__,
            )
            return
        for outcome in outcomes:
            item = stored.get(outcome.item_id)
            hrefs = {href_file_name(a.href): a.href for a in item.assets.values()} if item else {}
            for asset in outcome.assets:
                asset.href = hrefs.get(href_file_name(asset.href), asset.href)

    def _finish(
        self, work: _Accepted, transfers: dict[str, TransferResult | TransferError]
    ) -> tuple[ItemOutcome, pystac.Item | None]:
        """Unpack what must be, then commit every verified file of the item and build its
        catalog item; nothing is committed unless every asset is ready."""
        task = work.task
        results = [r for r in transfers.values() if isinstance(r, TransferResult)]
        received = sum(r.bytes_received for r in results)
        errors = [f"{k}: {r}" for k, r in transfers.items() if isinstance(r, TransferError)]
        ready: list[_Ready] = []
        try:
            if errors:
                raise _ItemFailed("; ".join(errors))
            for key, result in transfers.items():
                assert isinstance(result, TransferResult)
                ready.append(self._prepare(work, key, result))
            _check_collisions(ready)
            assets = {r.key: self._commit(work, r) for r in ready}
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
        item = registered_item(task.item, task.collection, assets)
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

    def _prepare(self, work: _Accepted, key: str, result: TransferResult) -> _Ready:
        """A verified asset, unpacked into a scratch tree when asked (nothing committed)."""
        storage_key = work.keys[key]
        name = storage_key.rsplit("/", 1)[1]
        ready = _Ready(key, work.assets[key], result, storage_key)
        if work.task.unpack and is_archive(name):
            tree = self.storage.scratch_dir(storage_key)
            ready.files = extract_archive(result.request.part_path, tree, self.archive_limits, name)
            ready.tree = tree
            if not ready.files:
                raise ArchiveError(f"{name}: the archive is empty")
            ready.key = strip_archive_suffix(key)
        return ready

    def _commit(self, work: _Accepted, ready: _Ready) -> pystac.Asset:
        """Commit one verified file (or its unpacked tree); return the registered asset."""
        result = ready.result
        if ready.tree is None:
            href = self.storage.commit(result.request.part_path, ready.storage_key)
            return registered_asset(ready.source, href, result.size, result.checksum)
        prefix = ready.storage_key.rsplit("/", 1)[0]
        hrefs = self.storage.commit_tree(ready.tree, prefix)
        result.request.part_path.unlink(missing_ok=True)
        largest = min(ready.files, key=lambda f: (-f.size, f.path.as_posix()))
        href = hrefs[largest.path.as_posix()]
        checksum = Checksum("sha256", largest.sha256)
        return registered_asset(ready.source, href, largest.size, checksum, unpacked=True)


def _grouped(
    batch: Iterable[_Accepted], field: Literal["collection", "source"]
) -> dict[str, list[_Accepted]]:
    """``batch`` grouped by their task's ``field`` (``collection`` or ``source``), in order."""
    groups: dict[str, list[_Accepted]] = {}
    for work in batch:
        groups.setdefault(getattr(work.task, field), []).append(work)
    return groups


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


def lookup_items(catalog: Catalog, collection: str, ids: Sequence[str]) -> dict[str, pystac.Item]:
    """``catalog.get_items`` in a span ``aux.catalog.lookup`` (collection, ids asked, found)."""
    attributes: tracing.Attributes = {
        "aux.catalog": tracing.safe_text(catalog.describe()),
        "aux.collection": collection,
        "aux.items": len(ids),
    }
    with tracing.span("aux.catalog.lookup", attributes) as opened:
        found = catalog.get_items(collection, ids)
        tracing.annotate(opened, {"aux.items_found": len(found)})
    return found


def _annotate_staging(opened: Span, outcomes: Sequence[ItemOutcome]) -> None:
    """The outcomes of a source's staging on its span; ERROR when an item failed."""
    counts = {status: 0 for status in ("staged", "present", "failed")}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    opened.set_attributes(
        {
            **{f"aux.items.{status}": n for status, n in counts.items()},
            "aux.bytes": sum(o.bytes_transferred for o in outcomes),
        }
    )
    if counts["failed"]:
        tracing.fail(opened, f"{counts['failed']} of {len(outcomes)} item(s) failed")
