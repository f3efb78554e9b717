"""Where items are searched: STAC APIs and static catalogs on disk, behind one interface.

:mod:`~aux_assets.sources.base` has the interface, :mod:`~aux_assets.sources.profiles` what is
special about each source, one module per kind (:mod:`~aux_assets.sources.stac_api`,
:mod:`~aux_assets.sources.static`), and :func:`open_source` picks the kind from the URL (and
imports only that kind).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlparse

from aux_assets.utils.urls import local_path

if TYPE_CHECKING:
    from aux_assets.auth import Auth
    from aux_assets.filters import Dialect
    from aux_assets.sources.base import Source


def open_source(
    name: str,
    url: str | None,
    auth: Auth | None = None,
    timeout_s: float = 30.0,
    dialect: Dialect = "stac",
    owner: str | None = None,
) -> Source:
    """The source for ``url``: ``http(s)://`` STAC API (taking filters in ``dialect``; its
    collections those of ``owner`` on an rs-server-catalog), ``file://`` or a path on disk, or
    none."""
    from aux_assets.sources.base import SearchError, UnconfiguredSource

    if not url:
        return UnconfiguredSource(name)
    if urlparse(url).scheme in {"http", "https"}:
        from aux_assets.sources.stac_api import StacApiSource

        return StacApiSource(
            name, url, auth=auth, timeout_s=timeout_s, dialect=dialect, owner=owner
        )
    path = local_path(url)
    if path is None:
        raise SearchError(
            f"source '{name}': URL scheme {urlparse(url).scheme!r} is not supported; "
            "use http(s):// for a STAC API or file:// for a static catalog"
        )
    from aux_assets.sources.static import LocalStacSource

    return LocalStacSource(name, path)
