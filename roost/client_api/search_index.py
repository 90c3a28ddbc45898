"""Keeps the full-text search index up with the events stream.

Indexing hangs off the events stream position, like the federation sender:
the append path knows nothing of search, and a send never waits for it. The
indexer wakes when the notifier announces new events and indexes up to the
stream's finished position in batches; POST /search calls `catch_up` first,
so a search finds every event sent before it. Each pass also indexes the
history backfilled from other servers since the last (it takes positions below
zero, which no notification announces). A wake-up waits a moment
(`DELAY_S`) so that a burst of sends is indexed in one pass, not one each
(roost.storage.follower runs the passes).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from roost.storage.follower import DebouncedFollower
from roost.storage.notifier import Notifier
from roost.storage.search import SearchStore
from roost.storage.streams import StreamIdGenerator

DELAY_S = 1.0


class SearchIndexer:
    def __init__(self, store: SearchStore, events: StreamIdGenerator, notifier: Notifier,
                 clock: IReactorTime) -> None:
        self._store = store
        self._events = events
        self._position: int | None = None
        self._follower = DebouncedFollower(
            "search indexing", notifier, clock, DELAY_S, self._index,
            lambda: self._position is not None and self._position < self._events.current)

    def start(self) -> None:
        self._follower.start(now=True)

    def stop(self) -> None:
        self._follower.stop()

    async def catch_up(self) -> int:
        """Index every event up to the stream's finished position; returns that position."""
        return await self._follower.run(self._index)

    async def _index(self) -> int:
        if self._position is None:
            self._position = await self._store.position()
        # Up to where the stream was when the pass began: events landing meanwhile wait for
        # the next pass (the follower schedules it), so a steady stream of sends is indexed
        # once per DELAY_S, not chased with a transaction per send or two.
        target = self._events.current
        while self._position < target:
            self._position = await self._store.index_upto(target)
        # History backfilled from other servers (positions below zero, never announced).
        while await self._store.index_backfilled() > 0:
            pass
        return self._position
