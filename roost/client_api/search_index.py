"""Keeps the full-text search index up with the events stream.

Indexing hangs off the events stream position, like the federation sender:
the append path knows nothing of search, and a send never waits for it. The
indexer wakes when the notifier announces new events and indexes up to the
stream's finished position in batches; POST /search calls `catch_up` first,
so a search finds every event sent before it. Each pass also indexes the
history backfilled from other servers since the last (it takes positions below
zero, which no notification announces). A wake-up waits a moment
(`DELAY_S`) so that a burst of sends is indexed in one pass, not one each.
"""

from __future__ import annotations

import logging

from twisted.internet import defer
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from roost.storage.notifier import Notifier, StreamChange
from roost.storage.search import SearchStore
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)

DELAY_S = 1.0


class SearchIndexer:
    def __init__(self, store: SearchStore, events: StreamIdGenerator, notifier: Notifier,
                 clock: IReactorTime) -> None:
        self._clock = clock
        self._delayed: IDelayedCall | None = None
        self._store = store
        self._events = events
        self._notifier = notifier
        self._lock = DeferredLock()
        self._position: int | None = None
        self._running: defer.Deferred[None] | None = None
        self._stopped = False

    def start(self) -> None:
        self._notifier.add_listener(self._on_change)
        self._kick()

    def stop(self) -> None:
        self._stopped = True
        self._notifier.remove_listener(self._on_change)
        if self._delayed is not None and self._delayed.active():
            self._delayed.cancel()
        self._delayed = None

    def _on_change(self, change: StreamChange) -> None:
        if change.stream == "events" and self._delayed is None:
            self._delayed = self._clock.callLater(DELAY_S, self._delayed_kick)

    def _delayed_kick(self) -> None:
        self._delayed = None
        self._kick()

    def _kick(self) -> None:
        if self._running is not None:
            return  # the running pass reads up to the newest position before it ends

        def indexed(_: object) -> None:
            self._running = None
            if self._position is not None and self._position < self._events.current \
                    and self._delayed is None and not self._stopped:
                self._delayed = self._clock.callLater(DELAY_S, self._delayed_kick)

        def failed(failure: Failure) -> None:
            self._running = None  # the next announcement (or search) tries again
            logger.error("search indexing failed: %s", failure.getTraceback())

        self._running = defer.ensureDeferred(self.catch_up())
        self._running.addCallbacks(indexed, failed)

    async def catch_up(self) -> int:
        """Index every event up to the stream's finished position; returns that position."""
        await self._lock.acquire()
        try:
            if self._position is None:
                self._position = await self._store.position()
            while self._position < self._events.current:
                self._position = await self._store.index_upto(self._events.current)
            # History backfilled from other servers (positions below zero, never announced).
            while await self._store.index_backfilled() > 0:
                pass
            return self._position
        finally:
            self._lock.release()
