"""Dagster resources: one per source, the catalog, the storage, the staging bounds and the
products file.

Configuration comes from the environment (the README's tables). Secrets are passed as
``dg.EnvVar`` so that their values never appear in the definitions, the UI or the logs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, cast

import dagster as dg
from pydantic import Field, PrivateAttr

from aux_assets.auth import AnyOfAuth, Auth, auth_from_env
from aux_assets.catalog import open_catalog
from aux_assets.catalog.base import Catalog
from aux_assets.filters import CATALOG_DIALECTS, SOURCE_DIALECTS, Dialect
from aux_assets.products import DEMO_PRODUCTS_FILE, ProductsFile, load_products
from aux_assets.sample.living import SAMPLE_FOLDER, LivingSample
from aux_assets.settings import (
    DEFAULT_MAX_UNSIZED_BYTES,
    DEFAULT_TRANSFER_TIMEOUT_S,
    MAX_UNSIZED_BYTES_ENV,
    TRANSFER_TIMEOUT_ENV,
    aux_home,
    choice_env,
    local_file_roots,
    now,
    partitions_start,
    positive_int_env,
)
from aux_assets.sources import open_source
from aux_assets.sources.base import Source
from aux_assets.sources.profiles import DEFAULT_MAX_CONNECTIONS, PROFILES, profile
from aux_assets.sources.sample import LivingSampleSource
from aux_assets.sources.static import LocalStacSource
from aux_assets.storage import open_storage
from aux_assets.storage.base import Storage


class _Credentials(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Credentials of one service (``<prefix>_API_KEY``/``_TOKEN``, or OAuth2) and, apart, of the
    hosts its assets are downloaded from (``<prefix>_ASSET_*``, bound to ``<prefix>_ASSET_URL``:
    e.g. the station behind rs-server); built once per resource instance and shared by all its
    searches and transfers. An OAuth2 token is the process's one for its account, whichever
    resources use it (the catalog and its source ``catalog`` share one)."""

    prefix: str
    url: str | None = None
    api_key: str | None = None
    token: str | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    username: str | None = None
    password: str | None = None
    scope: str | None = None
    auth_origins: str | None = None
    token_authorization: str | None = None
    asset_url: str | None = None
    asset_api_key: str | None = None
    asset_token: str | None = None
    asset_token_url: str | None = None
    asset_client_id: str | None = None
    asset_client_secret: str | None = None
    asset_username: str | None = None
    asset_password: str | None = None
    asset_scope: str | None = None
    asset_auth_origins: str | None = None
    asset_token_authorization: str | None = None
    timeout_s: float = 30.0
    home: str = ".aux_assets"
    _auth: Auth | None = PrivateAttr(default=None)
    _auth_built: bool = PrivateAttr(default=False)

    def auth(self) -> Auth | None:
        """The credentials, each bound to its origins (``None`` when there are none)."""
        if not self._auth_built:
            values = {
                f"{self.prefix}_{name.upper()}": getattr(self, name)
                for name in _CREDENTIAL_FIELDS
                if getattr(self, name)
            }
            found = [
                auth_from_env(self.prefix, values, self.url, self._auth_origins()),
                auth_from_env(f"{self.prefix}_ASSET", values, self.asset_url),
            ]
            auths = [auth for auth in found if auth is not None]
            self._auth = AnyOfAuth(*auths) if len(auths) > 1 else next(iter(auths), None)
            self._auth_built = True
        return self._auth

    def _auth_origins(self) -> tuple[str, ...]:
        """The origins besides the URL's that may receive the OAuth2 token by default."""
        return ()


class SourceResource(_Credentials):
    """A STAC source: a STAC API, a static catalog on disk, or the embedded sample (auxip)."""

    name: str
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    dialect: str = "stac"
    owner: str | None = None
    _source: Source | None = PrivateAttr(default=None)

    def _auth_origins(self) -> tuple[str, ...]:
        return profile(self.name).auth_origins

    def open(self) -> Source:
        """The search client (built once per resource instance)."""
        if self._source is None:
            if profile(self.name).embedded_sample and not self.url:
                first = date.fromisoformat(partitions_start())
                sample = LivingSample(Path(self.home) / SAMPLE_FOLDER, first)
                self._source = LivingSampleSource(self.name, sample)
            else:
                dialect = cast(Dialect, self.dialect)  # checked by build_resources
                self._source = open_source(
                    self.name, self.url, self.auth(), self.timeout_s, dialect, self.owner
                )
        return self._source

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the search client once the step or sensor tick is done with it."""
        if self._source is not None:
            self._source.close()
            self._source = None


SOURCE_KEYS = frozenset(p.resource_key for p in PROFILES.values())


def source_resource(
    context: dg.AssetExecutionContext | dg.SensorEvaluationContext, name: str
) -> SourceResource:
    """The resource of source ``name`` in an asset's or a sensor's context."""
    resource: SourceResource = getattr(context.resources, profile(name).resource_key)
    return resource


class CatalogResource(_Credentials):
    """The catalog staged items are registered in (``AUX_CATALOG_URL``, default: local;
    ``AUX_CATALOG_DIALECT=rs-catalog`` and ``AUX_CATALOG_OWNER`` for an rs-server-catalog)."""

    dialect: str = "stac"
    owner: str | None = None

    def open(self) -> Catalog:
        home = Path(self.home) / "catalog"
        return open_catalog(self.url, home, self.auth(), self.timeout_s, self.dialect, self.owner)


class StorageResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where staged bytes go (``AUX_STORAGE_URL``: ``s3://bucket/prefix`` with the ``AWS_*``
    variables, or a path; default ``$AUX_ASSETS_HOME/storage``) and what becomes of the files
    of an item version a re-publication replaced (``AUX_SUPERSEDED_FILES``: ``delete`` once the
    new version is registered, or ``keep``)."""

    url: str | None = None
    superseded: str = "delete"
    aws_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_region: str | None = None
    home: str = ".aux_assets"

    def open(self) -> Storage:
        aws = {
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "AWS_REGION": self.aws_region,
        }
        env = {k: v for k, v in aws.items() if v}
        home = Path(self.home)
        return open_storage(self.url, home / "storage", env, home / "spool")


SUPERSEDED_CHOICES = ("delete", "keep")


class StagingResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """What transfers may do: the folders local sources may read besides their own
    (``AUX_LOCAL_FILE_ROOTS``), the largest file whose item gives no size
    (``AUX_MAX_UNSIZED_BYTES``), the longest transfer of one file (``AUX_TRANSFER_TIMEOUT_S``)."""

    local_file_roots: list[str] = Field(default_factory=list)
    max_unsized_bytes: int = DEFAULT_MAX_UNSIZED_BYTES
    transfer_timeout_s: int = DEFAULT_TRANSFER_TIMEOUT_S

    def file_roots(self, source: Source) -> tuple[Path, ...]:
        """The folders ``source``'s ``file://`` hrefs may be read from: its own and the allowed
        ones; none for a remote source."""
        if not isinstance(source, LocalStacSource | LivingSampleSource):
            return ()
        return (source.root, *map(Path, self.local_file_roots))


class ProductsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The products file (``AUX_PRODUCTS_FILE``, default: the shipped demo file)."""

    path: str = str(DEMO_PRODUCTS_FILE)

    def load(self) -> ProductsFile:
        return load_products(Path(self.path))


_SERVICE_FIELDS = (
    "api_key",
    "token",
    "token_url",
    "client_id",
    "client_secret",
    "username",
    "password",
    "scope",
    "auth_origins",
    "token_authorization",
)
_CREDENTIAL_FIELDS = (*_SERVICE_FIELDS, "asset_url", *(f"asset_{n}" for n in _SERVICE_FIELDS))
_SECRET_FIELDS = {
    f"{group}{name}"
    for group in ("", "asset_")
    for name in ("api_key", "token", "client_secret", "password", "token_authorization")
}


def _credential_fields(
    env: Mapping[str, str], prefix: str, url: str | None, auth_origins: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The credential fields of a service from ``<prefix>_*``: secrets as ``dg.EnvVar`` (their
    values never enter the definitions), checked now so a bad set fails at load."""
    auth_from_env(prefix, env, url, auth_origins)
    auth_from_env(f"{prefix}_ASSET", env, env.get(f"{prefix}_ASSET_URL"))
    fields: dict[str, Any] = {}
    for name in _CREDENTIAL_FIELDS:
        variable = f"{prefix}_{name.upper()}"
        if env.get(variable):
            fields[name] = dg.EnvVar(variable) if name in _SECRET_FIELDS else env[variable]
    return fields


def build_resources(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """All resources, configured from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    home = str(aux_home(env))
    now(env)  # a bad AUX_NOW fails at definitions load, naming the variable
    products_file = env.get("AUX_PRODUCTS_FILE") or str(DEMO_PRODUCTS_FILE)
    products = load_products(Path(products_file))  # an invalid file fails at definitions load
    catalog_url = env.get("AUX_CATALOG_URL")
    storage_url = env.get("AUX_STORAGE_URL")
    open_storage(storage_url, Path(home) / "storage", {}, Path(home) / "spool")  # URL checked
    catalog_dialect = choice_env(env, "AUX_CATALOG_DIALECT", "stac", CATALOG_DIALECTS)
    owner = _catalog_owner(env, catalog_dialect, storage_url, products)
    resources: dict[str, Any] = {
        "catalog": CatalogResource(
            prefix="AUX_CATALOG",
            url=catalog_url,
            dialect=catalog_dialect,
            owner=owner,
            home=home,
            **_credential_fields(env, "AUX_CATALOG", catalog_url),
        ),
        "storage": StorageResource(
            url=storage_url,
            aws_endpoint_url=env.get("AWS_ENDPOINT_URL"),
            aws_access_key_id=_optional_env(env, "AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_optional_env(env, "AWS_SECRET_ACCESS_KEY"),
            aws_region=env.get("AWS_REGION"),
            superseded=choice_env(env, "AUX_SUPERSEDED_FILES", "delete", SUPERSEDED_CHOICES),
            home=home,
        ),
        "staging": StagingResource(
            local_file_roots=[str(root) for root in local_file_roots(env)],
            max_unsized_bytes=positive_int_env(
                env, MAX_UNSIZED_BYTES_ENV, DEFAULT_MAX_UNSIZED_BYTES, "bytes"
            ),
            transfer_timeout_s=positive_int_env(
                env, TRANSFER_TIMEOUT_ENV, DEFAULT_TRANSFER_TIMEOUT_S, "seconds"
            ),
        ),
        "products": ProductsResource(path=products_file),
    }
    for source in PROFILES.values():
        prefix = source.env_prefix
        url: str | None
        if source.ours:
            url = catalog_url or str(Path(home) / "catalog" / "catalog.json")
            dialect = catalog_dialect
        else:
            url = env.get(f"{prefix}_URL") or source.public_root
            dialect = choice_env(env, f"{prefix}_DIALECT", source.dialect, SOURCE_DIALECTS)
        resources[source.resource_key] = SourceResource(
            name=source.name,
            prefix=prefix,
            url=url,
            max_connections=positive_int_env(
                env, f"{prefix}_MAX_CONNECTIONS", source.max_connections, "connections"
            ),
            dialect=dialect,
            owner=owner if source.ours else None,
            home=home,
            **_credential_fields(env, prefix, url, source.auth_origins),
        )
    return resources


def _catalog_owner(
    env: Mapping[str, str], dialect: str, storage_url: str | None, products: ProductsFile
) -> str | None:
    """``AUX_CATALOG_OWNER`` for an rs-server-catalog, which also needs an http(s) URL, S3
    staging and no unpacking; errors name what to change."""
    if dialect != "rs-catalog":
        return None
    from aux_assets.catalog.rs_server import OWNER_RULE

    owner = env.get("AUX_CATALOG_OWNER", "")
    if not owner.isascii() or not owner.isalnum():
        raise ValueError(
            f"AUX_CATALOG_OWNER={owner!r}: AUX_CATALOG_DIALECT=rs-catalog needs it: {OWNER_RULE}"
        )
    if not env.get("AUX_CATALOG_URL", "").startswith(("http://", "https://")):
        raise ValueError(
            "AUX_CATALOG_DIALECT=rs-catalog needs AUX_CATALOG_URL, the catalog's http(s) root "
            "(e.g. https://rs-server.example/catalog)"
        )
    if not (storage_url or "").startswith("s3://"):
        raise ValueError(
            f"AUX_STORAGE_URL={storage_url!r}: rs-server-catalog takes only s3:// assets; set "
            "AUX_STORAGE_URL=s3://bucket/prefix (and the AWS_* variables)"
        )
    unpacked = [spec.product_type for spec in products.products if spec.unpack]
    if unpacked:  # the catalog would move the one registered file away from its archive's others
        raise ValueError(
            f"the products file unpacks {', '.join(unpacked)}, but rs-server-catalog registers "
            "one file per asset (the rest of an archive would stay unregistered): set "
            "unpack: false for those entries with AUX_CATALOG_DIALECT=rs-catalog"
        )
    return owner


def _optional_env(env: Mapping[str, str], name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if env.get(name) else None
