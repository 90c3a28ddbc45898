"""Reading events back: by id, parsed once, and the state before an event.

Every reader of events (history, sync, federation, the engine's own checks)
goes through `EventReader.get_events`. Stored PDU JSON never changes, so each
event is parsed once and shared (engine_types.EventCache), and a large request
for a room's current state takes the events the engine's cached room head
already holds, with their positions and redactions as read the first time
(bench/big_room.py: /members of a 2,000-member room). Whatever a persist may
change of those (a redaction of a state event, an outlier given a position)
is dropped from the head that follows it (RoomHead.forget_loaded), and read
again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from roost.rooms.engine_types import (
    EventCache,
    LoadedEvent,
    LoadedState,
    RecentLocalEvents,
    RoomHead,
    StateKey,
    event_from_storage,
)
from roost.rooms.events import Event
from roost.rooms.remote_ingest import _StoredResStore
from roost.rooms.state_res import resolve_state
from roost.storage.events import EventStore, StoredEvent

if TYPE_CHECKING:
    from roost.rooms.engine import RoomEngine

# get_events asks the cached room heads first from this many ids on (see get_events).
HELD_LOOKUP_MIN = 50


class EventReader:
    def __init__(self, events: EventStore, heads: Mapping[str, RoomHead],
                 recent: RecentLocalEvents | None = None) -> None:
        self._events = events
        self._heads = heads  # the engine's cached room heads, most recently used last
        self._parsed = EventCache(recent=recent)

    async def get_events(self, event_ids: list[str]) -> dict[str, LoadedEvent]:
        """Events by id. A large request for a room's current state (/members, /state of
        a big room) takes the events its cached head holds parsed and reads only their
        positions and redactions: no JSON read and parsed again (bench/big_room.py)."""
        head, held = self._held_state(event_ids) if len(event_ids) >= HELD_LOOKUP_MIN \
            else (None, {})
        out = await self.from_heads([(head, held)]) if head is not None else {}
        rest = [eid for eid in event_ids if eid not in out]
        if rest:
            stored = await self._events.get_events(rest)
            out.update((eid, self.load(s)) for eid, s in stored.items())
        return out

    async def from_heads(self, held: list[tuple[RoomHead, dict[str, Event]]]
                         ) -> dict[str, LoadedEvent]:
        """State events that room heads hold (head, event id -> event), as readers get
        them: their positions and redactions are kept on the head (RoomHead.loaded) once
        read, those not yet kept read in one query for every head."""
        out: dict[str, LoadedEvent] = {}
        missing: dict[str, tuple[dict[str, LoadedEvent], Event]] = {}
        for head, events in held:
            kept = head.loaded if head.loaded is not None else {}
            head.loaded = kept
            for eid, event in events.items():
                found = kept.get(eid)
                if found is not None:
                    out[eid] = found
                else:
                    missing[eid] = (kept, event)
        if missing:
            meta = await self._events.positions_and_redactions(list(missing))
            for eid, (position, redacted_by, rejected) in meta.items():
                kept, event = missing[eid]
                out[eid] = kept[eid] = LoadedEvent(event, position, redacted_by, rejected)
        return out

    async def complete_states(self, heads: Mapping[str, RoomHead]
                              ) -> dict[str, tuple[Mapping[StateKey, str], LoadedState | None]]:
        """Each head's state ids and its whole current state loaded (RoomHead.loaded_state),
        the heads that lack it loaded in one query; None for a head whose events are not
        all found (the caller reads them as before)."""
        cold = [head for head in heads.values() if head.loaded_state() is None]
        if cold:
            await self.from_heads([(head, head.state_by_id()) for head in cold])
        return {room_id: (head.state, head.loaded_state()) for room_id, head in heads.items()}

    def _held_state(self, event_ids: list[str]) -> tuple[RoomHead | None, dict[str, Event]]:
        """The cached room head whose current state holds the first of `event_ids` (the
        most recently used heads are looked at first), and the events among `event_ids`
        it holds."""
        first = event_ids[0]
        for head in reversed(self._heads.values()):
            by_id = head.state_by_id()
            if first in by_id:
                return head, {eid: by_id[eid] for eid in event_ids if eid in by_id}
        return None, {}

    def load(self, stored: StoredEvent) -> LoadedEvent:
        return LoadedEvent(self._parsed.event(stored), stored.stream_ordering, stored.redacted_by,
                           stored.rejected_reason is not None)

    def loaded(self, stored: list[StoredEvent]) -> list[LoadedEvent]:
        return self._parsed.loaded(stored)



async def state_events_at_group(engine: RoomEngine, group: int) -> dict[StateKey, Event]:
    """A state group's state as events (push evaluation of an event the room's state has
    moved past since)."""
    ids = await engine._state.state_at_group(group)
    loaded = await engine.get_events(list(ids.values()))
    return {key: loaded[eid].event for key, eid in ids.items() if eid in loaded}


async def state_before_event(engine: RoomEngine, event_id: str) -> dict[StateKey, str] | None:
    """The state before ``event_id``, or None when the event is unknown or an outlier:
    its state group, less the event itself when it is state (the group's delta, or the
    resolved state of its prev events)."""
    events, state = engine._events, engine._state
    stored = (await events.get_events([event_id])).get(event_id)
    if stored is None or stored.outlier or stored.state_group is None:
        return None
    event = event_from_storage(stored)
    group_state = await state.state_at_group(stored.state_group)
    key = (event.type, event.state_key or "")
    if event.state_key is None or group_state.get(key) != event_id:
        return group_state  # a message, or a rejected event: its group is the state at it
    delta = await state.state_group_delta(stored.state_group)
    if delta is not None and delta[0] is not None and delta[2] == {key: event_id}:
        return await state.state_at_group(delta[0])
    prevs = await events.get_events(list(event.prev_event_ids))
    groups = [s.state_group for s in prevs.values() if not s.outlier and s.state_group]
    if not groups or len(groups) != len(event.prev_event_ids):
        found = dict(group_state)
        found.pop(key, None)
        return found
    maps = [await state.state_at_group(g) for g in dict.fromkeys(groups)]
    if len(maps) == 1:
        return maps[0]
    return await resolve_state(stored.room_id, event.version, maps, _StoredResStore(engine, {}))
