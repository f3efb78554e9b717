"""Claims on items across runs: while a run stages an item, another run staging the same item
waits for it, then finds it registered, so that each file moves once.

:class:`FileClaims` holds one ``flock`` per item on a lock file in a folder shared by the runs of
a host (``$AUX_ASSETS_HOME/claims``); the kernel drops the locks of a run that dies, even by
``SIGKILL``, so a claim never outlives its run. Runs on other hosts are kept apart by the source
pools (:mod:`aux_assets.staging.gates`), not by claims.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

ItemKey = tuple[str, str]  # (collection, item id)


class ItemClaims(Protocol):
    """Who stages which item now."""

    def claim(self, keys: Iterable[ItemKey]) -> set[ItemKey]:
        """Claim what of ``keys`` no other run holds; return what this run now holds."""
        ...

    def release(self, keys: Iterable[ItemKey]) -> None:
        """Give back claims this run holds (others are ignored)."""
        ...


class NoClaims:
    """Every item is this run's: runs are not kept apart (one run at a time, or tests)."""

    def claim(self, keys: Iterable[ItemKey]) -> set[ItemKey]:
        return set(keys)

    def release(self, keys: Iterable[ItemKey]) -> None:
        return None


class FileClaims:
    """Claims as ``flock`` locks on ``<folder>/<hash of collection/id>.lock``.

    A lock file is removed by the run that held it, while holding it; a run that locked a file
    removed meanwhile sees it no longer at its path and tries again.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[ItemKey, int] = {}  # key -> open descriptor holding the lock
        self._lock = threading.Lock()

    def _path(self, key: ItemKey) -> Path:
        digest = hashlib.sha256("/".join(key).encode()).hexdigest()[:32]
        return self.folder / f"{digest}.lock"

    def _try(self, key: ItemKey) -> int | None:
        """An open descriptor holding the lock of ``key``, or ``None`` if another run holds it."""
        path = self._path(key)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:  # its holder removed it on release
                same = False
            if same:
                return fd
            os.close(fd)

    def claim(self, keys: Iterable[ItemKey]) -> set[ItemKey]:
        wanted = list(keys)
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for key in wanted:
                if key not in self._held and (fd := self._try(key)) is not None:
                    self._held[key] = fd
            return {key for key in wanted if key in self._held}

    def release(self, keys: Iterable[ItemKey]) -> None:
        with self._lock:
            for key in keys:
                fd = self._held.pop(key, None)
                if fd is None:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(key))
                os.close(fd)  # closing the last descriptor drops the lock
