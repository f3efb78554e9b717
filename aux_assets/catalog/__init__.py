"""Where staged items are registered: a static catalog on disk, a STAC API with the
Transactions extension, or the Reference System's rs-server-catalog, behind one interface
(:mod:`~aux_assets.catalog.base`); :func:`open_catalog` picks the kind from ``AUX_CATALOG_URL``
and ``AUX_CATALOG_DIALECT`` (and imports only that kind)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from aux_assets.utils.urls import local_path, redact_url

if TYPE_CHECKING:
    from aux_assets.auth import Auth
    from aux_assets.catalog.base import Catalog


def open_catalog(
    url: str | None,
    default_root: Path,
    auth: Auth | None = None,
    timeout_s: float = 30.0,
    dialect: str = "stac",
    owner: str | None = None,
) -> Catalog:
    """A STAC API with Transactions for ``http(s)://`` (an rs-server-catalog, in the
    collections of ``owner``, when ``dialect`` is ``rs-catalog``); a static catalog for a path,
    ``file://`` or nothing (``default_root``)."""
    from aux_assets.catalog.static import LocalCatalog

    if not url:
        return LocalCatalog(default_root)
    if urlparse(url).scheme in {"http", "https"}:
        if dialect == "rs-catalog":
            from aux_assets.catalog.rs_server import RsServerCatalog

            return RsServerCatalog(url, owner or "", auth=auth, timeout_s=timeout_s)
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
