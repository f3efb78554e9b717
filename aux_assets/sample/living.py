"""The living sample: the embedded AUXIP of every day from a first day to now.

A day's products are those :func:`~aux_assets.sample.generator.plan` gives for it: the files
on the sample's fixed time grid that serve it, whatever range is asked, so a product serving
several days is the same product for each. Each file is written on first use under
``root/v<FORMAT>-seed<seed>-max<max_size>/<item id>/`` (its bytes and item document), in a
temporary folder renamed into place, so a folder that exists is complete; processes that want
the same file at once take turns on a lock file, so nothing is written twice.

Each product has the publication time the real service would give it (:mod:`rules`: restituted
orbits hours after their validity, precise ones about 20 days later, forecasts ahead, new
versions of calibration files now and then); :meth:`LivingSample.products` returns only what is
published by the ``now`` it is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from aux_assets.sample.generator import (
    COLLECTION_ID,
    MIN_MAX_SIZE,
    STAC_VERSION,
    plan,
    properties,
    write_product,
)
from aux_assets.sample.rules import RULES, Product, Seeds, TypeRule
from aux_assets.utils.jsonfiles import write_json
from aux_assets.utils.locks import exclusive_lock

SAMPLE_FOLDER = "auxip-sample"  # under $AUX_ASSETS_HOME
FORMAT = 1  # bump when the bytes or item document of a product change: a new cache folder
STALE_TMP_S = 3600  # a temporary folder this old was left by a killed process
# A bound on the time from a product's last day served to its publication (a re-published
# precise orbit: 20 days of lag plus up to 41 days of re-publication delay; 58 days seen over
# 150 days), so a search for what was published after T need only look at the days from T -
# this on.
MAX_PUBLICATION_DELAY = timedelta(days=75)


@dataclass(frozen=True)
class DayRange:
    """The days ``first`` to ``last`` (inclusive)."""

    first: date
    last: date


class LivingSample:
    """The files of the sample serving the days from ``first_day`` on, written on first use
    under ``root`` (cached across processes; safe to share between them)."""

    def __init__(
        self, root: Path, first_day: date, *, seed: int = 0, max_size: int = MIN_MAX_SIZE
    ) -> None:
        self.first_day = first_day
        self.seeds = Seeds(seed)
        self.max_size = max_size
        self.root = Path(root) / f"v{FORMAT}-seed{seed}-max{max_size}"
        self._swept = False

    def days(self, first: date | None, last: date | None, now: datetime) -> DayRange | None:
        """The days of [first, last] that exist at ``now`` (from the first day to today)."""
        low = max(first or self.first_day, self.first_day)
        high = min(last or now.date(), now.date())
        return DayRange(low, high) if low <= high else None

    def products(
        self, days: DayRange, product_types: Iterable[str] | None, now: datetime
    ) -> list[Product]:
        """The products of ``product_types`` (None: all) serving ``days`` and published by
        ``now``, sorted by name (none is written)."""
        wanted = None if product_types is None else set(product_types)
        rules: list[TypeRule] = [r for r in RULES if wanted is None or r.product_type in wanted]
        if not rules:
            return []
        found = plan(rules, days.first, days.last + timedelta(days=1), self.seeds)
        return [p for p in found if p.dates.publication <= now]

    def properties(self, product: Product) -> dict[str, Any]:
        """The item properties of ``product`` (no file written)."""
        return properties(product, self.seeds)

    def item(self, product: Product) -> dict[str, Any]:
        """The item document of ``product``, its file written first if it is not yet: the
        properties as :meth:`properties` gives them, the asset as written (its href the
        absolute ``file://`` URL of the file). A file found damaged is written again."""
        folder = self.ensure(product)
        try:
            doc = self._read(product, folder)
        except (OSError, ValueError, KeyError):  # e.g. a crash lost what the rename published
            with self._lock(product):
                shutil.rmtree(folder, ignore_errors=True)
            doc = self._read(product, self.ensure(product))
        doc["properties"] = self.properties(product)
        return doc

    @staticmethod
    def _read(product: Product, folder: Path) -> dict[str, Any]:
        """The item document in ``folder``, checked against its file's size."""
        doc: dict[str, Any] = json.loads(
            (folder / f"{product.item_id}.json").read_text(encoding="utf-8")
        )
        for asset in doc["assets"].values():
            path = (folder / asset["href"]).resolve()
            if path.stat().st_size != asset["file:size"]:
                raise ValueError(f"{path}: not {asset['file:size']} bytes")
            asset["href"] = path.as_uri()
        return doc

    def ensure(self, product: Product) -> Path:
        """The folder of ``product``'s file and item document, written if missing (first,
        once per instance, the temporary folders of killed processes are removed)."""
        if not self._swept:
            self._swept = True
            for tmp in self.root.glob(".tmp-*"):
                with contextlib.suppress(OSError):
                    if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                        shutil.rmtree(tmp)
        folder = self.root / product.item_id
        if folder.is_dir():
            return folder
        self._ensure_root()
        # processes writing the same product take turns, so it is written once; the rename
        # keeps a reader from seeing a part of it
        with self._lock(product):
            if folder.is_dir():
                return folder
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
            try:
                write_product(product, tmp, self.seeds, self.max_size)
                tmp.chmod(0o755)  # mkdtemp makes it private
                os.rename(tmp, folder)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp)
        return folder

    def _lock(self, product: Product) -> contextlib.AbstractContextManager[None]:
        """The lock of ``product`` among processes (one lock file per hash bucket of its id)."""
        bucket = hashlib.sha256(product.item_id.encode()).hexdigest()[:2]
        return exclusive_lock(self.root / ".locks" / bucket)

    def generate_day(self, day: date) -> list[Path]:
        """Write every product serving ``day`` (published or not); their folders."""
        products = plan(RULES, day, day + timedelta(days=1), self.seeds)
        return [self.ensure(p) for p in products]

    def _ensure_root(self) -> None:
        """The cache folder, with the ``collection.json`` its item documents link to."""
        collection = self.root / "collection.json"
        if collection.is_file():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {
            "type": "Collection",
            "id": COLLECTION_ID,
            "stac_version": STAC_VERSION,
            "title": "AUXIP sample (living)",
            "description": (
                "Synthetic, deterministic AUXIP-like Copernicus Sentinel-1/2/3 auxiliary data "
                f"files serving the days from {self.first_day} on, each written on first use "
                f"(seed {self.seeds.seed}, files clipped to {self.max_size} bytes)."
            ),
            "links": [{"rel": "root", "href": "./collection.json", "type": "application/json"}],
            "extent": {
                "spatial": {"bbox": [[-180, -90, 180, 90]]},
                "temporal": {"interval": [[f"{self.first_day}T00:00:00Z", None]]},
            },
            "license": "other",
        }
        write_json(collection, doc)
