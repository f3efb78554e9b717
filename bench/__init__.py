"""Loopback benchmark of aux_assets against curl and stac-asset (see bench/README.md).

Not part of the test suite. ``bash bench/run`` installs what is missing and runs
``python -m bench``; every contender runs in its own process, so that its wall time, CPU time
and peak memory come from ``os.wait4``.
"""
