"""aux_assets: Copernicus Sentinel auxiliary data staged and catalogued as Dagster assets."""
