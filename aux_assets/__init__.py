"""aux_assets: Copernicus Sentinel auxiliary data staged and catalogued as Dagster assets.

Two layers. ``defs/`` is the Dagster layer, and the only package that imports dagster:
assets, checks, resources, partitions, schedules, sensors, pools, IO managers, assembled by
``definitions`` (the code location). Everything else is the domain core and its adapters,
importable and testable without Dagster:

=================  ==========================================================================
``products``       the products file: which product types to keep, from where, how to select
``selection``      the ESA selection policies (ValCover family): ``select()``, policy families
``filters``        CQL2 builders (``create_valcover_filter``, the windows we send), validation
``planning``       search and select per window: what each product type gets in a day
``discovery``      which days newly published items serve; the sensor's cursor and run keys
``documents``      the typed shapes of the three asset documents and their builders
``auth``           credentials bound to origins, OAuth2, the one rule for a 401
``sources/``       where items are searched (STAC API, static catalog); ``profiles``: what is
                   special about auxip, prip, cadip, cdse, earthdatahub, catalog and lta
``catalog/``       where items are registered (static catalog, STAC API with Transactions,
                   rs-server-catalog)
``storage/``       where bytes go (local files, S3)
``staging/``       what moves bytes: stager, the registered item's shape, transfer engine,
                   archives, gates
``utils/``         small helpers: names, urls, text, retry, times, checksums, JSON files
``settings``       environment settings both layers read
``tracing``        OpenTelemetry spans, exported over OTLP/HTTP when the ``OTEL_*`` variables
                   ask for them (a no-op otherwise); ``traceparent`` on outgoing requests
``report``         ``python -m aux_assets.report DAY``: what a materialized day holds
``sample/``        ``python -m aux_assets.sample``: the embedded AUXIP-like sample
=================  ==========================================================================

Public API: ``aux_assets.definitions.defs``, ``aux_assets.selection.select``,
``aux_assets.filters.create_valcover_filter``, and the two ``python -m`` commands above.

Glossary: a *window* is a processing window (a partition's day, or a given interval); W is the
window widened by a product type's margins; a *unit* is a platform (``sentinel-1a``); a
product's *validity* is [start_datetime, end_datetime]; *latest* means the newest generation
(``processing:datetime``); a *source* is where items are searched, the *catalog* where staged
items are registered, the *storage* where their bytes go.
"""
