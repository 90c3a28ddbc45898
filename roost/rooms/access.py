"""The one access module: may this user, or this server, see this event or this room's state.

Every read path asks here, client (/state, /members, /joined_members,
/messages, /context, /event, /relations, /threads, /aliases, /search, /sync,
the socket) and federation (/backfill, /get_missing_events, /event, /state,
/state_ids, /event_auth, and the sender choosing destinations). The rules
are the pure functions of `visibility.py`; this class loads what they read
(the room's history-visibility changes, memberships, whether the user forgot
the room) through the engine's cached head and the state store.

Answers are values, never HTTP errors: this package sits below both
listeners, and each turns a refusal into its own Matrix error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from roost.rooms.engine import RoomEngine
from roost.rooms.engine_types import LoadedEvent, RoomError
from roost.rooms.redaction import redact_pdu
from roost.rooms.server_acl import ServerAcl
from roost.rooms.visibility import (
    AT_DEPARTURE,
    CURRENT,
    EVENTS,
    JOINED,
    STATE,
    History,
    Standing,
    Visibility,
    room_read,
    server_can_see_event,
)
from roost.storage.room_state import RoomStateStore

__all__ = ["AT_DEPARTURE", "CURRENT", "EVENTS", "JOINED", "STATE", "RoomAccess"]

StateKey = tuple[str, str]
MAX_CACHED_ACLS = 1000
# (user id, room id) -> whether the user forgot the room.
Forgotten = Callable[[str, str], Awaitable[bool]]
# user ids -> those of them who were erased.
Erased = Callable[[set[str]], Awaitable[set[str]]]


class RoomAccess:
    def __init__(self, engine: RoomEngine, state: RoomStateStore,
                 forgotten: Forgotten | None = None, erased: Erased | None = None) -> None:
        self._engine = engine
        self._state = state
        self._forgotten = forgotten
        # Which of some senders deactivated with erase: true (see `_erase`).
        self._erased = erased
        # ACL event id -> its compiled evaluator (a room's ACL changes rarely).
        self._acls: dict[str, ServerAcl] = {}

    # -- the room as a whole ------------------------------------------------------

    async def room_exists(self, room_id: str) -> bool:
        return await self._engine.room_version(room_id) is not None

    async def world_readable(self, room_id: str) -> bool:
        """The room's history visibility now, from the engine's cached head."""
        try:
            state = await self._engine.current_state_events(room_id)
        except RoomError:
            return False
        event = state.get(("m.room.history_visibility", ""))
        return event is not None and event.content.get("history_visibility") == "world_readable"

    async def membership(self, room_id: str, user_id: str) -> str | None:
        try:
            return await self._engine.membership(room_id, user_id)
        except RoomError:
            return None

    async def standing(self, room_id: str, user_id: str) -> Standing:
        membership = await self.membership(room_id, user_id)
        if membership == "join":
            return Standing("join", True, False, False)
        forgotten = await self.is_forgotten(room_id, user_id) if membership else False
        ever_joined = membership in ("leave", "ban") and any(
            m == "join" for _, m in await self._state.membership_history(room_id, user_id))
        return Standing(membership, ever_joined, forgotten, await self.world_readable(room_id))

    async def is_forgotten(self, room_id: str, user_id: str) -> bool:
        return self._forgotten is not None and await self._forgotten(user_id, room_id)

    async def room_read(self, room_id: str, user_id: str, kind: str) -> str | None:
        """CURRENT, AT_DEPARTURE, or None (refused) for an endpoint of `kind`
        (EVENTS, STATE or JOINED): see visibility.room_read."""
        return room_read(await self.standing(room_id, user_id), kind)

    async def readable_state(self, room_id: str, user_id: str,
                             kind: str = STATE) -> dict[StateKey, str] | None:
        """The state this user may read (current, or as it was when they left), or None."""
        granted = await self.room_read(room_id, user_id, kind)
        if granted == CURRENT:
            try:
                return await self._engine.current_state_ids(room_id)
            except RoomError:
                return await self._state.current_state(room_id)
        if granted == AT_DEPARTURE:
            member = (await self._state.members(room_id)).get(user_id)
            if member is not None:
                group = (await self._state.state_groups_of([member[1]])).get(member[1])
                if group is not None:
                    return await self._state.state_at_group(group)
        return None

    async def departure_position(self, room_id: str, user_id: str) -> int | None:
        """Where a user reading the room as of their departure left it (their last
        membership change), or None when they read the room now."""
        if await self.room_read(room_id, user_id, STATE) != AT_DEPARTURE:
            return None
        history = await self._state.membership_history(room_id, user_id)
        return history[-1][0] if history else None

    # -- events, for users --------------------------------------------------------------

    async def visibility_history(self, room_id: str) -> History:
        """(stream position, history_visibility) of each change, in order: kept on the
        engine's cached head of the room (RoomEngine.visibility_changes)."""
        try:
            return await self._engine.visibility_changes(room_id)
        except RoomError:  # a room the engine has no head for: read it as it is
            history = await self._state.state_history(room_id, "m.room.history_visibility", "")
            loaded = await self._engine.get_events([eid for _, eid in history])
            return [(pos, str(loaded[eid].event.content.get("history_visibility", "shared")))
                    for pos, eid in history if eid in loaded]

    async def _reader_history(self, room_id: str, user_id: str) -> tuple[bool, History]:
        """Whether the user forgot the room, and their membership history (one round trip)."""
        if self._forgotten is None:
            return False, await self._state.membership_history(room_id, user_id)
        return await self._state.reader_history(room_id, user_id)

    async def visible_events(self, room_id: str, user_id: str, events: list[LoadedEvent],
                             reader_history: tuple[bool, History] | None = None,
                             ) -> list[LoadedEvent]:
        """The events of `room_id` this user may see, in the order given.

        Outliers, rejected events and events of other rooms are never visible.
        A user who forgot the room is treated as never having been in it. A
        user always sees their own membership events (or a rejected invite
        would never leave their view). `reader_history`, when the caller read it
        with the events (RoomPageStore.room_page), is the user's (forgotten,
        membership history) in the room, else it is read here.
        """
        events = [e for e in events if e.event.room_id == room_id
                  and e.stream_ordering is not None and not e.rejected]
        if not events:
            return []
        forgotten, history = reader_history if reader_history is not None \
            else await self._reader_history(room_id, user_id)
        forgotten = forgotten and self._forgotten is not None
        memberships: History = [] if forgotten else history
        rules = Visibility(await self.visibility_history(room_id), memberships)
        since = rules.joined_since
        if since is not None and all((e.stream_ordering or 0) >= since for e in events):
            # A member reading what came since they joined (and stayed): they see all
            # of it, and erasure hides nothing from someone who was there.
            return events
        visible = [
            e for e in events
            if rules.can_see(e.stream_ordering or 0)
            or (not forgotten and e.event.type == "m.room.member"
                and e.event.state_key == user_id)
        ]
        return await self._erase(visible, lambda e: e.event.sender != user_id
                                 and rules.membership_at(e.stream_ordering or 0) != "join")

    async def _erase(self, events: list[LoadedEvent],
                     applies: Callable[[LoadedEvent], bool]) -> list[LoadedEvent]:
        """Events of erased senders, redacted where `applies` (issue 15: a user who
        deactivated with erase: true is hidden from those who were not in the room when
        they spoke, and from other servers)."""
        if self._erased is None:
            return events
        senders = {e.event.sender for e in events
                   if e.event.type != "m.room.member" and applies(e)}
        if not senders:  # nothing it could hide: no query
            return events
        erased = await self._erased(senders)
        if not erased:
            return events
        return [LoadedEvent(e.event.redacted(), e.stream_ordering, e.redacted_by, e.rejected)
                if e.event.sender in erased and e.event.type != "m.room.member" and applies(e)
                else e for e in events]

    async def can_see(self, room_id: str, user_id: str, event: LoadedEvent) -> bool:
        return bool(await self.visible_events(room_id, user_id, [event]))

    # -- servers -------------------------------------------------------------------------

    async def server_in_room(self, room_id: str, server_name: str,
                             state: dict[StateKey, str] | None = None) -> bool:
        """Whether a user of the server is joined now (or in `state`, when given)."""
        return await self._engine.server_in_room(room_id, server_name, state)

    async def server_visible_ids(self, room_id: str, server_name: str,
                                 events: Iterable[LoadedEvent]) -> set[str]:
        """The ids of the events (of `room_id`, not outliers) the server may see: those one
        of its users could see (spec: history visibility, for servers)."""
        candidates = [e for e in events if e.event.room_id == room_id
                      and e.stream_ordering is not None and not e.rejected]
        if not candidates:
            return set()
        visibilities = await self.visibility_history(room_id)
        members = list((await self._state.server_membership_histories(
            room_id, server_name)).values())
        return {e.event.event_id for e in candidates
                if server_can_see_event(visibilities, members, e.stream_ordering or 0)}

    async def pdus_for_server(self, room_id: str, server_name: str,
                              events: list[LoadedEvent]) -> list[dict[str, Any]]:
        """The PDUs to serve a server walking the room's graph (backfill, missing events,
        state, auth chains): those it may see as they are, the others redacted, so the
        graph and the auth rules still work but the content stays here."""
        visible = await self.server_visible_ids(room_id, server_name, events)
        erased = await self._erase(events, lambda e: True)
        return [e.event.pdu if e.event.event_id in visible and e is kept
                else redact_pdu(e.event.pdu, e.event.version)
                for e, kept in zip(events, erased, strict=True)]

    async def server_allowed(self, room_id: str, server_name: str) -> bool:
        """The room's server ACL (current state) lets `server_name` take part; true for
        a room without one, or one this server does not know (the handler decides)."""
        try:
            state = await self._engine.current_state_events(room_id)
        except RoomError:
            return True
        event = state.get(("m.room.server_acl", ""))
        if event is None:
            return True
        acl = self._acls.get(event.event_id)
        if acl is None:
            if len(self._acls) >= MAX_CACHED_ACLS:
                self._acls.clear()
            acl = self._acls[event.event_id] = ServerAcl(event.content)
        return acl.allows(server_name)
