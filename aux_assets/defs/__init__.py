"""The Dagster layer: the only package of aux_assets that imports dagster.

Files are named by Dagster kind: :mod:`~aux_assets.defs.assets` (and their
:mod:`~aux_assets.defs.checks`), :mod:`~aux_assets.defs.resources`,
:mod:`~aux_assets.defs.partitions`, :mod:`~aux_assets.defs.schedules` (with ``aux_job``),
:mod:`~aux_assets.defs.sensors`, :mod:`~aux_assets.defs.pools` and
:mod:`~aux_assets.defs.io_managers`. ``aux_assets.definitions`` assembles them.
"""
