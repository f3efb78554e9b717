"""Where staged bytes go: a Storage protocol and the local file implementation.

Objects are addressed by keys ``<collection>/<item_id>/<file>``; each key component is checked
with :func:`aux_assets.names.check_safe_name` before it touches a path. Bytes are streamed into
a local ``.part`` file (given by :meth:`Storage.part_path`), verified by the caller, and only
then committed under their final name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Protocol

from aux_assets.names import check_safe_name
from aux_assets.urls import file_path


class StorageError(RuntimeError):
    """A storage operation that failed, or a storage URL that cannot be used."""


def check_key(key: str) -> tuple[str, ...]:
    """Split a key into safe components, or raise naming the bad one."""
    parts = tuple(key.split("/"))
    for part in parts:
        check_safe_name(part, "storage key component")
    return parts


class Storage(Protocol):
    """A place to commit verified files and trees to."""

    def part_path(self, key: str) -> Path:
        """A fresh local path ending in ``.part`` to stream the object for ``key`` into."""
        ...

    def commit(self, part: Path, key: str) -> str:
        """Make the verified ``part`` file the object at ``key``; return its href."""
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    """Files under a root folder; commits are ``os.replace`` in the same folder (atomic)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def part_path(self, key: str) -> Path:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.part")

    def scratch_dir(self, key: str) -> Path:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.work")

    def commit(self, part: Path, key: str) -> str:
        final = self._path(key)
        os.replace(part, final)
        _fsync_dir(final.parent)
        return self.href(key)

    def commit_tree(self, directory: Path, prefix: str) -> dict[str, str]:
        hrefs: dict[str, str] = {}
        for src in sorted(p for p in directory.rglob("*") if p.is_file()):
            rel = src.relative_to(directory).as_posix()
            key = f"{prefix}/{rel}"
            dest = self._path(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
            hrefs[rel] = self.href(key)
        for folder in {self._path(f"{prefix}/{rel}").parent for rel in hrefs}:
            _fsync_dir(folder)
        shutil.rmtree(directory, ignore_errors=True)
        return hrefs

    def href(self, key: str) -> str:
        return self._path(key).as_uri()

    def exists(self, href: str) -> bool:
        path = file_path(href)
        return path is not None and path.is_file()
