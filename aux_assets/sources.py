"""Names of the STAC sources aux_assets can search, and how they map to resources."""

from __future__ import annotations

SOURCES: tuple[str, ...] = ("auxip", "prip", "cadip", "cdse", "earthdatahub", "catalog", "lta")
LTA_NOT_SUPPORTED = (
    "LTA auxiliary product search is not supported yet: no LTA STAC endpoint is configured"
)


class UnknownSourceError(ValueError):
    """A source name that is not one of :data:`SOURCES`."""


def check_source(name: str) -> str:
    """Return ``name`` if it is a known source, else raise with the valid names."""
    if name not in SOURCES:
        raise UnknownSourceError(f"unknown source {name!r}; use one of {', '.join(SOURCES)}")
    return name


def resource_key(source: str) -> str:
    """The Dagster resource key of a source (``catalog`` is ``catalog_source``)."""
    return "catalog_source" if check_source(source) == "catalog" else source
