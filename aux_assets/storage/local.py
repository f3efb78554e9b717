"""Local files under a root folder: the embedded default storage."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from aux_assets.storage.base import (
    LEFTOVER_MAX_AGE_S,
    check_key,
    spool_name,
    sweep_leftovers,
    sweep_tree,
)
from aux_assets.utils.checksums import HASH_CHUNK, Checksum, hash_stream
from aux_assets.utils.names import MAX_KEY_BYTES
from aux_assets.utils.urls import file_path


def _make_folder(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; the folders whose entries changed (to fsync)."""
    changed: list[Path] = []
    current = folder
    while not current.exists():
        changed.append(current.parent)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    return changed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    """Files under a root folder; commits are ``os.replace`` on the same file system (atomic)."""

    max_key_bytes = MAX_KEY_BYTES

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def part_path(self, key: str) -> Path:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(spool_name(final.name, "part"))

    def scratch_dir(self, key: str) -> Path:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(spool_name(final.name, "work"))

    def commit(self, part: Path, key: str) -> str:
        final = self._path(key)
        created = _make_folder(final.parent)
        os.replace(part, final)
        for folder in {final.parent, part.parent, *created}:
            _fsync_dir(folder)
        return self.href(key)

    def rehash(self, key: str, algorithm: str) -> tuple[int, Checksum] | None:
        path = self._path(key)
        if path.is_symlink() or not path.is_file():
            return None
        with path.open("rb") as file:
            return hash_stream(iter(lambda: file.read(HASH_CHUNK), b""), algorithm)

    def key_of(self, href: str) -> str | None:
        path = file_path(href)
        if path is None or not path.is_relative_to(self.root):
            return None
        return path.relative_to(self.root).as_posix() or None

    def remove(self, key: str) -> int:
        path = self._path(key)
        if path.is_dir() and not path.is_symlink():
            count = sum(1 for p in path.rglob("*") if not p.is_dir())
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            count = 1
            path.unlink()
        else:
            return 0
        _fsync_dir(path.parent)
        return count

    def commit_tree(self, directory: Path, prefix: str) -> dict[str, str]:
        hrefs: dict[str, str] = {}
        folders: set[Path] = set()
        for src in sorted(p for p in directory.rglob("*") if p.is_file()):
            rel = src.relative_to(directory).as_posix()
            key = f"{prefix}/{rel}"
            dest = self._path(key)
            folders.update(_make_folder(dest.parent))
            os.replace(src, dest)
            folders.add(dest.parent)
            hrefs[rel] = self.href(key)
        for folder in folders:
            _fsync_dir(folder)
        shutil.rmtree(directory, ignore_errors=True)
        return hrefs

    def href(self, key: str) -> str:
        return self._path(key).as_uri()

    def exists(self, href: str) -> bool:
        path = file_path(href)
        return path is not None and path.is_file()

    def sweep(self, keys: Iterable[str], max_age_s: float = LEFTOVER_MAX_AGE_S) -> int:
        """Sweep the folders the parts of ``keys`` go to (one ``scandir`` each, not below); a
        folder reached through a symlink is skipped."""
        real = {"": True}  # folder under the root -> no symlink on the way to it

        def is_real(folder: str) -> bool:
            if folder not in real:
                parent = folder.rpartition("/")[0]
                real[folder] = is_real(parent) and not os.path.islink(f"{self.root}/{folder}")
            return real[folder]

        folders = {"/".join(check_key(key)[:-1]) for key in keys}
        swept = sum(sweep_leftovers(f"{self.root}/{f}", max_age_s) for f in folders if is_real(f))
        return swept + sweep_tree(self.root, max_age_s)
