"""Staging: dedupe against the catalog, transfer, verify, optionally unpack, register.

Invariants (docs/design/staging.md):
- a file appears under its final name only complete and verified (the transfer engine streams
  into a ``.part`` file and verifies size and checksum; the storage commits it atomically);
- an item is registered only after all its selected assets are stored and verified; its
  asset hrefs point at our storage, the source asset is kept as ``alternate.source``, and
  ``file:checksum`` is a multihash;
- ids and asset keys become paths only after validation; ``file://`` hrefs are read only
  from local sources, and only inside their folders (symlinks resolved; the source's own folder
  and ``AUX_LOCAL_FILE_ROOTS``);
- a stored object never changes once a catalog entry points at it: files are committed under
  the generation of their digest (:func:`aux_assets.staging.items.generation_key`), the entry
  switches once the new version is registered, and only then are the generations it replaced
  removed (unless kept); a file stored but left unregistered is re-hashed and registered by the
  next run, not downloaded again;
- every failure is reported per item (a batch the catalog refuses is retried item by item);
  what succeeded is kept; a re-run stages only what is missing. Two runs of the same items use
  distinct ``.part`` files and idempotent upserts; a run holds a source (its gate) until the
  items it fetched from it are registered, and a run that had to wait for the source looks the
  catalog up again before transferring; a run claims each item it stages
  (:mod:`aux_assets.staging.claims`), and a run that finds an item claimed waits, then looks
  it up again;
- dead ``.part`` files and ``.work`` folders of killed runs are swept from the folders of the
  items being staged, and from the whole storage once an hour
  (:func:`aux_assets.storage.base.sweep_leftovers`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

import pystac

from aux_assets import tracing
from aux_assets.auth import Auth
from aux_assets.catalog.base import Catalog
from aux_assets.documents import SearchDocument, StagedItem, Status
from aux_assets.settings import DEFAULT_MAX_UNSIZED_BYTES, DEFAULT_TRANSFER_TIMEOUT_S
from aux_assets.sources.profiles import DEFAULT_MAX_CONNECTIONS, profile
from aux_assets.staging.archives import (
    ArchiveError,
    ExtractedFile,
    Limits,
    extract_archive,
    is_archive,
    strip_archive_suffix,
)
from aux_assets.staging.claims import ItemClaims, NoClaims
from aux_assets.staging.gates import (
    FIRST_POLL_S,
    MAX_POLL_S,
    OpenGate,
    SourceGate,
    admitted,
    slot_name,
)
from aux_assets.staging.items import (
    TEMP_NAME_BYTES,
    alternate_source,
    asset_filename,
    check_stored_key,
    eviction,
    generation_key,
    normal_assets,
    registered_asset,
    registered_checksum,
    registered_item,
    source_checksum,
    storage_key,
    version_root,
)
from aux_assets.staging.progress import (
    DEFAULT_INTERVAL_S,
    ItemKey,
    Log,
    Progress,
    Totals,
    duration_text,
    report_every,
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
    normal_name,
    same_after_nfc,
    spelling,
)
from aux_assets.utils.retry import RetryPolicy
from aux_assets.utils.stac import read_item
from aux_assets.utils.tasks import run_all
from aux_assets.utils.text import shorten, size_text
from aux_assets.utils.urls import (
    LocalURLError,
    confined_path,
    href_file_name,
    redact_url,
    redact_urls,
    strip_userinfo,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageTask:
    """One selected source item to stage into ``collection``; its ``file://`` hrefs are read
    only inside the folders ``file_roots`` (none: a remote source, no ``file://``)."""

    item: pystac.Item
    collection: str
    source: str
    file_roots: tuple[Path, ...] = ()
    auth: Auth | None = None
    asset_keys: tuple[str, ...] | None = None
    unpack: bool = False


def stage_tasks(
    documents: Iterable[SearchDocument],
    source: Callable[[str], tuple[tuple[Path, ...], Auth | None]],
) -> list[StageTask]:
    """The items search documents selected, as stage tasks. Items found in our own catalog are
    not staged again; where an entry names no assets, its source's default assets are staged
    (:mod:`aux_assets.sources.profiles`). ``source(name)`` gives the folders a source's
    ``file://`` hrefs may be read from (none for a remote source) and its credentials. An item
    selected on several days becomes one task (the first; the stager stages each item once)."""
    tasks: list[StageTask] = []
    seen: set[tuple[str, str]] = set()
    for doc in documents:
        for product in doc["products"]:
            special = profile(product["source"])
            if special.ours:
                continue
            file_roots, auth = source(special.name)
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
                        file_roots=file_roots,
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
    superseded: list[str] = field(default_factory=list)  # storage keys of replaced generations

    def to_json(self) -> StagedItem:
        document: StagedItem = {
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
        if self.superseded:
            document["superseded"] = list(self.superseded)
        return document


@dataclass(frozen=True)
class PlannedFile:
    """A file a dry run would transfer: from where, how many bytes (``None``: not announced),
    to where (``<digest>`` stands for a generation known only once the bytes are verified)."""

    key: str
    source_href: str
    size: int | None
    target: str


@dataclass(frozen=True)
class PlannedItem:
    """What staging would do with an item: transfer its ``files``, nothing (``present``), or
    refuse it (``failed``, with the reason)."""

    item_id: str
    collection: str
    source: str
    action: Literal["transfer", "present", "failed"]
    reason: str | None = None
    files: tuple[PlannedFile, ...] = ()

    @property
    def size(self) -> int:
        """The announced bytes of its files (unsized files count 0)."""
        return sum(f.size or 0 for f in self.files)


@dataclass
class _Accepted:
    """An item that passed the checks: its validated assets and their storage keys."""

    task: StageTask
    assets: dict[str, pystac.Asset]
    keys: dict[str, str]
    requests: dict[str, TransferRequest] = field(default_factory=dict)
    previous: pystac.Item | None = None  # the catalog's item when it was looked up
    reused: set[str] = field(default_factory=set)  # assets found stored, verified, unregistered
    spelled: str | None = None  # the source's spelling of the id, when it is not NFC
    results: dict[str, TransferResult | TransferError] = field(default_factory=dict)


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
    ``leftover_max_age_s``) this stager removed; ``totals`` are the numbers of the last
    :meth:`stage`. Each item's outcome is logged through ``log`` (a failure through ``warn``)
    when it is decided, and each source's progress at most every ``progress_interval_s``
    (:mod:`aux_assets.staging.progress`).
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
        transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S,
        max_unsized_bytes: int = DEFAULT_MAX_UNSIZED_BYTES,
        leftover_max_age_s: float = LEFTOVER_MAX_AGE_S,
        keep_superseded: bool = False,
        claims: ItemClaims | None = None,
        log: Log = _log.info,
        warn: Log = _log.warning,
        progress_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.catalog = catalog
        self.storage = storage
        self.limits = dict(limits or {})
        self.gate = gate or OpenGate()
        self.read_timeout_s = read_timeout_s  # longest silence of a server mid-transfer
        self.transfer_timeout_s = transfer_timeout_s  # longest transfer of a file, all attempts
        self.max_unsized_bytes = max_unsized_bytes  # largest file whose item gives no file:size
        self.retry = retry or RetryPolicy()
        self.archive_limits = archive_limits or Limits()
        self.leftover_max_age_s = leftover_max_age_s
        self.keep_superseded = keep_superseded  # keep the files of replaced item versions
        self.claims = claims or NoClaims()
        self.swept = 0
        self.log = log
        self.warn = warn
        if progress_interval_s <= 0:
            raise ValueError(f"progress_interval_s must be > 0, got {progress_interval_s}")
        self.progress_interval_s = progress_interval_s
        self.totals = Totals()
        self._catalog_lock = threading.Lock()  # sources register from threads; clients are sync

    def stage(self, tasks: Sequence[StageTask]) -> list[ItemOutcome]:
        """Stage ``tasks`` (duplicates by collection and id are staged once); outcomes follow
        the order of the first occurrence of each item."""
        started = time.monotonic()
        unique = _unique(tasks)
        progress: dict[str, Progress] = {}
        for task in unique.values():
            if task.source not in progress:
                progress[task.source] = Progress(task.source, slot_name(self.gate, task.source))
            progress[task.source].items += 1
        outcomes: dict[tuple[str, str], ItemOutcome] = {}  # by collection and NFC id
        refused, accepted = self._checked(unique)
        for outcome in refused.values():
            self._decided(progress[outcome.source], outcome)
        self.swept += self.storage.sweep(
            (key for work in accepted for key in work.keys.values()), self.leftover_max_age_s
        )
        todo = [w for w in self._dedupe(accepted, outcomes) if not self._evicted(w, outcomes)]
        for outcome in outcomes.values():
            self._decided(progress[outcome.source], outcome)
        for work in todo:
            progress[work.task.source].expect(_key(work), _announced(work))
        for outcome in asyncio.run(self._stage_sources(todo, progress)) if todo else []:
            outcomes[(outcome.collection, outcome.item_id)] = outcome
        for tracker in progress.values():
            self.log(tracker.summary())
        self.totals = Totals(
            len(unique), sum(t.bytes_done for t in progress.values()), time.monotonic() - started
        )
        return [refused.get(key) or outcomes[(key[0], normal_name(key[1]))] for key in unique]

    def plan(self, tasks: Sequence[StageTask]) -> list[PlannedItem]:
        """A dry run of :meth:`stage`: the same checks and catalog lookups (one per collection),
        then per item what would be transferred, without writing anything: no collection is
        created, nothing is swept, transferred or registered."""
        refused, accepted = self._checked(_unique(tasks))
        outcomes: dict[tuple[str, str], ItemOutcome] = {}
        deduped = self._dedupe(accepted, outcomes, create=False)
        todo = [w for w in deduped if not self._evicted(w, outcomes)]
        decided = [*refused.values(), *outcomes.values()]
        return [_planned(o) for o in decided] + [self._transfer_plan(work) for work in todo]

    def _transfer_plan(self, work: _Accepted) -> PlannedItem:
        files = []
        for key, asset in work.assets.items():
            checksum = source_checksum(asset)
            spool = work.keys[key]
            folder, _, name = spool.rpartition("/")
            target = (
                self.storage.href(generation_key(spool, checksum))
                if checksum
                else f"{self.storage.href(folder)}/<digest>/{name}"
            )
            size = asset.extra_fields.get("file:size")
            files.append(PlannedFile(key, redact_urls(asset.href), size, target))
        task = work.task
        return PlannedItem(
            task.item.id, task.collection, task.source, "transfer", files=tuple(files)
        )

    def _decided(
        self, progress: Progress, outcome: ItemOutcome, seconds: float | None = None
    ) -> None:
        """Log ``outcome`` if it is its item's first (once per item), in ``progress``."""
        if not progress.decide((outcome.collection, outcome.item_id), outcome.status):
            return
        name = f"{outcome.collection}/{outcome.item_id}"
        if outcome.status == "failed":
            reason = shorten(redact_urls(outcome.reason or "no reason given"))
            self.warn(f"{outcome.source}: failed {name}: {reason}")
            return
        took = f", {duration_text(seconds)}" if seconds is not None else ""
        size = size_text(sum(a.size for a in outcome.assets))
        self.log(f"{outcome.source}: {outcome.status} {name} ({size}{took})")

    def _checked(
        self, unique: Mapping[tuple[str, str], StageTask]
    ) -> tuple[dict[tuple[str, str], ItemOutcome], list[_Accepted]]:
        """:meth:`_check` of each task: the refused (by collection and id as spelled), and the
        accepted."""
        refused: dict[tuple[str, str], ItemOutcome] = {}
        accepted: list[_Accepted] = []
        spellings: dict[tuple[str, str], str] = {}
        for key, task in unique.items():
            result = self._check(task, spellings)
            if isinstance(result, ItemOutcome):
                refused[key] = result
            else:
                accepted.append(result)
        return refused, accepted

    def _fail(self, task: StageTask, reason: str) -> ItemOutcome:
        return ItemOutcome(task.item.id, task.collection, task.source, "failed", reason)

    def _check(
        self, task: StageTask, spellings: dict[tuple[str, str], str]
    ) -> _Accepted | ItemOutcome:
        """Validate names, the asset selection and hrefs: nothing is fetched or written for a bad
        item (``file://`` paths are only resolved).

        The id and asset keys are taken in NFC, and every name leaves room for the temporary
        names made from it (:data:`TEMP_NAME_BYTES`) and for the storage's key limit.
        ``spellings`` maps (collection, NFC id) to the first spelling of the run: a later,
        different spelling of the same id is refused.
        """
        try:
            spelled = check_item_id(task.item.id)  # a string, as NFC needs
            item_id = check_item_id(normal_name(spelled), TEMP_NAME_BYTES)
            check_collection_id(task.collection)
            first = spellings.setdefault((task.collection, item_id), spelled)
            if first != spelled:
                return self._fail(
                    task,
                    f"{same_after_nfc('item id', first, spelled)}; only the first spelling of "
                    "this run is staged",
                )
            assets = normal_assets(task.item)
            if task.asset_keys is not None:
                wanted = [normal_name(k) for k in task.asset_keys]
                missing = [k for k in wanted if k not in assets]
                if missing:
                    return self._fail(
                        task,
                        f"asset(s) {', '.join(missing)} not in the item; it has "
                        f"{', '.join(sorted(assets)) or 'no assets'}",
                    )
                assets = {k: assets[k] for k in wanted}
            if not assets:
                return self._fail(task, "the item has no assets to stage")
            keys: dict[str, str] = {}
            for key, asset in assets.items():
                check_safe_name(key, "asset key")
                scheme = urlparse(asset.href).scheme
                if scheme == "file" and not task.file_roots:
                    return self._fail(
                        task,
                        f"asset {key!r} has a file:// href but source '{task.source}' is remote; "
                        "only local sources may point at local files",
                    )
                try:
                    if scheme == "file":  # inside the source's folders, symlinks resolved
                        confined_path(asset.href, task.file_roots)
                except LocalURLError as exc:
                    return self._fail(task, f"asset {key!r}: {exc}")
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
                spool_key = storage_key(task.collection, item_id, asset_filename(key, asset))
                keys[key] = check_stored_key(key, spool_key, self.storage.max_key_bytes)
        except (UnsafeNameError, ChecksumError) as exc:
            return self._fail(task, str(exc))
        if len(set(keys.values())) < len(keys):
            return self._fail(task, f"assets {', '.join(keys)} would be stored under one name")
        if item_id == spelled:
            return _Accepted(task, assets, keys)
        item = task.item.clone()  # staged and registered under the NFC id
        item.id = item_id
        return _Accepted(replace(task, item=item), assets, keys, spelled=spelled)

    def _dedupe(
        self,
        accepted: list[_Accepted],
        outcomes: dict[tuple[str, str], ItemOutcome],
        *,
        create: bool = True,
    ) -> list[_Accepted]:
        """Drop items already registered (same id, same checksum where both have one, files
        present), with one batched catalog lookup per collection; the collections are created
        first unless not to ``create`` (a dry run writes nothing)."""
        todo: list[_Accepted] = []
        for collection, batch in _grouped(accepted, "collection").items():
            try:
                if create:
                    self.catalog.ensure_collection(collection)
                ids = [p.task.item.id for p in batch] + [p.spelled for p in batch if p.spelled]
                existing = lookup_items(self.catalog, collection, ids)
            except Exception as exc:  # the catalog is down or refuses: every item says why
                for work in batch:
                    outcomes[_key(work)] = self._fail(
                        work.task, f"catalog lookup in {self.catalog.describe()} failed: {exc}"
                    )
                continue
            for work in batch:
                if work.spelled in existing and work.task.item.id not in existing:
                    outcomes[_key(work)] = self._fail(
                        work.task,
                        f"{same_after_nfc('item id', work.spelled, work.task.item.id)}; the "
                        f"catalog has {spelling(work.spelled)!r} and items are staged under "
                        "their NFC id, which would make two look-alike items: remove the "
                        "catalog's item or register it again under its NFC id",
                    )
                    continue
                try:
                    present = self._present(work, existing)
                except Exception as exc:  # e.g. the storage cannot be asked: this item says why
                    outcomes[_key(work)] = self._fail(
                        work.task, f"checking the stored files failed: {exc}"
                    )
                    continue
                if present is not None:
                    outcomes[_key(work)] = present
                else:
                    work.previous = existing.get(work.task.item.id)
                    todo.append(work)
        return todo

    def _evicted(self, work: _Accepted, outcomes: dict[tuple[str, str], ItemOutcome]) -> bool:
        """Whether an item to transfer has a file its source already evicted (it fails alone,
        before any transfer, saying when)."""
        now = datetime.now(UTC)
        for key, asset in work.assets.items():
            when = eviction(asset)
            if when is not None and when <= now:
                outcomes[_key(work)] = self._fail(
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
                    work.previous = existing.get(work.task.item.id, work.previous)
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

    async def _stage_sources(
        self, batch: list[_Accepted], progress: Mapping[str, Progress]
    ) -> list[ItemOutcome]:
        """Stage each source's items concurrently, reporting their ``progress`` meanwhile; the
        outcomes of all of them."""
        by_source = _grouped(batch, "source").items()
        lines = report_every(progress.values(), self.progress_interval_s, self.log)
        reporter = asyncio.create_task(lines)
        try:
            staged = await run_all(self._stage_source(s, p, progress[s]) for s, p in by_source)
        finally:
            reporter.cancel()
        return [outcome for outcomes in staged for outcome in outcomes]

    async def _stage_source(
        self, source: str, batch: list[_Accepted], progress: Progress
    ) -> list[ItemOutcome]:
        """:meth:`_stage_admitted` in a span ``aux.stage`` (source, items, outcomes, bytes)."""
        with tracing.span("aux.stage", {"aux.source": source, "aux.items": len(batch)}) as opened:
            outcomes = await self._stage_admitted(source, batch, progress)
            if opened is not None:
                _annotate_staging(opened, outcomes)
        return outcomes

    async def _stage_admitted(
        self, source: str, batch: list[_Accepted], progress: Progress
    ) -> list[ItemOutcome]:
        """Once the gate admits this run to ``source``: if it had to wait, drop the items another
        run registered meanwhile; transfer, commit and register the rest, then release the
        source, so that a run waiting for it finds them registered."""
        wanted = self.limits.get(source, DEFAULT_MAX_CONNECTIONS)
        present: list[ItemOutcome] = []
        async with admitted(self.gate, source, wanted, progress.waiting) as admission:
            progress.admitted()
            if admission.waited:
                batch, present = await asyncio.to_thread(self._recheck, source, batch)
                for outcome in present:
                    self._decided(progress, outcome)
            staged = await self._stage_claimed(source, batch, admission.connections, progress)
            return present + staged

    async def _stage_claimed(
        self, source: str, batch: list[_Accepted], connections: int, progress: Progress
    ) -> list[ItemOutcome]:
        """Transfer, commit and register the items of ``batch`` this run claims; the items
        another run is staging are waited for, looked up again, and staged only if that run
        did not register them (:mod:`aux_assets.staging.claims`)."""
        outcomes: list[ItemOutcome] = []
        delay = FIRST_POLL_S
        contested = False
        while batch:
            held = await asyncio.to_thread(self.claims.claim, [_key(w) for w in batch])
            mine = [work for work in batch if _key(work) in held]
            batch = [work for work in batch if _key(work) not in held]
            try:
                if mine and contested:  # another run held them: it may have registered them
                    mine, present = await asyncio.to_thread(self._recheck, source, mine)
                    for outcome in present:
                        self._decided(progress, outcome)
                    outcomes += present
                if mine:
                    transfers = await self._fetch(source, mine, connections, progress)
                    registered = await asyncio.to_thread(self._register, mine, transfers)
                    for outcome, transferred in zip(registered, transfers, strict=True):
                        self._decided(progress, outcome, _seconds(transferred))
                    outcomes += registered
            finally:
                self.claims.release(held)
            if batch:
                if not contested:
                    _log.info(
                        "%d item(s) from %s are being staged by another run: waiting for it",
                        len(batch),
                        source,
                    )
                contested = True
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, MAX_POLL_S)
        return outcomes

    async def _fetch(
        self, source: str, batch: list[_Accepted], connections: int, progress: Progress
    ) -> list[dict[str, TransferResult | TransferError]]:
        """Transfer the assets of ``batch`` from ``source`` over ``connections`` connections;
        an asset already stored under the key of the checksum its source announces (a run that
        stored it could not register it) is re-hashed instead (:meth:`_reusable`). The bytes
        are counted in ``progress`` as they arrive, and each item once its files are there."""
        reused = await asyncio.to_thread(lambda: [self._reusable(work) for work in batch])
        for work, found in zip(batch, reused, strict=True):
            work.reused = set(found)
            work.results = {}
            meter = progress.meter(_key(work))
            for key, asset in work.assets.items():
                if key in found:
                    continue
                size = asset.extra_fields.get("file:size")
                work.requests[key] = TransferRequest(
                    url=asset.href,
                    part_path=self.storage.part_path(work.keys[key]),
                    expected_size=size,
                    expected_checksum=source_checksum(asset),
                    pool=work.task.source,
                    file_roots=work.task.file_roots,
                    auth=work.task.auth,
                    expected_media_type=asset.media_type,
                    meter=meter,
                )
            if not work.requests:
                self._transferred(progress, work)
        engine = TransferEngine(
            limits={source: connections},
            retry=self.retry,
            read_timeout=self.read_timeout_s,
            total_timeout=self.transfer_timeout_s,
            max_unsized_bytes=self.max_unsized_bytes,
        )
        try:
            await run_all(
                self._transfer(engine, progress, work, key)
                for work in batch
                for key in work.requests
            )
        finally:
            await engine.aclose()
        return [
            {key: found[key] if key in found else work.results[key] for key in work.assets}
            for work, found in zip(batch, reused, strict=True)
        ]

    async def _transfer(
        self, engine: TransferEngine, progress: Progress, work: _Accepted, key: str
    ) -> None:
        """Fetch asset ``key`` of ``work`` into ``work.results``; the item's last file done
        counts the item in ``progress`` (:meth:`_transferred`)."""
        try:
            work.results[key] = await engine.fetch(work.requests[key])
        except TransferError as error:
            work.results[key] = error
        if len(work.results) == len(work.requests):
            self._transferred(progress, work)

    def _transferred(self, progress: Progress, work: _Accepted) -> None:
        """An item whose transfers are over: ``transferred`` (to commit and register), or
        ``failed`` now when a file could not be fetched (its outcome cannot change)."""
        errors = _transfer_errors(work.results)
        if not errors:
            progress.decide(_key(work), "transferred")
            return
        self._decided(progress, self._fail(work.task, "; ".join(errors)))

    def _reusable(self, work: _Accepted) -> dict[str, TransferResult]:
        """The assets of ``work`` stored, verified, under the generation key of the checksum
        their source announces, as results of a transfer of no bytes. (An archive to unpack is
        fetched again: its members are what is stored.)"""
        found: dict[str, TransferResult] = {}
        for key, asset in work.assets.items():
            announced = source_checksum(asset)
            name = work.keys[key].rsplit("/", 1)[1]
            if announced is None or (work.task.unpack and is_archive(name)):
                continue
            final = generation_key(work.keys[key], announced)
            started = time.monotonic()
            try:
                stored = self.storage.rehash(final, announced.algorithm)
            except (OSError, StorageError, ValueError) as exc:
                _log.warning(
                    "re-hashing %s failed (%s): staging it again", final, shorten(str(exc))
                )
                continue
            if stored is None:
                continue
            size, checksum = stored
            expected = asset.extra_fields.get("file:size")
            if checksum.hexdigest != announced.hexdigest.lower() or expected not in {None, size}:
                _log.warning("%s holds other bytes than its name says: staging it again", final)
                continue
            found[key] = TransferResult(
                request=TransferRequest(asset.href, self.storage.part_path(work.keys[key])),
                size=size,
                checksum=checksum,
                attempts=0,
                resumed=False,
                seconds=time.monotonic() - started,
                bytes_received=0,
            )
        return found

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
            self.log(
                f"registering {len(entries)} item(s) of {collection} in {self.catalog.describe()}"
            )
            self._upsert(collection, entries)
            if self.catalog.relocates:
                self._read_back(collection, [o for _, o in entries if o.status == "staged"])
        if not self.keep_superseded and not self.catalog.relocates:
            replaced: dict[str, list[tuple[ItemOutcome, pystac.Item]]] = {}
            for work, outcome in zip(batch, outcomes, strict=True):
                if outcome.status == "staged" and work.previous is not None:
                    replaced.setdefault(outcome.collection, []).append((outcome, work.previous))
            for collection, versions in replaced.items():
                self._supersede(collection, versions)
        return outcomes

    def _upsert(self, collection: str, entries: list[tuple[pystac.Item, ItemOutcome]]) -> None:
        """Register ``entries`` in one bulk upsert; the items the catalog did not store fail with
        its reason. A refusal that names no item is retried item by item, so that one item the
        catalog cannot take fails alone."""
        attributes: tracing.Attributes = {
            "aux.catalog": tracing.safe_text(self.catalog.describe()),
            "aux.collection": collection,
            "aux.items": len(entries),
        }
        with tracing.span("aux.catalog.register", attributes) as opened:
            try:
                with self._catalog_lock:
                    self.catalog.upsert(collection, [item for item, _ in entries])
                return
            except Exception as exc:
                tracing.fail(opened, exc)
                failed = getattr(exc, "failed_ids", None)
                if failed is None and len(entries) > 1:
                    refused = exc
                else:
                    reasons: dict[str, str] = getattr(exc, "reasons", {})
                    for item, outcome in entries:
                        if failed is None or item.id in failed:
                            outcome.status = "failed"
                            reason = reasons.get(item.id) or str(exc)
                            outcome.reason = f"catalog registration: {reason}"
                    return
        _log.warning(
            "%s refused a batch of %d item(s) of %s (%s): registering them one by one",
            self.catalog.describe(),
            len(entries),
            collection,
            type(refused).__name__,
        )
        for entry in entries:
            self._upsert(collection, [entry])

    def _supersede(self, collection: str, replaced: list[tuple[ItemOutcome, pystac.Item]]) -> None:
        """Once items are registered with new files: remove the versions of their files that
        their previous catalog entries used and their entries now do not (read again, in one
        lookup, so that what another run registered meanwhile stays). Only what lies in the
        item's own folder is removed; a failure is logged: the catalog is right, old bytes stay.
        (A catalog that moves files into its own storage handles its versions itself.)"""
        try:
            with self._catalog_lock:
                now = lookup_items(self.catalog, collection, [o.item_id for o, _ in replaced])
        except Exception as exc:  # the type only: a message may quote a URL or a reply
            _log.warning(
                "looking up %d re-registered item(s) of %s failed (%s): the files of their "
                "previous versions stay",
                len(replaced),
                collection,
                type(exc).__name__,
            )
            return
        for outcome, previous in replaced:
            current = now.get(outcome.item_id)
            if current is None:  # not there any more: leave everything as it is
                continue
            in_use = self._versions(outcome, [a.href for a in current.assets.values()])
            in_use |= self._versions(outcome, [a.href for a in outcome.assets])
            old = self._versions(outcome, [a.href for a in previous.assets.values()])
            for key in sorted(old - in_use):
                try:
                    removed = self.storage.remove(key)
                except (OSError, StorageError, ValueError) as exc:
                    _log.warning(
                        "removing %s, superseded by the new version of %s, failed (%s)",
                        key,
                        outcome.item_id,
                        shorten(str(exc)),
                    )
                    continue
                outcome.superseded.append(key)
                _log.info(
                    "%s: removed %d superseded file(s) under %s", outcome.item_id, removed, key
                )

    def _versions(self, outcome: ItemOutcome, hrefs: Iterable[str]) -> set[str]:
        """The version roots (:func:`version_root`) in our storage of the item's ``hrefs``."""
        roots: set[str] = set()
        for href in hrefs:
            try:
                key = self.storage.key_of(href)
            except ValueError:  # e.g. file://host/...: not in our storage
                continue
            root = key and version_root(key, outcome.collection, outcome.item_id)
            if root:
                roots.add(root)
        return roots

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
        errors = _transfer_errors(transfers)
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
        final = generation_key(ready.storage_key, result.checksum)
        if ready.tree is None:
            href = (
                self.storage.href(final)
                if ready.source_key in work.reused  # stored already: nothing to commit
                else self.storage.commit(result.request.part_path, final)
            )
            return registered_asset(ready.source, href, result.size, result.checksum)
        hrefs = self.storage.commit_tree(ready.tree, final.rsplit("/", 1)[0])
        result.request.part_path.unlink(missing_ok=True)
        largest = min(ready.files, key=lambda f: (-f.size, f.path.as_posix()))
        href = hrefs[largest.path.as_posix()]
        checksum = Checksum("sha256", largest.sha256)
        return registered_asset(ready.source, href, largest.size, checksum, unpacked=True)


def _unique(tasks: Sequence[StageTask]) -> dict[tuple[str, str], StageTask]:
    """The first task of each item (by collection and id as spelled), in order."""
    unique: dict[tuple[str, str], StageTask] = {}
    for task in tasks:
        unique.setdefault((task.collection, task.item.id), task)
    return unique


def _planned(outcome: ItemOutcome) -> PlannedItem:
    """The plan of an item decided without a transfer (present, or refused)."""
    action: Literal["present", "failed"] = "present" if outcome.status == "present" else "failed"
    return PlannedItem(outcome.item_id, outcome.collection, outcome.source, action, outcome.reason)


def _key(work: _Accepted) -> ItemKey:
    """What an item's outcome and claim are keyed by: its collection and (NFC) id."""
    return work.task.collection, work.task.item.id


def _announced(work: _Accepted) -> int | None:
    """The bytes of an item's files as its source announces them; ``None`` if one has no size."""
    sizes = [asset.extra_fields.get("file:size") for asset in work.assets.values()]
    return None if None in sizes else sum(int(size) for size in sizes if size is not None)


def _transfer_errors(transfers: Mapping[str, TransferResult | TransferError]) -> list[str]:
    """The files of an item that could not be fetched, each with its reason."""
    return [f"{k}: {r}" for k, r in transfers.items() if isinstance(r, TransferError)]


def _seconds(transfers: Mapping[str, TransferResult | TransferError]) -> float | None:
    """How long an item's files took (the longest; they transfer concurrently)."""
    taken = [r.seconds for r in transfers.values() if isinstance(r, TransferResult)]
    return max(taken) if taken else None


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
