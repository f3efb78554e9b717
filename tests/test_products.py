from pathlib import Path

import pytest

from aux_assets.filters import RS_LEGACY_TYPES
from aux_assets.products import (
    DEMO_PRODUCTS_FILE,
    RS_PRODUCTS_FILE,
    ProductsFileError,
    load_products,
)
from aux_assets.selection import POLICIES


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "products.yaml"
    path.write_text(text)
    return path


def test_demo_file_is_valid_and_covers_s1_s2_s3():
    products = load_products(DEMO_PRODUCTS_FILE).products
    types = {p.product_type for p in products}
    assert len(types) >= 12
    assert {p.collection for p in products} == {"s1-aux", "s2-aux", "s3-aux"}
    assert all(p.policy in POLICIES for p in products)
    poe = next(p for p in products if p.product_type == "AUX_POEORB")
    assert poe.alternatives == ("AUX_RESORB",)
    assert poe.platforms == ("sentinel-1a", "sentinel-1c")
    fro = next(p for p in products if p.product_type == "AX___FRO_AX")
    assert (fro.margin_before_s, fro.margin_after_s) == (7000, 7000)


def test_rs_file_is_valid_and_names_rs_collections_and_eopf_types():
    assert RS_PRODUCTS_FILE.parent == DEMO_PRODUCTS_FILE.parent  # shipped in the package
    products = load_products(RS_PRODUCTS_FILE).products
    assert {p.source for p in products} == {"auxip", "prip"}
    assert all(p.source_collections for p in products)  # never every station by default
    auxip = [p for p in products if p.source == "auxip"]
    assert {c for p in auxip for c in p.source_collections or ()} == {"adgs"}
    prip = [p for p in products if p.source == "prip"]
    assert all(p.product_type in RS_LEGACY_TYPES for p in prip)  # the types PRIP returns
    assert all(p.platforms and len(p.platforms) == 1 for p in prip)  # one station, one unit
    raw = next(p for p in prip if p.product_type == "S01SIWRAW")
    assert raw.source_collections == ("S1A_L0_IW_RAW",) and raw.platforms == ("sentinel-1a",)
    # the same EOPF type from three collections: kept apart by collection
    msi = [p for p in prip if p.product_type == "OPER_MSI"]
    assert len({p.collection for p in msi}) == len(msi) == 3


def test_defaults_and_alternative_inherits_settings(tmp_path):
    path = _write(
        tmp_path,
        "products:\n"
        "  - {product_type: AUX_POEORB, collection: s1-aux, alternatives: [AUX_RESORB]}\n",
    )
    spec = load_products(path).products[0]
    assert (spec.source, spec.policy, spec.mandatory, spec.assets) == (
        "auxip",
        "LatestValCover",
        True,
        None,
    )
    alt = spec.alternative("AUX_RESORB")
    assert (alt.product_type, alt.collection, alt.alternatives) == ("AUX_RESORB", "s1-aux", ())


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{collection: s1-aux}", "products[0]: field 'product_type': is required"),
        ("{product_type: AUX_POEORB}", "products[0] (AUX_POEORB): field 'collection': is required"),
        (
            "{product_type: AUX_POEORB, collection: s1-aux, policy: Foo}",
            "field 'policy': unknown policy 'Foo'; use one of ValCover",
        ),
        (
            "{product_type: AUX_POEORB, collection: s1-aux, source: ftp}",
            "field 'source': unknown source 'ftp'; use one of auxip",
        ),
        (
            "{product_type: AUX_POEORB, collection: s1-aux, margin_before_s: -5}",
            "field 'margin_before_s'",
        ),
        (
            "{product_type: AUX_POEORB, collection: s1-aux, margin_after_s: .inf}",
            "field 'margin_after_s'",
        ),
        (
            "{product_type: AUX_POEORB, collection: s1-aux, margin_before_s: 1.0e+12}",
            "field 'margin_before_s'",
        ),
        (
            "{product_type: AUX_POEORB, collection: s1-aux, polcy: ValCover}",
            "field 'polcy': is not a known field",
        ),
        ("{product_type: 'AUX POE', collection: s1-aux}", "is not a product type"),
        ("{product_type: AUX_POEORB, collection: ../x}", "field 'collection'"),
        ("{product_type: AUX_POEORB, collection: s1-aux, assets: ['../x']}", "field 'assets'"),
        ("{product_type: AUX_POEORB, collection: s1-aux, assets: []}", "use null to stage all"),
    ],
)
def test_invalid_entries_name_file_entry_and_field(tmp_path, entry, message):
    path = _write(tmp_path, f"products:\n  - {entry}\n")
    with pytest.raises(ProductsFileError) as err:
        load_products(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_duplicate_entries_and_bad_documents(tmp_path):
    dup = "products:\n" + "  - {product_type: AUX_WND, collection: s1-aux}\n" * 2
    with pytest.raises(ProductsFileError, match=r"products\[1\] \(AUX_WND\): duplicate"):
        load_products(_write(tmp_path, dup))
    with pytest.raises(ProductsFileError, match="not valid YAML"):
        load_products(_write(tmp_path, "products: [\n"))
    with pytest.raises(ProductsFileError, match="expected a mapping"):
        load_products(_write(tmp_path, "- a\n"))
    with pytest.raises(ProductsFileError, match="not found; set AUX_PRODUCTS_FILE"):
        load_products(tmp_path / "missing.yaml")


def test_select_subset_and_unknown_types():
    products = load_products(DEMO_PRODUCTS_FILE)
    assert [p.product_type for p in products.select(["AUX_WND"])] == ["AUX_WND"]
    with pytest.raises(ProductsFileError, match="unknown product type"):
        products.select(["NOPE"])
