"""Stream positions: which writes a reader may see.

Each syncable change gets a position in its stream. Writes commit out of
order (two rooms persist in parallel), so a reader may only advance to the
largest position below which every allocated write has finished: then an
incremental read between two positions never skips a write that commits late
and never repeats one.

Positions are allocated in memory from the table's maximum at start: one
process writes each stream (the single-writer layout; a multi-writer layout
would allocate from a PostgreSQL sequence and track each writer's position).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable


class StreamIdGenerator:
    def __init__(self, current_max: int) -> None:
        self._next = current_max + 1
        self._persisted = current_max
        self._pending: list[int] = []  # heap of allocated, unfinished positions
        self._finished: set[int] = set()
        self._listeners: list[Callable[[int], None]] = []

    def allocate(self, count: int = 1) -> list[int]:
        """Reserve `count` consecutive positions; each must later be `finish`ed."""
        ids = list(range(self._next, self._next + count))
        self._next += count
        for i in ids:
            heapq.heappush(self._pending, i)
        return ids

    def finish(self, ids: list[int]) -> None:
        """Mark positions written (committed or abandoned) and advance the persisted position."""
        self._finished.update(ids)
        advanced = False
        while self._pending and self._pending[0] in self._finished:
            done = heapq.heappop(self._pending)
            self._finished.discard(done)
            self._persisted = done
            advanced = True
        if not self._pending:
            self._persisted = max(self._persisted, self._next - 1)
        if advanced:
            for listener in list(self._listeners):
                listener(self._persisted)

    @property
    def current(self) -> int:
        """The largest position at and below which every write has finished."""
        return self._persisted

    def on_advance(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)
