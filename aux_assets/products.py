"""The products file: which product types a deployment keeps, from where, and how to select."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aux_assets.selection import MAX_MARGIN_S, POLICIES, Margins
from aux_assets.sources.profiles import UnknownSourceError, check_source
from aux_assets.utils.names import UnsafeNameError, check_collection_id, check_safe_name

DEMO_PRODUCTS_FILE = Path(__file__).with_name("demo_products.yaml")
# the product types of a Reference System deployment (rs-server AUXIP and PRIP)
RS_PRODUCTS_FILE = Path(__file__).with_name("rs_products.yaml")
_PRODUCT_TYPE = re.compile(r"^[A-Za-z0-9_]{3,40}$")


class ProductsFileError(ValueError):
    """An invalid products file; the message names the file, the entry and the field."""


class ProductSpec(BaseModel):
    """One product type to keep (one entry of the products file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product_type: str
    source: str = "auxip"
    collection: str
    source_collections: tuple[str, ...] | None = None
    policy: str = "LatestValCover"
    margin_before_s: float = Field(default=0, ge=0, le=MAX_MARGIN_S, allow_inf_nan=False)
    margin_after_s: float = Field(default=0, ge=0, le=MAX_MARGIN_S, allow_inf_nan=False)
    platforms: tuple[str, ...] | None = None
    assets: tuple[str, ...] | None = None
    mandatory: bool = True
    alternatives: tuple[str, ...] = ()
    unpack: bool = False

    @field_validator("product_type")
    @classmethod
    def _product_type(cls, value: str) -> str:
        if not _PRODUCT_TYPE.match(value):
            raise ValueError(
                f"{value!r} is not a product type; use letters, digits and '_' (e.g. AUX_POEORB)"
            )
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        try:
            return check_source(value)
        except UnknownSourceError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("collection")
    @classmethod
    def _collection(cls, value: str) -> str:
        try:
            return check_collection_id(value)
        except UnsafeNameError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("source_collections")
    @classmethod
    def _source_collections(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in value or ():
            cls._collection(name)
        return value

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value not in POLICIES:
            raise ValueError(f"unknown policy {value!r}; use one of {', '.join(POLICIES)}")
        return value

    @field_validator("assets")
    @classmethod
    def _assets(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value:
                raise ValueError("an empty list stages nothing; use null to stage all assets")
            for key in value:
                check_safe_name(key, "asset key")
        return value

    @field_validator("alternatives")
    @classmethod
    def _alternatives(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alt in value:
            cls._product_type(alt)
        return value

    @property
    def margins(self) -> Margins:
        """This entry's margins dt0 and dt1."""
        return Margins(self.margin_before_s, self.margin_after_s)

    def alternative(self, product_type: str) -> ProductSpec:
        """The spec used for an alternative type: this entry's settings, another type."""
        return self.model_copy(update={"product_type": product_type, "alternatives": ()})


class ProductsFile(BaseModel):
    """The whole products file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    products: tuple[ProductSpec, ...]

    def select(self, product_types: Sequence[str] | None) -> tuple[ProductSpec, ...]:
        """The entries for ``product_types`` (all when ``None``); unknown types are an error."""
        if product_types is None:
            return self.products
        known = {p.product_type for p in self.products}
        unknown = [t for t in product_types if t not in known]
        if unknown:
            raise ProductsFileError(
                f"unknown product type(s) {', '.join(unknown)}; the products file has "
                f"{', '.join(sorted(known))}"
            )
        return tuple(p for p in self.products if p.product_type in set(product_types))


def _describe(path: Path, raw: Any, loc: tuple[int | str, ...]) -> str:
    where = ".".join(str(part) for part in loc)
    if len(loc) >= 2 and loc[0] == "products" and isinstance(loc[1], int):
        entry = raw["products"][loc[1]] if isinstance(raw.get("products"), list) else None
        name = entry.get("product_type") if isinstance(entry, dict) else None
        field = ".".join(str(part) for part in loc[2:]) or "entry"
        where = f"products[{loc[1]}]" + (f" ({name})" if name else "") + f": field '{field}'"
    return f"{path}: {where}"


def load_products(path: Path) -> ProductsFile:
    """Read and validate a products file; errors name the file, the entry and the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProductsFileError(f"{path}: products file not found; set AUX_PRODUCTS_FILE") from None
    except yaml.YAMLError as exc:
        raise ProductsFileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or "products" not in raw:
        raise ProductsFileError(f"{path}: expected a mapping with a 'products' list")
    try:
        products = ProductsFile.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "missing":
                message = "is required"
            elif err["type"] == "extra_forbidden":
                message = "is not a known field (check its spelling)"
            lines.append(f"{_describe(path, raw, tuple(err['loc']))}: {message}")
        raise ProductsFileError("\n".join(lines)) from None
    seen: set[tuple[str, str, tuple[str, ...] | None]] = set()
    for i, spec in enumerate(products.products):
        key = (spec.product_type, spec.collection, spec.platforms)
        if key in seen:
            raise ProductsFileError(
                f"{path}: products[{i}] ({spec.product_type}): duplicate entry for the same "
                "collection and platforms; merge the two entries"
            )
        seen.add(key)
    return products
