"""Local files under a root folder: the embedded default storage."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from aux_assets.storage.base import LEFTOVER_MAX_AGE_S, check_key, spool_name, sweep_leftovers
from aux_assets.utils.urls import file_path


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
        return final.with_name(spool_name(final.name, "part"))

    def scratch_dir(self, key: str) -> Path:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(spool_name(final.name, "work"))

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
        return sum(sweep_leftovers(f"{self.root}/{f}", max_age_s) for f in folders if is_real(f))
