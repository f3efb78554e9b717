"""Admission to a source across runs: a gate decides when this run may transfer from a source
and with how many connections, so that parallel runs share the source's connection limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

FIRST_POLL_S = 0.2
MAX_POLL_S = 5.0


class SourceGate(Protocol):
    """Shares each source between the runs of a deployment (e.g. a Dagster pool per source).
    A gate may also name its slots for messages with a method ``slot_name(source)``
    (:func:`slot_name`)."""

    def claim(self, source: str, connections: int) -> int | None:
        """Try to admit this run to ``source``: the connections it may open (1..``connections``),
        or ``None`` while other runs hold the source (the claim stays queued; call again)."""
        ...

    def release(self, source: str) -> None:
        """Give ``source`` back, or withdraw a queued claim; safe to call more than once."""
        ...


class OpenGate:
    """No sharing: every run may open all of a source's connections."""

    def claim(self, source: str, connections: int) -> int | None:
        return connections

    def release(self, source: str) -> None:
        return None


@dataclass(frozen=True)
class Admission:
    """A run admitted to a source: the connections it may open, and whether it had to wait
    (another run held the source meanwhile and may have staged the same items)."""

    connections: int
    waited: bool


def slot_name(gate: SourceGate, source: str) -> str:
    """What messages call the slot a run waits for: the gate's ``slot_name(source)`` when it
    has one (a Dagster pool: ``pool aux_source_auxip``), else ``source auxip``."""
    named = getattr(gate, "slot_name", None)
    return str(named(source)) if callable(named) else f"source {source}"


@asynccontextmanager
async def admitted(
    gate: SourceGate,
    source: str,
    connections: int,
    on_wait: Callable[[], None] = lambda: None,
) -> AsyncIterator[Admission]:
    """Wait (without blocking the event loop) until ``gate`` admits this run to ``source``;
    yield the admission (1..``connections`` connections; ``waited`` if a claim was refused);
    release on exit, cancellation and errors included. ``on_wait`` is called when the first
    claim is refused."""
    delay = FIRST_POLL_S
    waited = False
    try:
        while (granted := await asyncio.to_thread(gate.claim, source, connections)) is None:
            if not waited:
                on_wait()
            waited = True
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, MAX_POLL_S)
        yield Admission(max(1, min(granted, connections)), waited)
    finally:
        await asyncio.shield(asyncio.to_thread(gate.release, source))
