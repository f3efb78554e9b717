"""Choose the catalog and the storage from their URLs (``AUX_CATALOG_URL``, ``AUX_STORAGE_URL``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from aux_assets.catalog import Catalog, CatalogError, LocalCatalog
from aux_assets.s3_storage import s3_storage_from_url
from aux_assets.stac_catalog import StacApiCatalog
from aux_assets.storage import LocalStorage, Storage, StorageError
from aux_assets.transfer import Auth, redact_url
from aux_assets.urls import local_path


def open_catalog(
    url: str | None, default_root: Path, auth: Auth | None = None, timeout_s: float = 30.0
) -> Catalog:
    """A STAC API with Transactions for ``http(s)://``; a static catalog for a path,
    ``file://`` or nothing (``default_root``)."""
    if not url:
        return LocalCatalog(default_root)
    if urlparse(url).scheme in {"http", "https"}:
        return StacApiCatalog(url, auth=auth, timeout_s=timeout_s)
    path = local_path(url)
    if path is None:
        raise CatalogError(
            f"AUX_CATALOG_URL {redact_url(url)!r}: use http(s):// for a STAC API with the "
            "Transactions extension, or file:///path for a static catalog"
        )
    return LocalCatalog(path)


def open_storage(
    url: str | None, default_root: Path, env: Mapping[str, str], spool_dir: Path
) -> Storage:
    """S3 for ``s3://bucket/prefix`` (``AWS_*`` settings in ``env``); local files for a path,
    ``file://`` or nothing (``default_root``)."""
    if not url:
        return LocalStorage(default_root)
    if urlparse(url).scheme == "s3":
        return s3_storage_from_url(url, env, spool_dir)
    path = local_path(url)
    if path is None:
        raise StorageError(
            f"AUX_STORAGE_URL scheme {urlparse(url).scheme!r} is not supported; "
            "use s3://bucket/prefix or file:///path"
        )
    return LocalStorage(path)
