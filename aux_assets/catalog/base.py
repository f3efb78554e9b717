"""Where staged items are registered: the :class:`Catalog` interface, its errors, and the
collection we create for staged items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import pystac

STAC_VERSION = "1.1.0"


class CatalogError(RuntimeError):
    """A catalog operation that failed; the message names the catalog and the reason.

    ``failed_ids``, when known, are the items of a write that were not stored (the others were);
    ``reasons`` what the catalog said about each item it refused, where it said.
    """

    def __init__(
        self,
        message: str,
        failed_ids: frozenset[str] | None = None,
        reasons: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.failed_ids = failed_ids
        self.reasons = dict(reasons or {})


def new_collection(collection_id: str) -> dict[str, Any]:
    """A new, valid STAC Collection for staged aux items (global extent, open interval)."""
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "id": collection_id,
        "description": f"Auxiliary products staged by aux_assets into {collection_id}",
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [],
    }


class Catalog(Protocol):
    """A STAC catalog we register staged items in.

    ``relocates``: the catalog moves registered files into storage of its own
    (rs-server-catalog), so their hrefs are read back after registration.
    """

    relocates: bool

    @property
    def lookups(self) -> int:
        """How many batched id lookups this client made (for metadata and benchmarks)."""
        ...

    def describe(self) -> str: ...

    def ensure_collection(self, collection_id: str) -> None:
        """Create the collection if it does not exist."""
        ...

    def get_items(self, collection_id: str, ids: Sequence[str]) -> dict[str, pystac.Item]:
        """The items of ``ids`` that exist in the collection, in one batched lookup."""
        ...

    def upsert(self, collection_id: str, items: Sequence[pystac.Item]) -> None:
        """Insert or replace ``items`` in the collection, in bulk."""
        ...

    def item_url(self, collection_id: str, item_id: str) -> str:
        """Where a user opens the item (no credentials in it)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
