"""The sync window's new events from the engine's memory, not read back from PostgreSQL.

Under fan-out every message moves the events stream, and the sync window
(storage/sync_queries.RecentEvents) read the new position back: three SELECTs
on a pool thread per message, about 0.3 ms of Roost's CPU of the ~7 ms a
message to 20 long polls cost (docs/benchmarks.md). When every position of
the range is an event this process's engine has just persisted for a local
send (`RoomEngine.recent_local_events`), the range is built from those events
as storage holds them instead (`rooms.engine_types.event_row` writes the same
fields):

- the row: id, room, position, the canonical JSON (the event's own bytes, not a
  decoded copy: held up to 1,000 rows by the window), the room version, the state
  group; a local send is never rejected, soft-failed or an outlier;
- `redacted_by` is left empty: the window applies each redaction when the range
  holding it is taken in, and a redaction of a new local event can only come
  after it (its id is a hash, or random before v3, unknown before it exists);
- the redactions and relations the range's own events make (a local redaction
  always names an event of its own room: the send refuses any other, which the
  stored read would drop). Relations stored before a new event that point at it
  cannot exist, for the same reason as above.

Any other range is read from storage as before.
"""

from __future__ import annotations

from collections.abc import Callable

from roost.rooms.engine_types import RecentEvent, relation_of
from roost.storage.events import StoredEvent
from roost.storage.sync_queries import LoadedRange


def local_ranges(recent: Callable[[int, int], list[RecentEvent] | None]
                 ) -> Callable[[int, int], LoadedRange | None]:
    """RecentEvents' `local`: the range (after, upto] from `recent` (the engine's
    `recent_local_events`), or None when any position of it is not there."""

    def local(after: int, upto: int) -> LoadedRange | None:
        found = recent(after, upto)
        if found is None:
            return None
        events, redactions, relations = [], [], []
        for position, event, group in found:
            events.append(StoredEvent(
                event.event_id, event.room_id, position, event.canonical_bytes,
                event.version.identifier, group, None, False, None))
            if event.redacts is not None:
                redactions.append((event.redacts, event.event_id))
            relation = relation_of(event)
            if relation is not None:
                relations.append((relation[0], relation[1]))
        return LoadedRange(events, False, after, redactions, relations)

    return local
