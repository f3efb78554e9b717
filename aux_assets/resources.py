"""Dagster resources: one per source, the catalog, the storage and the products file.

Configuration comes from the environment (architecture.md, section 5). Secrets are passed as
``dg.EnvVar`` so that their values never appear in the definitions, the UI or the logs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from aux_assets.catalog import Catalog, open_catalog
from aux_assets.products import DEMO_PRODUCTS_FILE, ProductsFile, load_products
from aux_assets.sample import ensure_sample
from aux_assets.search import LocalStacSource, Source, open_source
from aux_assets.sources import SOURCES, resource_key
from aux_assets.storage import Storage, open_storage
from aux_assets.transfer import Auth, StaticAuth, origin_of

PUBLIC_ROOTS = {
    "cdse": "https://stac.dataspace.copernicus.eu/v1/",
    "earthdatahub": "https://earthdatahub.destine.eu/api/stac/v1",
}
DEFAULT_MAX_CONNECTIONS = {"cdse": 4}


def aux_home(env: Mapping[str, str] | None = None) -> Path:
    """``AUX_ASSETS_HOME`` (default ``./.aux_assets``), absolute."""
    env = os.environ if env is None else env
    return Path(env.get("AUX_ASSETS_HOME") or ".aux_assets").resolve()


class SourceResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """A STAC source: a STAC API, a static catalog on disk, or the embedded sample (auxip)."""

    name: str
    url: str | None = None
    api_key: str | None = None
    token: str | None = None
    max_connections: int = 8
    timeout_s: float = 30.0
    home: str = ".aux_assets"
    _source: Source | None = PrivateAttr(default=None)

    def auth(self) -> Auth | None:
        """The credentials of this source, bound to its URL's origin."""
        if not self.url or not (self.api_key or self.token):
            return None
        return StaticAuth(origin=origin_of(self.url), api_key=self.api_key, token=self.token)

    def open(self) -> Source:
        """The search client (built once per resource instance)."""
        if self._source is None:
            if self.name == "auxip" and not self.url:
                sample = ensure_sample(Path(self.home) / "sample")
                self._source = LocalStacSource(self.name, sample)
            else:
                self._source = open_source(self.name, self.url, self.auth(), self.timeout_s)
        return self._source


class CatalogResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The catalog staged items are registered in (``AUX_CATALOG_URL``, default: local)."""

    url: str | None = None
    home: str = ".aux_assets"

    def open(self) -> Catalog:
        return open_catalog(self.url, Path(self.home) / "catalog")


class StorageResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where staged bytes go (``AUX_STORAGE_URL``, default ``$AUX_ASSETS_HOME/storage``)."""

    url: str | None = None
    home: str = ".aux_assets"

    def open(self) -> Storage:
        return open_storage(self.url, Path(self.home) / "storage")


class ProductsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The products file (``AUX_PRODUCTS_FILE``, default: the shipped demo file)."""

    path: str = str(DEMO_PRODUCTS_FILE)

    def load(self) -> ProductsFile:
        return load_products(Path(self.path))


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={text!r} must be a positive whole number, e.g. {default}")
    return value


def _secret(env: Mapping[str, str], name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if env.get(name) else None


def build_resources(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """All resources, configured from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    home = str(aux_home(env))
    products_file = env.get("AUX_PRODUCTS_FILE") or str(DEMO_PRODUCTS_FILE)
    load_products(Path(products_file))  # an invalid file fails at definitions load
    resources: dict[str, Any] = {
        "catalog": CatalogResource(url=env.get("AUX_CATALOG_URL"), home=home),
        "storage": StorageResource(url=env.get("AUX_STORAGE_URL"), home=home),
        "products": ProductsResource(path=products_file),
    }
    for source in SOURCES:
        prefix = f"AUX_{source.upper()}"
        url: str | None
        if source == "catalog":
            url = env.get("AUX_CATALOG_URL") or str(Path(home) / "catalog" / "catalog.json")
            prefix = "AUX_CATALOG"
        else:
            url = env.get(f"{prefix}_URL") or PUBLIC_ROOTS.get(source)
        resources[resource_key(source)] = SourceResource(
            name=source,
            url=url,
            api_key=_secret(env, f"{prefix}_API_KEY"),
            token=_secret(env, f"{prefix}_TOKEN"),
            max_connections=_int_env(
                env, f"{prefix}_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS.get(source, 8)
            ),
            home=home,
        )
    return resources
