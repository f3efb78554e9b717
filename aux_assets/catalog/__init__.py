"""Where staged items are registered: a static catalog on disk or a STAC API with the
Transactions extension, behind one interface (:mod:`~aux_assets.catalog.base`);
:func:`open_catalog` picks the kind from ``AUX_CATALOG_URL`` (and imports only that kind)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from aux_assets.utils.urls import local_path, redact_url

if TYPE_CHECKING:
    from aux_assets.auth import Auth
    from aux_assets.catalog.base import Catalog


def open_catalog(
    url: str | None, default_root: Path, auth: Auth | None = None, timeout_s: float = 30.0
) -> Catalog:
    """A STAC API with Transactions for ``http(s)://``; a static catalog for a path,
    ``file://`` or nothing (``default_root``)."""
    from aux_assets.catalog.static import LocalCatalog

    if not url:
        return LocalCatalog(default_root)
    if urlparse(url).scheme in {"http", "https"}:
        from aux_assets.catalog.stac_api import StacApiCatalog

        return StacApiCatalog(url, auth=auth, timeout_s=timeout_s)
    path = local_path(url)
    if path is None:
        from aux_assets.catalog.base import CatalogError

        raise CatalogError(
            f"AUX_CATALOG_URL {redact_url(url)!r}: use http(s):// for a STAC API with the "
            "Transactions extension, or file:///path for a static catalog"
        )
    return LocalCatalog(path)
