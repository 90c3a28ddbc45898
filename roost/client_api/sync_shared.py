"""One room's incremental part of a sync, planned and serialized once for every receiver.

Under fan-out, one message wakes every member's long poll and socket, and
each asks the builder for the same thing: the room's events in
(since, now], cut by the same filter, with the state its gap hides,
serialized the same way. `SharedRooms` keeps that part for a moment, keyed
by exactly what decides it, so the second and later receivers copy a plan
and reuse the served events instead of selecting, planning and serializing
them again.

What decides a room's shared part, and so makes the key:

- the room, the `since` events position and the `now` events position (the
  range of events read);
- the filter object, after `SyncFilter.ignoring` (ignored users, event
  types, senders, limits, lazy loading, event_fields and event_format all
  live in it). Parsed filters are shared by equal JSON (SyncFilter.from_json)
  and `DEFAULT_FILTER` is one object, so receivers with the same filter share
  it; an entry keeps its filter and is used only for that very object, so an
  id reused by another filter never matches.

What stays per receiver, outside the shared part (the builder adds it to
its own copy of the plan): newly joined rooms (history visibility at the
join, full state), ephemeral events, room account data, the summary, unread
counts, and `unsigned.transaction_id` on the receiver's own events (their
served form is copied before it is added). Events that relations point at
are served per receiver too (a thread summary says whether the reader took
part): a room's served events are shared only when the sync window knows
that no relation points at any of them.

Served events carry `unsigned.age`, computed when they were served: an entry
is reused for at most `SHARE_MS` (the receivers woken by one change are
answered within a few milliseconds of each other), so an age is never off by
more than that. Nothing may modify a shared served event or list: the
builder copies before it adds to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roost.client_api.sync_filter import SyncFilter
from roost.client_api.sync_room_state import RoomPlan
from roost.rooms.engine import LoadedEvent

JsonDict = dict[str, Any]
SHARE_MS = 200
MAX_ENTRIES = 2048


@dataclass(frozen=True, slots=True)
class SharedRoom:
    """A room's planned part (None: the filter leaves nothing of the range) and, when
    nothing in it is per receiver, its served events: `served` before and `shaped` after
    the filter's event_fields/event_format, timeline first, then state."""

    timeline: list[LoadedEvent]
    limited: bool
    prev_batch: str
    state: list[LoadedEvent]
    served: list[JsonDict] | None
    shaped: list[JsonDict] | None
    # Who sent timeline events (only they may get a transaction id), and whether any
    # event may change the room summary: asked of every receiver, answered once.
    senders: frozenset[str] = frozenset()
    touches_summary: bool = False

    def room(self) -> JsonDict:
        """The room's object in a receiver's body, as SyncSerializer makes it when nothing
        in it is the receiver's own (no summary, no transaction id, nothing ephemeral or
        of account data in a quiet sync): fresh dicts and lists around the shared served
        events, which nothing may modify."""
        n = len(self.timeline)
        shaped = self.shaped
        assert shaped is not None
        return {"timeline": {"events": shaped[:n], "limited": self.limited,
                             "prev_batch": self.prev_batch},
                "state": {"events": shaped[n:]}, "account_data": {"events": []},
                "ephemeral": {"events": []}}

    def plan(self) -> RoomPlan:
        """A receiver's own plan: fresh lists it may add to (ephemeral, summary, ...)."""
        plan = RoomPlan(list(self.timeline), self.limited, self.prev_batch, list(self.state))
        plan.shared = self if self.served is not None else None
        return plan


EMPTY = SharedRoom([], False, "", [], None, None)  # the filter keeps nothing of the range


class SharedRooms:
    """Bounded memo of `SharedRoom`s by (room, since position, now position, filter)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._entries: dict[tuple[str, int, int, int], tuple[SyncFilter, int, SharedRoom]] = {}
        self._newest = 0  # the newest `now` position an entry was stored for
        self.hits = 0  # counters for tests and benchmarks
        self.misses = 0

    def get(self, room_id: str, since: int, now: int, filt: SyncFilter,
            now_ms: int) -> SharedRoom | None:
        found = self.entry(room_id, since, now, filt, now_ms)
        return None if found is None else found[1]

    def entry(self, room_id: str, since: int, now: int, filt: SyncFilter,
              now_ms: int) -> tuple[int, SharedRoom] | None:
        """`get`'s part with the time it was kept (its served events' ages are of then)."""
        found = self._entries.get((room_id, since, now, id(filt)))
        if found is None or found[0] is not filt or now_ms - found[1] > SHARE_MS \
                or now_ms < found[1]:
            self.misses += 1
            return None
        self.hits += 1
        return found[1], found[2]

    def put(self, room_id: str, since: int, now: int, filt: SyncFilter, now_ms: int,
            entry: SharedRoom) -> None:
        if now > self._newest:  # the stream moved on: entries for older `now`s are done
            self._entries.clear()
            self._newest = now
        elif len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[(room_id, since, now, id(filt))] = (filt, now_ms, entry)
