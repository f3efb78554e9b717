"""pystac Items read from JSON without work they do not need."""

from __future__ import annotations

from typing import Any

import pystac

_CURRENT = pystac.get_stac_version()


def read_item(doc: dict[str, Any], *, copy: bool = True) -> pystac.Item:
    """A pystac Item of ``doc``, migrated only when written for another STAC version (migrating
    a current one costs more than reading it). ``copy=False`` lends ``doc`` to the item (it
    shares its dicts): only for a document nobody else holds, such as one just parsed."""
    current = doc.get("stac_version") == _CURRENT
    return pystac.Item.from_dict(doc, migrate=not current, preserve_dict=copy)
