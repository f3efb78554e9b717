"""Everything special about each source aux_assets can search, in one table.

A source is a STAC API, a static STAC catalog on disk, or (auxip only) the embedded sample.
What differs between them is only here: the environment prefix of its settings, its Dagster
resource key, its public root when it has one, its default connection limit, the origins that
may receive its OAuth2 token besides its root, the assets staged when a products entry names
none, whether items found there are staged at all, and the filters its STAC API takes
(``dialect``, overridden by ``AUX_<SOURCE>_DIALECT``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aux_assets.filters import Dialect

LTA_NOT_SUPPORTED = (
    "LTA auxiliary product search is not supported yet: no LTA STAC endpoint is configured"
)
DEFAULT_MAX_CONNECTIONS = 8


@dataclass(frozen=True)
class Profile:
    """What is special about one source."""

    name: str
    env_prefix: str
    resource_key: str
    public_root: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    auth_origins: tuple[str, ...] = ()
    default_assets: tuple[str, ...] | None = None
    embedded_sample: bool = False
    ours: bool = False
    unconfigured: str | None = None
    dialect: Dialect = "stac"

    def unconfigured_message(self) -> str:
        """Why a search fails when the source has no URL, and how to give it one."""
        return self.unconfigured or (
            f"source '{self.name}' is not configured: set {self.env_prefix}_URL to its STAC API "
            "root or to a file:// URL of a static STAC catalog"
        )


def _profile(name: str, **special: Any) -> Profile:
    return Profile(name, f"AUX_{name.upper()}", name, **special)


PROFILES: dict[str, Profile] = {
    # the embedded sample when AUX_AUXIP_URL is unset; else the Reference System's rs-server
    "auxip": _profile("auxip", embedded_sample=True, dialect="rs-server"),
    "prip": _profile("prip", dialect="rs-server"),
    "cadip": _profile("cadip"),
    "cdse": _profile(
        "cdse",
        public_root="https://stac.dataspace.copernicus.eu/v1/",
        max_connections=4,
        # downloads come from other hosts than the STAC root; the token must reach them
        auth_origins=(
            "https://download.dataspace.copernicus.eu",
            "https://zipper.dataspace.copernicus.eu",
        ),
        default_assets=("product",),  # the product archive, not its previews and metadata
    ),
    "earthdatahub": _profile(
        "earthdatahub", public_root="https://earthdatahub.destine.eu/api/stac/v1"
    ),
    # our own catalog (AUX_CATALOG_*): its items are already staged, and it is not watched
    "catalog": Profile("catalog", "AUX_CATALOG", "catalog_source", ours=True),
    "lta": _profile("lta", unconfigured=LTA_NOT_SUPPORTED),
}
SOURCES: tuple[str, ...] = tuple(PROFILES)


class UnknownSourceError(ValueError):
    """A source name that is not one of :data:`SOURCES`."""


def check_source(name: str) -> str:
    """Return ``name`` if it is a known source, else raise with the valid names."""
    if name not in PROFILES:
        raise UnknownSourceError(f"unknown source {name!r}; use one of {', '.join(SOURCES)}")
    return name


def profile(name: str) -> Profile:
    """The profile of a known source (:class:`UnknownSourceError` otherwise)."""
    return PROFILES[check_source(name)]
