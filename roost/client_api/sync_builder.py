"""What changed for a user between two sync tokens: the body of /sync and of socket pushes.

A token names a position in each stream (events, typing, receipts, account
data, presence). The builder reads everything between the `since` token and
the current positions, taken once at the start, so the next token covers
exactly what was served: nothing skipped, nothing repeated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from roost.client_api.errors import MatrixError
from roost.client_api.event_format import stripped_state
from roost.client_api.receipts import Receipts
from roost.client_api.room_view import RoomView
from roost.client_api.typing import TypingTracker
from roost.rooms.engine import LoadedEvent, RoomEngine
from roost.storage.events import StoredEvent, SyncEventStore
from roost.storage.streams import StreamIdGenerator
from roost.storage.sync_data import AccountDataStore

JsonDict = dict[str, Any]
_TOKEN_RE = re.compile(r"^s(\d+)_(\d+)_(\d+)_(\d+)_(\d+)$")
INVITE_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                      "m.room.canonical_alias", "m.room.encryption", "m.room.topic")
MAX_INCREMENTAL_EVENTS = 5000


class Presence(Protocol):
    @property
    def current(self) -> int: ...
    def changes_since(self, position: int, users: set[str]) -> list[JsonDict]: ...


@dataclass(frozen=True)
class SyncToken:
    events: int
    typing: int
    receipts: int
    account_data: int
    presence: int

    def __str__(self) -> str:
        return (f"s{self.events}_{self.typing}_{self.receipts}_{self.account_data}"
                f"_{self.presence}")

    @classmethod
    def parse(cls, raw: str) -> SyncToken:
        match = _TOKEN_RE.match(raw)
        if match is None:
            raise MatrixError(400, "M_INVALID_PARAM", "since is not a sync token")
        return cls(*(int(g) for g in match.groups()))


@dataclass(frozen=True)
class SyncFilter:
    timeline_limit: int = 10
    types: list[str] | None = None
    not_types: list[str] = field(default_factory=list)
    rooms: list[str] | None = None
    not_rooms: list[str] = field(default_factory=list)
    lazy_load_members: bool = False
    include_presence: bool = True

    @classmethod
    def from_json(cls, body: JsonDict) -> SyncFilter:
        room = body.get("room", {})
        timeline = room.get("timeline", {})
        state = room.get("state", {})
        presence_types = body.get("presence", {}).get("types")
        return cls(
            timeline_limit=timeline.get("limit", 10) if timeline.get("limit") is not None else 10,
            types=timeline.get("types"),
            not_types=timeline.get("not_types", []),
            rooms=room.get("rooms"),
            not_rooms=room.get("not_rooms", []),
            lazy_load_members=bool(state.get("lazy_load_members")),
            include_presence=presence_types != [],
        )

    def wants_room(self, room_id: str) -> bool:
        return (self.rooms is None or room_id in self.rooms) and room_id not in self.not_rooms

    def wants_event(self, event_type: str) -> bool:
        if event_type in self.not_types:
            return False
        return self.types is None or any(_type_match(p, event_type) for p in self.types)


def _type_match(pattern: str, event_type: str) -> bool:
    return event_type == pattern or (pattern.endswith("*") and event_type.startswith(pattern[:-1]))


class SyncBuilder:
    def __init__(
        self, engine: RoomEngine, view: RoomView, events: SyncEventStore,
        event_stream: StreamIdGenerator, typing: TypingTracker, receipts: Receipts,
        account_data: AccountDataStore, account_stream: StreamIdGenerator,
        presence: Presence | None,
    ) -> None:
        self._engine = engine
        self._view = view
        self._events = events
        self._event_stream = event_stream
        self._typing = typing
        self._receipts = receipts
        self._account_data = account_data
        self._account_stream = account_stream
        self._presence = presence

    def now(self) -> SyncToken:
        return SyncToken(self._event_stream.current, self._typing.position,
                         self._receipts.stream.current, self._account_stream.current,
                         self._presence.current if self._presence else 0)

    async def build(self, user_id: str, since: SyncToken | None, filt: SyncFilter,
                    full_state: bool = False) -> tuple[JsonDict, SyncToken]:
        now = self.now()
        rooms = await self._rooms(user_id, since, now, filt, full_state)
        body: JsonDict = {"next_batch": str(now), "rooms": rooms}
        body["account_data"] = {"events": await self._global_account_data(user_id, since, now)}
        presence = await self._presence_events(user_id, since, now, filt)
        body["presence"] = {"events": presence}
        return body, now

    @staticmethod
    def is_empty(body: JsonDict) -> bool:
        rooms = body["rooms"]
        return (not any(rooms.get(k) for k in ("join", "invite", "leave"))
                and not body["account_data"]["events"] and not body["presence"]["events"])

    # -- rooms -------------------------------------------------------------------

    async def _rooms(self, user_id: str, since: SyncToken | None, now: SyncToken,
                     filt: SyncFilter, full_state: bool) -> JsonDict:
        state = self._view.state
        current = await state.rooms_for_user(user_id, ("join", "invite", "leave", "ban"))
        joined = [r for r, m in current.items() if m == "join" and filt.wants_room(r)]
        invited = [r for r, m in current.items() if m == "invite" and filt.wants_room(r)]
        out: JsonDict = {"join": {}, "invite": {}, "leave": {}}
        if since is None:
            await self._initial_joined(out, user_id, joined, now, filt)
            await self._invites(out, user_id, invited)
            return out
        changes = await self._events.membership_changes(user_id, since.events, now.events)
        newly_joined = {r for r, m, _, _ in changes if m == "join"}
        left = {r: pos for r, m, _, pos in changes if m in ("leave", "ban")
                and current.get(r) in ("leave", "ban") and filt.wants_room(r)}
        if full_state:
            newly_joined = set(joined)
        await self._incremental_joined(out, user_id, joined, newly_joined, since, now, filt)
        await self._invites(out, user_id, [r for r, m, _, _ in changes
                                           if m == "invite" and r in invited])
        await self._leaves(out, user_id, left, since, filt)
        return out

    async def _initial_joined(self, out: JsonDict, user_id: str, joined: list[str],
                              now: SyncToken, filt: SyncFilter) -> None:
        latest = await self._events.latest_per_room(joined, now.events, filt.timeline_limit)
        joins = await self._events.latest_join_positions(user_id, joined)
        for room_id in joined:
            events = await self._visible(user_id, room_id, self._wanted(latest.get(room_id, []), filt),
                                         joins.get(room_id))
            limited = len(events) > filt.timeline_limit
            events = events[-filt.timeline_limit:] if filt.timeline_limit else []
            out["join"][room_id] = await self._joined_room(
                user_id, room_id, events, limited, True, filt, None, now)

    async def _incremental_joined(
        self, out: JsonDict, user_id: str, joined: list[str], newly_joined: set[str],
        since: SyncToken, now: SyncToken, filt: SyncFilter,
    ) -> None:
        fresh = await self._events.in_range(joined, since.events, now.events,
                                            MAX_INCREMENTAL_EVENTS)
        by_room: dict[str, list[StoredEvent]] = {}
        for stored in fresh:
            by_room.setdefault(stored.room_id, []).append(stored)
        joins = await self._events.latest_join_positions(user_id, list(newly_joined))
        for room_id in joined:
            new = self._wanted(by_room.get(room_id, []), filt)
            if room_id in newly_joined:
                new = await self._visible(user_id, room_id, new, joins.get(room_id))
            full = room_id in newly_joined
            limited = len(new) > filt.timeline_limit or full and bool(new)
            timeline = new[-filt.timeline_limit:] if filt.timeline_limit else []
            room = await self._joined_room(user_id, room_id, timeline, limited, full, filt,
                                           since, now, skipped=new[:-len(timeline) or None]
                                           if len(new) > len(timeline) else [])
            if full or timeline or room["ephemeral"]["events"] or room["account_data"]["events"] \
                    or room["state"]["events"]:
                out["join"][room_id] = room

    async def _joined_room(
        self, user_id: str, room_id: str, loaded: list[LoadedEvent], limited: bool,
        full_state: bool, filt: SyncFilter, since: SyncToken | None, now: SyncToken,
        skipped: list[LoadedEvent] | None = None,
    ) -> JsonDict:
        timeline_ids = {e.event.event_id for e in loaded}
        state_events: list[LoadedEvent] = []
        if full_state:
            state_events = await self._current_state(room_id, timeline_ids, loaded, user_id, filt)
        elif skipped:
            state_events = await self._state_in_gap(room_id, skipped, timeline_ids)
        first = loaded[0].stream_ordering if loaded else now.events + 1
        room: JsonDict = {
            "timeline": {
                "events": await self._view.serialize(loaded, user_id),
                "limited": limited,
                "prev_batch": f"s{(first or 1) - 1}",
            },
            "state": {"events": await self._view.serialize(state_events, user_id,
                                                           with_relations=False)},
            "ephemeral": {"events": await self._ephemeral(room_id, user_id, since, now)},
            "account_data": {"events": await self._room_account_data(user_id, room_id,
                                                                     since, now)},
        }
        return room

    async def _current_state(self, room_id: str, skip: set[str], timeline: list[LoadedEvent],
                             user_id: str, filt: SyncFilter) -> list[LoadedEvent]:
        current = await self._engine.current_state_events(room_id)
        wanted_members = {e.event.sender for e in timeline} | {user_id}
        ids = [
            e.event_id for key, e in sorted(current.items())
            if e.event_id not in skip
            and (not filt.lazy_load_members or key[0] != "m.room.member" or key[1] in wanted_members)
        ]
        loaded = await self._engine.get_events(ids)
        return [loaded[i] for i in ids if i in loaded]

    async def _state_in_gap(self, room_id: str, skipped: list[LoadedEvent],
                            skip: set[str]) -> list[LoadedEvent]:
        """State changed in the part of the range the timeline leaves out: its current value."""
        keys = {(e.event.type, e.event.state_key) for e in skipped
                if e.event.state_key is not None}
        if not keys:
            return []
        current = await self._engine.current_state_events(room_id)
        ids = [current[(t, k)].event_id for t, k in sorted(keys)
               if (t, k) in current and current[(t, k)].event_id not in skip]
        loaded = await self._engine.get_events(ids)
        return [loaded[i] for i in ids if i in loaded]

    async def _invites(self, out: JsonDict, user_id: str, rooms: list[str]) -> None:
        for room_id in rooms:
            current = await self._engine.current_state_events(room_id)
            events = [stripped_state(e) for (t, k), e in sorted(current.items())
                      if (t in INVITE_STATE_TYPES and k == "") or (t == "m.room.member"
                                                                  and k == user_id)]
            out["invite"][room_id] = {"invite_state": {"events": events}}

    async def _leaves(self, out: JsonDict, user_id: str, left: dict[str, int],
                      since: SyncToken, filt: SyncFilter) -> None:
        if not left:
            return
        upto = max(left.values())
        fresh = await self._events.in_range(list(left), since.events, upto, MAX_INCREMENTAL_EVENTS)
        for room_id, position in left.items():
            mine = self._wanted([s for s in fresh if s.room_id == room_id
                                 and (s.stream_ordering or 0) <= position], filt)
            timeline = mine[-filt.timeline_limit:] if filt.timeline_limit else []
            out["leave"][room_id] = {
                "timeline": {"events": await self._view.serialize(timeline, user_id),
                             "limited": len(mine) > len(timeline),
                             "prev_batch": f"s{(timeline[0].stream_ordering or 1) - 1}"
                             if timeline else f"s{position}"},
                "state": {"events": []},
                "account_data": {"events": []},
            }

    async def _visible(self, user_id: str, room_id: str, events: list[LoadedEvent],
                       joined_at: int | None) -> list[LoadedEvent]:
        """History visibility; skipped when the user joined before the first event (the
        common case), since a joined member sees everything after their join."""
        if not events or (joined_at is not None and joined_at <= (events[0].stream_ordering or 0)):
            return events
        return await self._view.visible(room_id, user_id, events)

    def _wanted(self, stored: list[StoredEvent], filt: SyncFilter) -> list[LoadedEvent]:
        return [e for e in self._engine.loaded(stored) if filt.wants_event(e.event.type)]

    # -- ephemeral, account data, presence ---------------------------------------

    async def _ephemeral(self, room_id: str, user_id: str, since: SyncToken | None,
                         now: SyncToken) -> list[JsonDict]:
        events = []
        if since is None or self._typing.changed_since(room_id, since.typing):
            if since is not None or self._typing.typing_users(room_id):
                events.append(self._typing.event(room_id))
        after = since.receipts if since else 0
        receipts = await self._receipts.events_since([room_id], after, now.receipts, user_id)
        if room_id in receipts:
            events.append(receipts[room_id])
        return events

    async def _global_account_data(self, user_id: str, since: SyncToken | None,
                                   now: SyncToken) -> list[JsonDict]:
        changed = await self._account_data.since(user_id, since.account_data if since else 0,
                                                 now.account_data)
        return [{"type": t, "content": c} for room, t, c in changed if room == ""]

    async def _room_account_data(self, user_id: str, room_id: str, since: SyncToken | None,
                                 now: SyncToken) -> list[JsonDict]:
        changed = await self._account_data.since(user_id, since.account_data if since else 0,
                                                 now.account_data)
        return [{"type": t, "content": c} for room, t, c in changed if room == room_id]

    async def _presence_events(self, user_id: str, since: SyncToken | None, now: SyncToken,
                               filt: SyncFilter) -> list[JsonDict]:
        if self._presence is None or not filt.include_presence:
            return []
        rooms = await self._view.state.rooms_for_user(user_id, ("join",))
        users = {user_id}
        for room_id in rooms:
            members = await self._view.state.members(room_id)
            users.update(u for u, (m, _) in members.items() if m == "join")
        return self._presence.changes_since(since.presence if since else 0, users)
