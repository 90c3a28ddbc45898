"""The timeouts of waiting long polls: one reactor timer for all of them, not one per poll.

A long poll that waits arms a timer for its `timeout`, and under fan-out it is
answered long before it: each poll made a reactor DelayedCall, pushed it onto
the reactor's heap (whose comparisons are Python calls), cancelled it, and
the reactor later rebuilt its heap to drop the cancelled ones. Here a waiting
poll's deadline goes onto this queue's own heap of plain tuples (compared in
C), and a poll answered early is only marked: its entry is dropped when it
reaches the top, or when dropped entries outnumber waiting ones (the heap is
rebuilt, so it holds at most about twice the waiting polls).

Exact as the per-poll timers were: one reactor timer is kept at the earliest
deadline queued (or earlier: it then finds nothing due and moves on), and
when it fires every poll whose deadline has come is answered with `False`,
in deadline order.
"""

from __future__ import annotations

import itertools
from heapq import heapify, heappop, heappush
from typing import Any, Protocol

_INF = float("inf")
# Rebuilt when more than this many entries beyond twice the waiting ones are dropped.
_SLACK = 64


class Timed(Protocol):
    """A waiter the queue can time out (sync.Watch)."""

    def timed_out(self) -> None:
        """The deadline came while still waiting: stop and answer False."""


class DeadlineQueue:
    """Deadlines of waiting entries on one timer of `clock` (see the module docstring)."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timed]] = []
        self._order = itertools.count()
        self._waiting: set[int] = set()  # sequence numbers of entries still waiting
        self._timer: Any = None
        self._timer_at = _INF

    def add(self, entry: Timed, timeout_s: float) -> int:
        """Queue `entry` to time out in `timeout_s`; returns its ticket for `drop`."""
        deadline = self._clock.seconds() + timeout_s
        ticket = next(self._order)
        heappush(self._heap, (deadline, ticket, entry))
        self._waiting.add(ticket)
        if deadline < self._timer_at:
            self._schedule(deadline)
        if len(self._heap) > 2 * len(self._waiting) + _SLACK:
            self._compact()
        return ticket

    def drop(self, ticket: int) -> None:
        """The entry stopped waiting (answered, cancelled): it will not time out. With
        nothing left waiting the timer stops too (nothing of the queue outlives its use)."""
        waiting = self._waiting
        waiting.discard(ticket)
        if not waiting:
            self._heap.clear()
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer, self._timer_at = None, _INF

    def __len__(self) -> int:
        """Entries still waiting."""
        return len(self._waiting)

    def _schedule(self, at: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._clock.callLater(max(0.0, at - self._clock.seconds()), self._expire)

    def _expire(self) -> None:
        # Due: up to the time this timer was set for, even if the clock's arithmetic
        # put its call a rounding error before it.
        due = max(self._clock.seconds(), self._timer_at)
        self._timer, self._timer_at = None, _INF
        heap, waiting = self._heap, self._waiting
        while heap and (heap[0][0] <= due or heap[0][1] not in waiting):
            _, ticket, entry = heappop(heap)
            if ticket in waiting:
                waiting.discard(ticket)
                entry.timed_out()
        if heap and heap[0][0] < self._timer_at:  # (a timed-out entry may queue again)
            self._schedule(heap[0][0])

    def _compact(self) -> None:
        waiting = self._waiting
        self._heap = [item for item in self._heap if item[1] in waiting]
        heapify(self._heap)
