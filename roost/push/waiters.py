"""Callers waiting for push evaluation to reach an events position.

/sync waits (`reached`) until the unread counts cover the events it serves:
in one process for its own evaluator (push/evaluator.py), among several for the
evaluator's position heard on the bus (push/shared_counts.py). Both hold the
same list of waiters, released when the position moves and, so that a failing
or silent evaluator never hangs a reader, after each waiter's timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime


class PositionWaiters:
    """Deferreds waiting for a position, with one timer for all of them: every /sync a
    message wakes waits here under fan-out, so the timer is armed for the earliest
    deadline and re-armed for the next when it fires."""

    def __init__(self, clock: IReactorTime,
                 on_timeout: Callable[[], None] | None = None) -> None:
        """`on_timeout`: called whenever a waiter is released by its timeout."""
        self._clock = clock
        self._on_timeout = on_timeout
        self._waiters: list[tuple[int, float, defer.Deferred[None]]] = []
        self._timer: Any = None

    def __len__(self) -> int:
        return len(self._waiters)

    def wait(self, position: int, timeout_s: float) -> defer.Deferred[None]:
        """Fires once `release` is called with `position` or above, or after `timeout_s`."""
        done: defer.Deferred[None] = defer.Deferred()
        now = self._clock.seconds()
        self._waiters.append((position, now + timeout_s, done))
        timer = self._timer
        if timer is not None and timer.active() and timer.getTime() > now + timeout_s:
            timer.cancel()  # a shorter timeout than the one armed for
        self._arm(now)
        return done

    def release(self, upto: int) -> None:
        """Fire every waiter for a position at or below `upto`."""
        waiting, self._waiters = self._waiters, []
        for position, deadline, done in waiting:
            if position <= upto:
                if not done.called:
                    done.callback(None)
            else:
                self._waiters.append((position, deadline, done))
        if not self._waiters and self._timer is not None and self._timer.active():
            self._timer.cancel()
            self._timer = None

    def release_all(self) -> None:
        """Fire every waiter (what they wait for will not come: stopped, or restarted)."""
        self.release(2**62)

    def _arm(self, now: float) -> None:
        if self._waiters and (self._timer is None or not self._timer.active()):
            first = min(deadline for _, deadline, _ in self._waiters)
            self._timer = self._clock.callLater(max(0.0, first - now), self._time_out)

    def _time_out(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        waiting, self._waiters = self._waiters, []
        expired = []
        for position, deadline, done in waiting:
            if deadline > now:
                self._waiters.append((position, deadline, done))
            else:
                expired.append(done)
        if expired and self._on_timeout is not None:
            self._on_timeout()  # before the waiters go on: they see its effect
        for done in expired:
            if not done.called:
                done.callback(None)
        self._arm(now)
