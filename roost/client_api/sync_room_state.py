"""The `state` part of each room in a sync, its `summary`, and invites' and knocks' state.

What the builder (sync_builder.py) asks about a room's state while it plans a
sync: the full state at the token for an initial, full-state or newly joined
room (from the engine's parsed room head, or from storage when the head has
moved past the token), the state changes a limited timeline's gap hides, the
lazy-loaded members of the timeline's senders, the room summary, and the
stripped state an invite or a knock shows.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from roost.client_api.event_format import EncodedEvents, encode_events, stripped_state
from roost.client_api.room_view import RoomView
from roost.client_api.stream_token import StreamToken
from roost.client_api.sync_filter import SyncFilter
from roost.client_api.sync_summary import (
    INVITE_STATE_TYPES,
    SUMMARY_TYPES,
    is_stripped,
    room_summary,
)
from roost.rooms.engine import LoadedEvent, RoomEngine
from roost.rooms.engine_types import LoadedState
from roost.rooms.events import Event
from roost.storage.events import StoredEvent
from roost.storage.sync_queries import SyncQueries

if TYPE_CHECKING:
    from roost.client_api.sync_shared import SharedRoom

JsonDict = dict[str, Any]
# LoadedState.derived key of a sync's encoded whole state (_kept_encoding).
STATE_JSON = "client_api.sync_state_json"
SyncToken = StreamToken


@dataclass
class RoomPlan:
    """One room's part of a sync, gathered before anything is serialized.

    Serializing every room's events in one call lets the relation and
    redaction lookups run once per sync instead of once per room.
    """

    timeline: list[LoadedEvent]
    limited: bool
    prev_batch: str
    state: list[LoadedEvent] = field(default_factory=list)
    ephemeral: list[JsonDict] = field(default_factory=list)
    account_data: list[JsonDict] = field(default_factory=list)
    left: bool = False
    summary: JsonDict | None = None
    # Set when the timeline and state are served once for every receiver (sync_shared.py).
    shared: SharedRoom | None = None
    # `state` kept encoded with the room's head (a room's whole state: _add_whole_state).
    state_encoded: EncodedEvents | None = None


def _shown_state(ids: Mapping[tuple[str, str], str],
                 timeline: list[LoadedEvent]) -> list[tuple[str, str]]:
    """The keys of the current state (`ids`: event ids by key) whose event the timeline
    holds, sorted, once each."""
    return sorted({(e.event.type, e.event.state_key) for e in timeline
                   if e.event.state_key is not None
                   and ids.get((e.event.type, e.event.state_key)) == e.event.event_id})


def _kept_encoding(whole: LoadedState, shown: list[tuple[str, str]],
                   state: list[LoadedEvent]) -> EncodedEvents | None:
    """`state` (the whole state less the `shown` keys' events) encoded, kept with the
    room's LoadedState for the last `shown` asked (the timeline, the same for every
    newcomer until the room moves on): an initial sync of a big room only formats the
    ages in. None when some event is redacted (served as usual)."""
    if not state:
        return None
    kept = whole.derived.get(STATE_JSON)
    key = tuple(shown)
    if kept is None or kept[0] != key:
        kept = whole.derived[STATE_JSON] = (key, encode_events(state))
    encoded: EncodedEvents | None = kept[1]
    return encoded


def _less_timeline(state: list[LoadedEvent], ids: Mapping[tuple[str, str], str],
                   shown: list[tuple[str, str]]) -> list[LoadedEvent]:
    """`state` (a room's whole current state in key order, `ids` its event ids by key)
    without the events of the `shown` keys (the timeline's), found by bisection: a
    newcomer's own join is in their timeline, and a pass over 2,000 members to leave it
    out cost more than the rest of the copy."""
    out = list(state)
    for key in shown:
        at = bisect_left(out, key, key=_state_key)
        if at < len(out) and out[at].event.event_id == ids[key]:
            del out[at]
    return out


def _state_key(loaded: LoadedEvent) -> tuple[str, str | None]:
    return loaded.event.type, loaded.event.state_key


class SyncRoomState:
    """Room state for the sync builder, read from the engine's room heads where it can."""

    def __init__(
        self, engine: RoomEngine, view: RoomView, queries: SyncQueries,
        remote_invite_state: Callable[[str, str], Awaitable[list[Any] | None]] | None = None,
    ) -> None:
        self._engine = engine
        self._view = view
        self._queries = queries
        # The stripped state another server sent with an invite to a room this
        # server holds nothing of but the invite itself.
        self._remote_invite_state = remote_invite_state

    async def add_full_state(self, plans: dict[str, RoomPlan], rooms: list[str],
                              user_id: str, filt: SyncFilter, now: SyncToken) -> None:
        """The state at the token for each room, minus the timeline's own.

        Read from the engine's head (the current state, parsed, with positions and
        redactions kept there: RoomEngine.current_state_loaded); a room whose head has
        moved past the token (an event persisted while this sync was built) is read at
        the token from storage instead, so that event comes in the next sync's
        timeline, not before it.
        """
        if not rooms:
            return  # (an incremental sync with no newly joined room)
        wanted: dict[str, list[str]] = {}
        for room_id in await self._add_whole_state(plans, rooms, filt, now):
            current = await self._engine.current_state_sorted(room_id)
            wanted[room_id] = self._wanted_state(room_id, current, plans[room_id], user_id,
                                                 filt)
        loaded = await self._engine.current_state_loaded(wanted)
        for room_id, ids in wanted.items():
            if any((loaded[i].stream_ordering or 0) > now.events for i in ids if i in loaded):
                at_token = await self._state_at(room_id, now.events)
                if at_token is not None:
                    events = [(key, at_token[key].event) for key in sorted(at_token)]
                    chosen = self._wanted_state(room_id, events, plans[room_id], user_id, filt)
                    by_id = {e.event.event_id: e for e in at_token.values()}
                    plans[room_id].state = [by_id[i] for i in chosen]
                    continue
            plans[room_id].state = [loaded[i] for i in ids if i in loaded]

    async def _add_whole_state(self, plans: dict[str, RoomPlan], rooms: list[str],
                               filt: SyncFilter, now: SyncToken) -> list[str]:
        """Without filters or lazy loading, a room's `state` is its whole current state less
        the timeline's own: taken from the head's kept LoadedState (no per-event lookups of
        a big room's 2,000 members on every initial sync, bench/big_room.py), when nothing
        in it is past the token. The rooms left (any other case) are returned."""
        if not filt.state.passes_every_event() or filt.lazy_load_members:
            return rooms
        wants = [r for r in rooms if filt.state.wants_room(r)]
        ready = await self._engine.current_states_ready(wants) if wants else {}
        left = []
        for room_id in rooms:
            ids, whole = ready.get(room_id, (None, None))
            if room_id not in ready:
                plans[room_id].state = []
            elif whole is None or whole.last_position > now.events:
                left.append(room_id)
            else:
                plan = plans[room_id]
                shown = _shown_state(ids or {}, plan.timeline)
                plan.state = _less_timeline(whole.in_key_order, ids or {}, shown)
                plan.state_encoded = _kept_encoding(whole, shown, plan.state)
        return left

    def _wanted_state(self, room_id: str, state: list[tuple[tuple[str, str], Event]],
                      plan: RoomPlan, user_id: str, filt: SyncFilter) -> list[str]:
        """The ids of the state events a room's `state` section carries (filters, lazy
        members), in the order of `state` (key order), minus those in its timeline."""
        if not filt.state.wants_room(room_id):
            return []
        in_timeline = {e.event.event_id for e in plan.timeline}
        senders = {e.event.sender for e in plan.timeline} | {user_id}
        everything = filt.state.passes_every_event()
        if everything and not filt.lazy_load_members:
            return [e.event_id for _, e in state if e.event_id not in in_timeline]
        return [
            e.event_id for key, e in state if e.event_id not in in_timeline
            and (
                not filt.lazy_load_members or key[0] != "m.room.member" or key[1] in senders)
            and (everything or key[0] == "m.room.member" and key[1] == user_id
                 or filt.state.wants(e.type, e.sender, e.content))
        ]

    async def _state_at(self, room_id: str,
                        position: int) -> dict[tuple[str, str], LoadedEvent] | None:
        """The room's state after its last event at or below `position`, from storage."""
        group = await self._queries.state_group_at(room_id, position)
        if group is None:
            return None
        ids = await self._view.state.state_at_group(group)
        events = await self._engine.get_events(list(ids.values()))
        return {key: events[eid] for key, eid in ids.items() if eid in events}

    def state_before_timeline(self, raw: list[StoredEvent], new: list[LoadedEvent],
                               filt: SyncFilter) -> list[LoadedEvent]:
        """State events of the range that the timeline will not show: those before the
        timeline's first event (a limited timeline's gap), and those its filter left out
        later whose state key the timeline does not move on itself."""
        timeline = new[-filt.timeline_limit:] if filt.timeline_limit else []
        start = (timeline[0].stream_ordering or 0) if timeline else None
        shown = {e.event.event_id for e in timeline}
        moved = {(e.event.type, e.event.state_key) for e in timeline
                 if e.event.state_key is not None}
        candidates = [s for s in raw if s.event_id not in shown]
        if not candidates:
            return []
        return [e for e in self._engine.loaded(candidates) if e.event.state_key is not None
                and (start is None or (e.stream_ordering or 0) < start
                     or (e.event.type, e.event.state_key) not in moved)]

    def state_in_gap(self, room_id: str, skipped: list[LoadedEvent],
                      plan: RoomPlan, filt: SyncFilter) -> list[LoadedEvent]:
        """The state as the timeline starts, for what changed in the part of the range the
        timeline leaves out: the last event of each state key among the skipped ones."""
        if not filt.state.wants_room(room_id):
            return []
        last: dict[tuple[str, str], LoadedEvent] = {}
        for e in skipped:
            if e.event.state_key is not None and filt.state.wants(
                    e.event.type, e.event.sender, e.event.content):
                last[(e.event.type, e.event.state_key)] = e
        return [last[key] for key in sorted(last)]

    async def add_lazy_members(self, room_id: str, plan: RoomPlan, filt: SyncFilter) -> None:
        """Lazy loading in an incremental sync: the member events of the timeline's
        senders (the client cannot know which it already holds from another device)."""
        have = {e.event.event_id for e in plan.timeline} | {e.event.event_id for e in plan.state}
        current = await self._engine.current_state_events(room_id)
        ids = [e.event_id for sender in sorted({e.event.sender for e in plan.timeline})
               if (e := current.get(("m.room.member", sender))) is not None
               and e.event_id not in have]
        loaded = await self._engine.current_state_loaded({room_id: ids})
        plan.state += [loaded[i] for i in ids if i in loaded]

    async def add_summaries(self, plans: dict[str, RoomPlan], user_id: str,
                             always: bool) -> None:
        """Room `summary` for joined rooms when it may have changed: always in an initial or
        full-state sync, else when the timeline or state holds a member, name or alias change."""
        for room_id, plan in plans.items():
            if plan.left:
                continue
            if not always and not any(e.event.type in SUMMARY_TYPES
                                      for e in (*plan.timeline, *plan.state)):
                continue
            plan.summary = room_summary(await self._engine.current_state_events(room_id),
                                        await self._engine.members_overview(room_id), user_id)

    async def stripped_state(self, room_id: str, user_id: str) -> list[JsonDict]:
        """An invite's or knock's view of a room: a few state events, stripped."""
        current = await self._engine.current_state_events(room_id)
        events = [stripped_state(e) for (t, k), e in sorted(current.items())
                  if (t in INVITE_STATE_TYPES and k == "") or (t == "m.room.member"
                                                              and k == user_id)]
        if self._remote_invite_state is not None:
            sent = await self._remote_invite_state(room_id, user_id) or []
            have = {(e["type"], e["state_key"]) for e in events}
            events += [e for e in sent if is_stripped(e) and (e["type"], e["state_key"]) not in have]
        return events

    async def inviter(self, room_id: str, user_id: str) -> str | None:
        member = (await self._engine.current_state_events(room_id)).get(
            ("m.room.member", user_id))
        return member.sender if member is not None else None
