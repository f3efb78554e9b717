"""Dagster pools ``aux_source_<name>``: the runs of a deployment share each source's connections.

A run transfers from a source only while it holds a slot of the source's pool, and opens at most
``MAX_CONNECTIONS // slots`` connections, so all runs together never exceed the source's
``AUX_<SOURCE>_MAX_CONNECTIONS``. A pool without a limit takes the instance's
``concurrency.pools.default_limit`` when one is set, else :data:`DEFAULT_POOL_SLOTS` (one run at a
time per source, with all its connections). Slots are claimed per (run, step, source) in the
instance's concurrency tables: the UI's Concurrency page shows and edits them, and run monitoring
frees the slots of a run that died (``free_slots_after_run_end_seconds``).

Dagster's SQLite storage claims a slot by a select then an update without a row lock, so two
processes claiming at once could both take the one slot (seen in CI: 4 connections under a limit
of 2). The gate therefore makes its slot operations one at a time on the host, with a lock file
in the instance's folder; PostgreSQL storage locks the slot row itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from aux_assets.utils.locks import exclusive_lock

POOL_PREFIX = "aux_source_"
DEFAULT_POOL_SLOTS = 1
LOCK_FILE = ".aux_pool_slots.lock"


def pool_name(source: str) -> str:
    """The Dagster pool of ``source``."""
    return f"{POOL_PREFIX}{source}"


class DagsterPoolGate:
    """A :class:`~aux_assets.staging.gates.SourceGate` on the Dagster instance's pools."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        step_key: str,
        *,
        priority: int = 0,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._storage = instance.event_log_storage
        self._lock_path = Path(instance.root_directory) / LOCK_FILE
        self._default = instance.global_op_concurrency_default_limit
        self._run_id = run_id
        self._step_key = step_key
        self._priority = priority
        self._log = log
        self._waiting: set[str] = set()

    @property
    def enabled(self) -> bool:
        """Whether the instance can share slots between runs (not an in-memory instance)."""
        return bool(self._storage.supports_global_concurrency_limits)

    def _one_at_a_time(self) -> contextlib.AbstractContextManager[None]:
        """Hold the host's lock on slot operations."""
        return exclusive_lock(self._lock_path)

    def _claim_key(self, source: str) -> str:
        return f"{self._step_key}[{source}]"

    def _slots(self, pool: str) -> int:
        """The pool's slot count, giving the pool its default limit when it has none. Runs
        starting together may both find no limit: the one whose write loses (a unique-key
        error) takes the limit the other wrote."""
        if pool not in self._storage.get_concurrency_keys():
            try:
                if self._default is not None:
                    self._storage.initialize_concurrency_limit_to_default(pool)
                else:
                    self._storage.set_concurrency_slots(pool, DEFAULT_POOL_SLOTS)
            except Exception:
                if pool not in self._storage.get_concurrency_keys():
                    raise
                return self._storage.get_concurrency_info(pool).slot_count
            self._log(
                f"pool {pool} had no limit: it now has "
                f"{self._default if self._default is not None else DEFAULT_POOL_SLOTS} slot(s); "
                "change it on the Concurrency page or with `dagster instance concurrency set`"
            )
        return self._storage.get_concurrency_info(pool).slot_count

    def slot_name(self, source: str) -> str:
        """What messages call the slot of ``source``
        (:func:`aux_assets.staging.gates.slot_name`)."""
        return f"pool {pool_name(source)}"

    def claim(self, source: str, connections: int) -> int | None:
        if not self.enabled:
            return connections
        pool = pool_name(source)
        with self._one_at_a_time():
            slots = self._slots(pool)
            status = self._storage.claim_concurrency_slot(
                pool, self._run_id, self._claim_key(source), self._priority
            )
        if not status.is_claimed:
            if source not in self._waiting:
                self._waiting.add(source)
                self._log(f"waiting for a slot of pool {pool} ({slots} slot(s), all held)")
            return None
        granted = max(1, connections // max(slots, 1))
        if slots > connections:
            self._log(
                f"pool {pool} has {slots} slots for {connections} connection(s): runs may open "
                f"up to {slots} in total; give the pool at most {connections} slots"
            )
        self._log(f"pool {pool}: slot claimed, {granted} of {connections} connection(s)")
        return granted

    def release(self, source: str) -> None:
        if self.enabled:
            with self._one_at_a_time():
                self._storage.free_concurrency_slot_for_step(self._run_id, self._claim_key(source))
