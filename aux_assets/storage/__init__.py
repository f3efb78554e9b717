"""Where staged bytes go: local files or an S3 bucket, behind one interface
(:mod:`~aux_assets.storage.base`); :func:`open_storage` picks the kind from ``AUX_STORAGE_URL``
(and imports only that kind)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from aux_assets.utils.urls import local_path

if TYPE_CHECKING:
    from aux_assets.storage.base import Storage


def open_storage(
    url: str | None, default_root: Path, env: Mapping[str, str], spool_dir: Path
) -> Storage:
    """S3 for ``s3://bucket/prefix`` (``AWS_*`` settings in ``env``); local files for a path,
    ``file://`` or nothing (``default_root``)."""
    from aux_assets.storage.local import LocalStorage

    if not url:
        return LocalStorage(default_root)
    if urlparse(url).scheme == "s3":
        from aux_assets.storage.s3 import s3_storage_from_url

        return s3_storage_from_url(url, env, spool_dir)
    path = local_path(url)
    if path is None:
        from aux_assets.storage.base import StorageError

        raise StorageError(
            f"AUX_STORAGE_URL scheme {urlparse(url).scheme!r} is not supported; "
            "use s3://bucket/prefix or file:///path"
        )
    return LocalStorage(path)
