"""Guests leave a room whose m.room.guest_access stops being can_join (the spec's MUST).

Like the search indexer this follows the events stream (a local change and
one arriving over federation alike), never the append path: on each new
position it asks which rooms' guest access changed, and for each that no
longer allows guests it makes every local guest joined there leave, as the
guest itself (a user may always leave). It starts at the stream position of
the start; a change that lands while the server is down is acted on when the
room's guest access next changes. A burst of sends is looked at in one pass
(`DELAY_S` after the first), so the send path pays one query per pass, not
one per message.
"""

from __future__ import annotations

import logging

from twisted.internet import defer
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from roost.rooms.engine import NewEvent, RoomEngine
from roost.rooms.engine_types import RoomError
from roost.storage.guests import GuestQueries
from roost.storage.notifier import Notifier, StreamChange
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)

DELAY_S = 0.5


class GuestAccessWatcher:
    def __init__(self, queries: GuestQueries, engine: RoomEngine, events: StreamIdGenerator,
                 notifier: Notifier, clock: IReactorTime) -> None:
        self._clock = clock
        self._delayed: IDelayedCall | None = None
        self._queries = queries
        self._engine = engine
        self._events = events
        self._notifier = notifier
        self._position = events.current
        self._lock = DeferredLock()

    def start(self) -> None:
        self._notifier.add_listener(self._on_change)

    def stop(self) -> None:
        self._notifier.remove_listener(self._on_change)
        if self._delayed is not None and self._delayed.active():
            self._delayed.cancel()
        self._delayed = None

    def _on_change(self, change: StreamChange) -> None:
        if change.stream == "events" and self._delayed is None:
            self._delayed = self._clock.callLater(DELAY_S, self._run)

    def _run(self) -> None:
        self._delayed = None
        d = defer.ensureDeferred(self.catch_up())
        d.addErrback(lambda f: logger.error("guest access check failed: %s", f.getTraceback()))

    async def catch_up(self) -> None:
        await self._lock.acquire()
        try:
            upto = self._events.current
            if upto <= self._position:
                return
            rooms = await self._queries.guest_access_changes(self._position, upto)
            self._position = upto
            for room_id in rooms:
                await self._enforce(room_id)
        finally:
            self._lock.release()

    async def _enforce(self, room_id: str) -> None:
        try:
            state = await self._engine.current_state_events(room_id)
        except RoomError:
            return
        access = state.get(("m.room.guest_access", ""))
        if access is not None and access.content.get("guest_access") == "can_join":
            return
        for guest in await self._queries.joined_guests(room_id):
            try:
                await self._engine.append(room_id, NewEvent(
                    guest, "m.room.member", {"membership": "leave"}, guest))
            except RoomError as e:
                logger.warning("guest %s could not be made to leave %s: %s", guest, room_id, e)
