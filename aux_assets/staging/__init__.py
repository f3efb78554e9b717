"""What moves bytes: dedupe -> admit -> transfer -> verify -> unpack -> commit -> register.

:mod:`~aux_assets.staging.stager` drives an item through those steps,
:mod:`~aux_assets.staging.items` is the shape of a registered item,
:mod:`~aux_assets.staging.transfer` the streaming download engine,
:mod:`~aux_assets.staging.archives` safe unpacking, :mod:`~aux_assets.staging.gates` the
admission to a source shared between runs, and :mod:`~aux_assets.staging.progress` what a run
says while it stages (outcomes, bytes, rate, ETA). The invariants are in ``docs/design/staging.md``.
Nothing is imported here: a process that only transfers loads only the engine.
"""
