"""Tests of the Dagster layer (aux_assets.defs and aux_assets.definitions)."""
