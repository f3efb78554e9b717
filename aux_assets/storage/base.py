"""Where staged bytes go: the :class:`Storage` interface, storage keys, and the sweep of the
leftovers of killed runs.

Objects are addressed by keys ``<collection>/<item_id>/<file>``; each key component is checked
with :func:`aux_assets.utils.names.check_safe_name` before it touches a path. Bytes are streamed
into a local ``.part`` file (given by :meth:`Storage.part_path`), verified by the caller, and
only then committed under their final name.

A killed run leaves its hidden ``.part`` files and ``.work`` folders behind; :func:`sweep_leftovers`
removes those nobody has written to for a day (a live transfer writes at least every read
timeout, 60 s by default): in the folders being staged on every run, and in every folder of the
storage once an hour (:func:`sweep_tree`).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from aux_assets.utils.checksums import Checksum
from aux_assets.utils.names import check_safe_name


class StorageError(RuntimeError):
    """A storage operation that failed, or a storage URL that cannot be used."""


def check_key(key: str) -> tuple[str, ...]:
    """Split a key into safe components, or raise naming the bad one."""
    parts = tuple(key.split("/"))
    for part in parts:
        check_safe_name(part, "storage key component")
    return parts


LEFTOVER_MAX_AGE_S = 24 * 3600.0
FULL_SWEEP_INTERVAL_S = 3600.0
_SWEPT_MARKER = ".aux-swept"
# what spool_name makes, and the folder an archive is unpacked into beside a .work folder
_LEFTOVER_RE = re.compile(
    r"\.(?P<name>.+)\.[0-9a-f]{12}\.(?P<kind>part|work)(?:\.extract-[0-9a-f]{16})?"
)


def spool_name(name: str, kind: str) -> str:
    """A fresh hidden name for a ``.part`` file or ``.work`` folder of the file ``name``."""
    return f".{name}.{uuid.uuid4().hex[:12]}.{kind}"


def _touched_since(folder: str, cutoff: float) -> bool:
    """Whether ``folder`` or anything below it (symlinks not followed) has an mtime >= cutoff."""
    stack = [folder]
    while stack:
        current = stack.pop()
        if os.stat(current, follow_symlinks=False).st_mtime >= cutoff:
            return True
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    return True
    return False


def sweep_leftovers(folder: str | Path, max_age_s: float = LEFTOVER_MAX_AGE_S) -> int:
    """Remove the dead leftovers directly in ``folder``: regular files ``.<name>.<12 hex>.part``
    and folders ``.<name>.<12 hex>.work`` (as :func:`spool_name` makes them, and with
    ``.extract-<16 hex>`` after, where an archive is unpacked beside one) whose newest mtime
    is older than ``max_age_s``. Symlinks are never followed nor removed, other names never
    touched, errors skip the entry. Returns how many were removed."""
    cutoff = time.time() - max_age_s
    removed = 0
    try:
        with os.scandir(folder) as scan:
            entries = [(e, m["kind"]) for e in scan if (m := _LEFTOVER_RE.fullmatch(e.name))]
    except OSError:  # no such folder yet, or not readable: nothing to sweep
        return 0
    for entry, kind in entries:
        try:
            if kind == "part" and entry.is_file(follow_symlinks=False):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            elif (
                kind == "work"
                and entry.is_dir(follow_symlinks=False)
                and not _touched_since(entry.path, cutoff)
            ):
                shutil.rmtree(entry.path)  # removes symlinks inside, never their targets
                removed += 1
        except OSError:  # e.g. committed or removed by another run meanwhile
            continue
    return removed


def _subfolders(folder: str) -> list[str]:
    """The folders directly in ``folder`` (symlinks not followed; leftovers not entered)."""
    try:
        with os.scandir(folder) as entries:
            return [
                e.path
                for e in entries
                if e.is_dir(follow_symlinks=False) and not _LEFTOVER_RE.fullmatch(e.name)
            ]
    except OSError:  # removed meanwhile, or not readable
        return []


def sweep_tree(root: str | Path, max_age_s: float = LEFTOVER_MAX_AGE_S) -> int:
    """:func:`sweep_leftovers` in every item folder ``root/<collection>/<item id>`` (where
    spool files are made; generation folders below them, which hold only committed files, are
    never swept), at most once per :data:`FULL_SWEEP_INTERVAL_S` (the time of the last sweep is
    the mtime of ``root/.aux-swept``); return how many leftovers were removed."""
    marker = Path(root, _SWEPT_MARKER)
    try:
        if time.time() - marker.stat().st_mtime < FULL_SWEEP_INTERVAL_S:
            return 0
    except OSError:  # never swept (or not readable: the touch below says so)
        pass
    try:
        marker.touch()
    except OSError:  # no root yet, or read-only: nothing this run can sweep
        return 0
    return sum(
        sweep_leftovers(item, max_age_s)
        for collection in _subfolders(str(root))
        for item in _subfolders(collection)
    )


class Storage(Protocol):
    """A place to commit verified files and trees to.

    ``max_key_bytes`` is the longest key (UTF-8 bytes) it can store: S3's limit less the
    storage's prefix; locally the same limit, so that keys stay portable.
    """

    max_key_bytes: int

    def part_path(self, key: str) -> Path:
        """A fresh local path ending in ``.part`` to stream the object for ``key`` into."""
        ...

    def commit(self, part: Path, key: str) -> str:
        """Make the verified ``part`` file the object at ``key``; return its href."""
        ...

    def rehash(self, key: str, algorithm: str) -> tuple[int, Checksum] | None:
        """The size and ``algorithm`` checksum of the object at ``key`` (streamed, not held in
        memory); ``None`` when there is none."""
        ...

    def key_of(self, href: str) -> str | None:
        """The key of an href of this storage; ``None`` for any other href."""
        ...

    def remove(self, key: str) -> int:
        """Remove the object at ``key`` and every object under ``key/``; return how many."""
        ...

    def commit_tree(self, directory: Path, prefix: str) -> dict[str, str]:
        """Move a verified local tree under ``prefix``; return ``{relative path: href}``."""
        ...

    def scratch_dir(self, key: str) -> Path:
        """A fresh local directory for work on ``key`` (e.g. unpacking), removed by the caller."""
        ...

    def href(self, key: str) -> str:
        """The href the object at ``key`` has in catalog items."""
        ...

    def exists(self, href: str) -> bool:
        """Whether the object an href of this storage points at exists."""
        ...

    def sweep(self, keys: Iterable[str], max_age_s: float = LEFTOVER_MAX_AGE_S) -> int:
        """Remove dead local leftovers (:func:`sweep_leftovers`) where the parts of ``keys``
        go, and, at most once per :data:`FULL_SWEEP_INTERVAL_S`, everywhere in the storage;
        return how many were removed."""
        ...
