"""Staging progress per source: each item's outcome as it is decided, the bytes as they arrive,
and a line at most every ``interval_s``: items and bytes done of total, the recent rate and an
ETA weighted by bytes, or how long the run has been waiting for a slot of the source.

The stager keeps a :class:`Progress` per source; the transfer engine adds each chunk's length to
the :class:`ByteMeter` of its request (an attribute increment on the event loop, no lock, no
call); :func:`report_every` writes the lines from a task on the same loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aux_assets.utils.text import size_text

Log = Callable[[str], None]
ItemKey = tuple[str, str]  # collection, item id

DEFAULT_INTERVAL_S = 10.0
RATE_SAMPLES = 4  # the rate is taken over the last 3 intervals
STATUSES = ("staged", "present", "failed", "transferred")  # as the lines list them


class ByteMeter:
    """Bytes received so far for one item, all its files and attempts: the transfer engine adds
    each chunk's length as it arrives."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


@dataclass
class _Pending:
    """An item to transfer, not yet done: its announced bytes (``None``: a file gives no
    ``file:size``) and what has arrived."""

    size: int | None
    meter: ByteMeter


class Progress:
    """One source's staging: ``items`` to decide, their status as decided (``transferred``:
    verified, not registered yet), the bytes of the items to transfer.

    An item's bytes count as announced while it transfers, and as received once done (a failed
    item, a restarted download): the total is what this run moves. Unsized items count as items;
    the ETA leaves their bytes out and the line says how many there are.
    """

    def __init__(self, source: str, slot: str, clock: Callable[[], float] = time.monotonic):
        self.source = source
        self.slot = slot  # what a wait is for, e.g. "pool aux_source_auxip"
        self.items = 0
        self.status: dict[ItemKey, str] = {}
        self._clock = clock
        self._pending: dict[ItemKey, _Pending] = {}
        self._settled_bytes = 0  # received by the items no longer pending
        self._created = clock()
        self._waiting_since: float | None = None
        self._admitted_at: float | None = None
        self._samples: deque[tuple[float, int]] = deque(maxlen=RATE_SAMPLES)

    def expect(self, key: ItemKey, size: int | None) -> ByteMeter:
        """Count ``key`` as an item to transfer, ``size`` bytes (``None``: unknown); its meter."""
        pending = self._pending.setdefault(key, _Pending(size, ByteMeter()))
        return pending.meter

    def meter(self, key: ItemKey) -> ByteMeter:
        """The meter of ``key`` (a new one, counted in no total, for an item not expected)."""
        pending = self._pending.get(key)
        return pending.meter if pending is not None else ByteMeter()

    def waiting(self) -> None:
        """The gate refused the run a slot: lines say how long it has been waiting."""
        if self._waiting_since is None:
            self._waiting_since = self._clock()

    def admitted(self) -> None:
        """The run holds a slot: lines show the transfer from now on."""
        self._waiting_since = None
        self._admitted_at = self._clock()
        self._samples.clear()
        self._samples.append((self._admitted_at, self.bytes_done))

    def decide(self, key: ItemKey, status: str) -> bool:
        """Record ``key``'s status (``transferred``, then its outcome); whether this is the
        item's outcome, decided now (an item has one: a later one is not recorded)."""
        if self.status.get(key, "transferred") != "transferred":
            return False
        self.status[key] = status
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._settled_bytes += pending.meter.count
        return status != "transferred"

    @property
    def done(self) -> int:
        return len(self.status)

    @property
    def finished(self) -> bool:
        return self.done >= self.items

    @property
    def bytes_done(self) -> int:
        return self._settled_bytes + sum(p.meter.count for p in self._pending.values())

    def bytes_left(self) -> tuple[int, int]:
        """The announced bytes not received yet, and how many pending items are unsized."""
        left = unsized = 0
        for pending in self._pending.values():
            if pending.size is None:
                unsized += 1
            else:
                left += max(0, pending.size - pending.meter.count)
        return left, unsized

    def line(self) -> str:
        """What the source is doing now: waiting for a slot, or items, bytes, rate and ETA."""
        now = self._clock()
        done = self.bytes_done
        left, unsized = self.bytes_left()
        if self._waiting_since is not None:
            queued = size_text(left) + (f" +{unsized} unsized" if unsized else "")
            return (
                f"{self.source}: waiting for a slot of {self.slot} for "
                f"{duration_text(now - self._waiting_since)} ({self.items - self.done} items, "
                f"{queued} queued)"
            )
        if not self._samples:
            self._samples.append((self._created, 0))
        self._samples.append((now, done))
        rate = rate_of(self._samples[0], self._samples[-1])
        return f"{self._head(done, left, unsized)}, {size_text(rate)}/s, ETA {eta_text(left, rate)}"

    def summary(self) -> str:
        """The final line: how long the source took, the average rate since it was admitted."""
        now = self._clock()
        done = self.bytes_done
        left, unsized = self.bytes_left()
        since = self._created if self._admitted_at is None else self._admitted_at
        rate = rate_of((since, 0), (now, done))
        return (
            f"{self._head(done, left, unsized)} in {duration_text(now - self._created)}, "
            f"{size_text(rate)}/s"
        )

    def _head(self, done: int, left: int, unsized: int) -> str:
        counts = [f"{n} {s}" for s in STATUSES if (n := sum(v == s for v in self.status.values()))]
        by_status = f" ({', '.join(counts)})" if counts else ""
        extra = f" +{unsized} unsized" if unsized else ""
        return (
            f"{self.source}: {self.done}/{self.items} items{by_status}, {size_text(done)} of "
            f"{size_text(done + left)}{extra}"
        )


def rate_of(first: tuple[float, int], last: tuple[float, int]) -> float:
    """Bytes per second between two (time, bytes done) samples; 0 over no time."""
    seconds = last[0] - first[0]
    return (last[1] - first[1]) / seconds if seconds > 0 else 0.0


def eta_text(left: int, rate: float) -> str:
    """How long ``left`` bytes take at ``rate`` bytes/s: ``unknown`` while nothing moves."""
    if left <= 0:
        return "0 s"
    if rate <= 0:
        return "unknown"
    return duration_text(left / rate)


def duration_text(seconds: float) -> str:
    """``seconds`` for people: ``0.8 s``, ``27 s``, ``4 min 10 s``, ``2 h 5 min``."""
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


async def report_every(trackers: Iterable[Progress], interval_s: float, log: Log) -> None:
    """Every ``interval_s``, a line for each tracker not finished yet; runs until cancelled."""
    trackers = list(trackers)
    while True:
        await asyncio.sleep(interval_s)
        for tracker in trackers:
            if not tracker.finished:
                log(tracker.line())


@dataclass(frozen=True)
class Totals:
    """A staging call in numbers: items, bytes moved, wall seconds."""

    items: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def mib_per_s(self) -> float:
        return self.bytes / (1 << 20) / self.seconds if self.seconds > 0 else 0.0

    def numbers(self) -> dict[str, int | float]:
        """As run-level metadata, named apart from the per-day numbers."""
        return {
            "run_items_total": self.items,
            "run_bytes_total": self.bytes,
            "run_mib_per_s": round(self.mib_per_s, 3),
            "run_staging_seconds": round(self.seconds, 3),
        }
