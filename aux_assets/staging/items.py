"""What a registered item looks like: the contract between staging and every catalog.

A registered item is a copy of the source item with our assets: each asset's href points at our
storage, ``file:size`` and ``file:checksum`` (a multihash) are what we verified, and
``alternate.source`` keeps the source's href (without userinfo) and the size and checksum it
announced. Links are dropped (catalogs make their own); the file and alternate-assets extensions
are declared. Assets are stored as ``<collection>/<item id>/<file name>``.
"""

from __future__ import annotations

import contextlib
import copy
from datetime import datetime
from typing import Any

import pystac

from aux_assets.catalog.static import ITEM_FILE_BYTES
from aux_assets.staging.archives import extract_temp_name
from aux_assets.storage.base import spool_name
from aux_assets.utils.checksums import Checksum, ChecksumError
from aux_assets.utils.names import (
    MAX_KEY_BYTES,
    UnsafeNameError,
    check_safe_name,
    normal_name,
    same_after_nfc,
    utf8_size,
)
from aux_assets.utils.times import parse_utc
from aux_assets.utils.urls import href_file_name, strip_userinfo

ALTERNATE_EXT = "https://stac-extensions.github.io/alternate-assets/v1.2.0/schema.json"
FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"

# The most bytes a temporary name adds to the name it is made from: item ids and file names must
# leave room for it. An archive unpacked from its spool folder, ``..<file>.<12 hex>.work.extract-
# <16 hex>``, adds the most; a ``.part`` file and the catalog's ``.<id>.json.<8 hex>.tmp`` less.
TEMP_NAME_BYTES = max(
    utf8_size(spool_name("", "part")),
    utf8_size(extract_temp_name(spool_name("", "work"))),
    ITEM_FILE_BYTES,
)


def normal_assets(item: pystac.Item) -> dict[str, pystac.Asset]:
    """The item's assets under their keys in NFC; :class:`UnsafeNameError` when two keys are
    the same after NFC normalisation."""
    assets: dict[str, pystac.Asset] = {}
    spelled: dict[str, str] = {}
    for key, asset in item.assets.items():
        normal = normal_name(key)
        if normal in assets:
            raise UnsafeNameError(
                f"{same_after_nfc('asset key', spelled[normal], key)}; an item may not have both"
            )
        assets[normal], spelled[normal] = asset, key
    return assets


def asset_filename(key: str, asset: pystac.Asset) -> str:
    """The file name of an asset in storage: its key when it looks like a file name, else the
    last segment of its href (in NFC) when that does, else the key. A key naming a ``.SAFE``
    product (a folder) is the zip it is delivered as: rs-server PRIP keys ``X.SAFE.zip`` as
    ``X.SAFE``. The name leaves room for :data:`TEMP_NAME_BYTES`."""
    if "." in key.strip("."):
        if key.upper().endswith(".SAFE"):
            key = f"{key}.zip"
        return check_safe_name(key, "asset key", TEMP_NAME_BYTES)
    tail = normal_name(href_file_name(asset.href))
    with contextlib.suppress(UnsafeNameError):
        if "." in tail.strip(".") and check_safe_name(tail, "asset file name", TEMP_NAME_BYTES):
            return tail
    return check_safe_name(key, "asset key", TEMP_NAME_BYTES)


GENERATION_DIGITS = 16


def storage_key(collection: str, item_id: str, filename: str) -> str:
    """The key an asset's spool files are named after (its item's folder, no generation)."""
    return f"{collection}/{item_id}/{filename}"


def check_stored_key(asset_key: str, spool_key: str, max_bytes: int) -> str:
    """``spool_key`` when the key its file is stored under (:func:`generation_key`) has at most
    ``max_bytes`` bytes in UTF-8, else :class:`UnsafeNameError` naming the asset."""
    size = utf8_size(spool_key) + GENERATION_DIGITS + len("/")
    if size > max_bytes:
        raise UnsafeNameError(
            f"asset {asset_key!r} would be stored under a key of {size} bytes in UTF-8 (its "
            f"generation folder included); this storage takes keys of at most {max_bytes} bytes "
            f"(S3's limit of {MAX_KEY_BYTES}, less the storage's prefix): shorten the item id "
            "or the asset's file name"
        )
    return spool_key


def generation_of(checksum: Checksum) -> str:
    """The generation of a file: the first :data:`GENERATION_DIGITS` hex digits of its digest."""
    return checksum.hexdigest.lower()[:GENERATION_DIGITS]


def generation_key(spool_key: str, checksum: Checksum) -> str:
    """Where the file verified with ``checksum`` is stored: ``spool_key`` with the file's
    generation folder before its name."""
    folder, _, name = spool_key.rpartition("/")
    return f"{folder}/{generation_of(checksum)}/{name}"


def version_root(key: str, collection: str, item_id: str) -> str | None:
    """What holds one version of a file of the item ``collection``/``item_id`` stored at
    ``key``: its generation folder ``<collection>/<item id>/<generation>``, or, in the older
    layout without generations, the file or unpacked folder right in the item's folder.
    ``None`` for a key outside the item's folder or with an unsafe component."""
    parts = key.split("/")
    if len(parts) < 3 or parts[:2] != [collection, item_id]:
        return None
    try:
        check_safe_name(parts[2], "storage key component")
    except UnsafeNameError:
        return None
    return "/".join(parts[:3])


def source_checksum(asset: pystac.Asset) -> Checksum | None:
    """The checksum a source asset announces (``ChecksumError`` if it cannot be read)."""
    value = asset.extra_fields.get("file:checksum")
    return Checksum.parse(str(value)) if value else None


def eviction(asset: pystac.Asset) -> datetime | None:
    """When the source evicts the asset's file (rs-server's ``eviction_datetime``); ``None``
    when it does not say, or not as a timestamp."""
    value = asset.extra_fields.get("eviction_datetime")
    try:
        return parse_utc(value) if isinstance(value, str) else None
    except ValueError:
        return None


def alternate_source(asset: pystac.Asset) -> dict[str, Any]:
    """What a registered asset records of its source (``alternate.source``)."""
    source: dict[str, Any] = asset.extra_fields.get("alternate", {}).get("source", {})
    return source


def registered_checksum(asset: pystac.Asset) -> Checksum | None:
    """The checksum the source announced for a registered asset, else the one we verified;
    ``None`` when neither can be read."""
    value = alternate_source(asset).get("file:checksum") or asset.extra_fields.get("file:checksum")
    try:
        return Checksum.parse(str(value)) if value else None
    except ChecksumError:
        return None


def registered_asset(
    source: pystac.Asset, href: str, size: int, checksum: Checksum, *, unpacked: bool = False
) -> pystac.Asset:
    """The registered asset: the source's fields, our href, the verified size and checksum, and
    the source as ``alternate.source``. An ``unpacked`` asset (the largest member of an archive)
    has no media type: the source's is the archive's."""
    extra = {k: v for k, v in source.extra_fields.items() if not k.startswith("file:")}
    extra.update({"file:size": size, "file:checksum": checksum.multihash()})
    # a password in a source href is neither sent (see transfer.py) nor registered
    alternate: dict[str, Any] = {"href": strip_userinfo(source.href)}
    for name in ("file:size", "file:checksum"):
        if name in source.extra_fields:
            alternate[name] = source.extra_fields[name]
    extra["alternate"] = {"source": alternate}
    return pystac.Asset(
        href=href,
        title=source.title,
        description=source.description,
        media_type=None if unpacked else source.media_type,
        roles=source.roles,
        extra_fields=extra,
    )


def registered_item(
    source: pystac.Item, collection: str, assets: dict[str, pystac.Asset]
) -> pystac.Item:
    """A copy of ``source`` for the catalog: our assets, no links, the file and alternate
    extensions declared. (Built field by field: a generic ``deepcopy`` of a pystac item costs
    more than writing it to the catalog.)"""
    item = pystac.Item(
        id=source.id,
        geometry=copy.deepcopy(source.geometry),
        bbox=list(source.bbox) if source.bbox is not None else None,
        datetime=source.datetime,
        properties=copy.deepcopy(source.properties),
        stac_extensions=[
            *source.stac_extensions,
            *(e for e in (FILE_EXT, ALTERNATE_EXT) if e not in source.stac_extensions),
        ],
        collection=collection,
        extra_fields=copy.deepcopy(source.extra_fields),
    )
    item.assets = assets
    return item
