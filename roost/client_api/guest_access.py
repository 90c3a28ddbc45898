"""Guests leave a room whose m.room.guest_access stops being can_join (the spec's MUST).

Like the search indexer this follows the events stream (a local change and
one arriving over federation alike), never the append path: on each new
position it asks which rooms' guest access changed, and for each that no
longer allows guests it makes every local guest joined there leave, as the
guest itself (a user may always leave). It starts at the stream position of
the start; a change that lands while the server is down is acted on when the
room's guest access next changes. A burst of sends is looked at in one pass
(`DELAY_S` after the first, roost.storage.follower), so the send path pays
one query per pass, not one per message, and none when every event of the pass
is a local send the engine still holds.
"""

from __future__ import annotations

import logging

from twisted.internet.interfaces import IReactorTime

from roost.rooms.engine import NewEvent, RoomEngine
from roost.rooms.engine_types import RoomError
from roost.storage.follower import DebouncedFollower
from roost.storage.guests import GuestQueries
from roost.storage.notifier import Notifier
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)

DELAY_S = 0.5


class GuestAccessWatcher:
    def __init__(self, queries: GuestQueries, engine: RoomEngine, events: StreamIdGenerator,
                 notifier: Notifier, clock: IReactorTime) -> None:
        self._queries = queries
        self._engine = engine
        self._events = events
        self._position = events.current
        self._follower = DebouncedFollower(
            "guest access check", notifier, clock, DELAY_S, self._check,
            lambda: self._position < self._events.current)

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()

    async def _check(self) -> None:
        upto = self._events.current
        if upto <= self._position:
            return
        rooms = self._changed_in_memory(self._position, upto)
        if rooms is None:
            rooms = await self._queries.guest_access_changes(self._position, upto)
        self._position = upto
        for room_id in rooms:
            await self._enforce(room_id)

    def _changed_in_memory(self, after: int, upto: int) -> list[str] | None:
        """The rooms whose guest access changed in (after, upto] when every event there is
        a local send the engine still holds (RoomEngine.recent_local_events: accepted,
        in the timeline), as the query would find them; None: ask storage. Under a steady
        stream of messages that was a read every pass (two a second) that found nothing."""
        recent = self._engine.recent_local_events(after, upto)
        if recent is None:
            return None
        return sorted({event.room_id for _, event, _ in recent
                       if event.type == "m.room.guest_access" and event.state_key == ""})

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
