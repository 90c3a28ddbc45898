"""A debounced follower of a stream: work that trails the events stream in passes.

Several parts act on new events without being in the append path: they follow
the stream's position (the search index, the guest-access watcher). Each wants
the same loop: on a notification, wait a moment (`delay_s`) so that a burst of
sends is handled in one pass rather than one each; run one pass at a time; when
a pass ends and the follower is still behind, schedule another; log a failed
pass and try again on the next notification. `run()` is the same pass for a
caller who needs it done now (POST /search), serialised with the scheduled ones.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.internet import defer
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from roost.storage.notifier import Notifier, StreamChange

logger = logging.getLogger(__name__)

R = TypeVar("R")


class DebouncedFollower:
    def __init__(self, what: str, notifier: Notifier, clock: IReactorTime, delay_s: float,
                 work: Callable[[], Awaitable[object]], behind: Callable[[], bool],
                 stream: str = "events") -> None:
        self._what = what
        self._notifier = notifier
        self._clock = clock
        self._delay_s = delay_s
        self._work = work
        self._behind = behind
        self._stream = stream
        self._lock = DeferredLock()
        self._delayed: IDelayedCall | None = None
        self._running: defer.Deferred[None] | None = None
        self._stopped = False

    def start(self, now: bool = False) -> None:
        """Follow the stream; with `now`, run a first pass at once (catch up after a start)."""
        self._notifier.add_listener(self._on_change)
        if now:
            self._kick()

    def stop(self) -> None:
        self._stopped = True
        self._notifier.remove_listener(self._on_change)
        if self._delayed is not None and self._delayed.active():
            self._delayed.cancel()
        self._delayed = None

    async def run(self, work: Callable[[], Awaitable[R]]) -> R:
        """`work()` exclusive of every other pass."""
        await self._lock.acquire()
        try:
            return await work()
        finally:
            self._lock.release()

    def _on_change(self, change: StreamChange) -> None:
        if change.stream == self._stream:
            self._schedule()

    def _schedule(self) -> None:
        if self._delayed is None and not self._stopped:
            self._delayed = self._clock.callLater(self._delay_s, self._fire)

    def _fire(self) -> None:
        self._delayed = None
        self._kick()

    def _kick(self) -> None:
        if self._running is not None:
            return  # when it ends, a follower still behind schedules the next pass

        def done(_: object) -> None:
            self._running = None
            if self._behind():
                self._schedule()

        def failed(failure: Failure) -> None:
            self._running = None  # the next notification tries again
            logger.error("%s failed: %s", self._what, failure.getTraceback())

        self._running = defer.ensureDeferred(self.run(self._work))
        self._running.addCallbacks(done, failed)
