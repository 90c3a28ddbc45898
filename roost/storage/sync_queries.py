"""Reads for /sync and the socket that serve many readers at once.

`RecentEvents` keeps the tail of the events stream in memory so that every
receiver woken by one message reads it from there instead of asking
PostgreSQL for the same rows; `SyncQueries` holds set-based queries that
replace one query per room.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from roost.storage.database import Database, Txn
from roost.storage.events import _EVENT_COLUMNS, StoredEvent, SyncEventStore, _row_to_event


class SyncQueries:
    """Set-based queries of /sync: one statement for many rooms."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def txn_ids(self, user_id: str, device_id: str,
                      event_ids: list[str]) -> dict[str, str]:
        """event id -> the stored txn key (its scope and the client's txn id) of those
        of the events this device sent (one query)."""
        if not event_ids:
            return {}
        rows = await self._db.read(
            "sync_txn_ids",
            "SELECT event_id, txn_id FROM event_txn_ids WHERE user_id = %s"
            " AND device_id = %s AND event_id = ANY(%s)",
            (user_id, device_id, event_ids),
        )
        return {r[0]: r[1] for r in rows}

    async def state_group_at(self, room_id: str, position: int) -> int | None:
        """The state group after the room's last event at or below `position`."""
        row = await self._db.read_one(
            "state_group_at_position",
            "SELECT state_group FROM events WHERE room_id = %s AND stream_ordering <= %s"
            " AND state_group IS NOT NULL AND rejected_reason IS NULL AND NOT soft_failed"
            " ORDER BY stream_ordering DESC LIMIT 1",
            (room_id, position),
        )
        return int(row[0]) if row else None

    async def joined_users(self, room_ids: list[str],
                           among: set[str] | None = None) -> set[str]:
        """Everyone (of `among`, when given) whose current membership is join in any of
        the rooms (one query)."""
        if not room_ids or among is not None and not among:
            return set()
        sql = ("SELECT DISTINCT state_key FROM current_state WHERE room_id = ANY(%s)"
               " AND type = 'm.room.member' AND membership = 'join'")
        args: tuple[Any, ...] = (room_ids,)
        if among is not None:
            sql, args = sql + " AND state_key = ANY(%s)", (room_ids, list(among))
        rows = await self._db.read("joined_users_of_rooms", sql, args)
        return {r[0] for r in rows}

    async def latest_per_room(
        self, room_ids: list[str], upto: int, per_room: int
    ) -> dict[str, list[StoredEvent]]:
        """Up to `per_room` + 1 newest events of each room at or below `upto`, oldest first.

        One more than asked, so the caller can tell whether the timeline was
        cut. Each room is read from the (room, position) index from its newest
        event down, so a room's size does not matter (the window-function
        form ranked every event of every room: bench/sync_fanout.py initial sync).
        """
        if not room_ids:
            return {}
        return await self._db.run_reads("latest_per_room", _latest_per_room, room_ids, upto,
                                        per_room)

    async def load_range(self, after: int, upto: int, limit: int) -> LoadedRange:
        """The range's events, redactions and relations: three SELECTs without BEGIN and
        COMMIT (Database.run_reads), once per message under fan-out. Each sees its own
        snapshot, as each statement of a READ COMMITTED `run` did: the range's rows are
        fixed once `upto` is persisted, and what may come later (relations to its events)
        is caught by the next range's read (RecentEvents)."""
        return await self._db.run_reads("recent_events", _load_range, after, upto, limit)


def _latest_per_room(
    txn: Txn, room_ids: list[str], upto: int, per_room: int
) -> dict[str, list[StoredEvent]]:
    rows = txn.query(
        f"SELECT {_EVENT_COLUMNS} FROM rooms r CROSS JOIN LATERAL (SELECT * FROM events e2"
        "   WHERE e2.room_id = r.room_id AND e2.stream_ordering <= %s"
        "   AND e2.rejected_reason IS NULL AND NOT e2.soft_failed"
        "   ORDER BY e2.stream_ordering DESC LIMIT %s) e"
        " WHERE r.room_id = ANY(%s) ORDER BY e.stream_ordering",
        (upto, per_room + 1, room_ids),
    )
    result: dict[str, list[StoredEvent]] = {room_id: [] for room_id in room_ids}
    for row in rows:
        event = _row_to_event(row)
        result[event.room_id].append(event)
    return result


@dataclass
class LoadedRange:
    """A range of the events stream as the sync window takes it in."""

    events: list[StoredEvent]  # oldest first, at most the newest `limit` of the range
    truncated: bool  # the range held more than `limit` events
    first_position: int  # with `truncated`: every event after this position is in `events`
    redactions: list[tuple[str, str]]  # (redacted, redaction) applied in the range
    relations: list[tuple[str, str]]  # (target, rel_type) of relations in the range or to its events


def _load_range(txn: Txn, after: int, upto: int, limit: int) -> LoadedRange:
    rows = txn.query(
        f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
        " WHERE e.stream_ordering > %s AND e.stream_ordering <= %s"
        " AND e.rejected_reason IS NULL AND NOT e.soft_failed"
        " ORDER BY e.stream_ordering DESC LIMIT %s",
        (after, upto, limit + 1),
    )
    truncated = len(rows) > limit
    first = after
    if truncated:
        first = rows[limit][2]
        rows = rows[:limit]
    events = [_row_to_event(row) for row in reversed(rows)]
    redactions = txn.query(
        "SELECT x.redacts, x.event_id FROM redactions x JOIN events re ON re.event_id = x.event_id"
        " WHERE re.stream_ordering > %s AND re.stream_ordering <= %s"
        " AND re.rejected_reason IS NULL AND NOT EXISTS (SELECT 1 FROM events t"
        "   WHERE t.event_id = x.redacts AND t.room_id <> re.room_id)",
        (after, upto),
    )
    relations = txn.query(
        "SELECT r.relates_to_id, r.rel_type FROM event_relations r JOIN events e"
        " ON e.event_id = r.event_id WHERE e.stream_ordering > %s AND e.stream_ordering <= %s"
        " UNION SELECT relates_to_id, rel_type FROM event_relations WHERE relates_to_id = ANY(%s)",
        (after, upto, [e.event_id for e in events]),
    )
    return LoadedRange(events, truncated, first, [(r[0], r[1]) for r in redactions],
                   [(r[0], r[1]) for r in relations])


class RecentEvents:
    """The newest events of the stream, read from PostgreSQL once and shared by every reader.

    Under fan-out every message wakes every receiver, and each used to ask
    PostgreSQL for the same new event and for its relations: 20 receivers
    made 40 queries per message, and PostgreSQL spent as much CPU as Roost
    (bench/sync_fanout.py, bench/ws_fanout.py). Now the first reader to need
    a position past the window reads the new part of the stream, in one
    transaction, and every reader slices its rooms out of memory.

    Exact by stream position. The window holds every accepted event in
    (start, end]; an event's row never changes once it has a position. What
    can change later is which redaction applies to it and which relations
    point at it, and both arrive as later positions of the same stream: each
    read of a new range applies the redactions it brings and notes the
    relations (and, for its own events, relations stored before them), so
    `relation_kinds` is exact for every event in the window.

    Bounded: at most `max_events` events (about their JSON in memory, under
    a MiB for ordinary messages); readers asking for positions before the
    window, or more than it holds, read PostgreSQL as before.

    A range whose every position is an event this process's engine has just
    persisted for a local send is taken from the engine (`local`, see
    client_api/sync_local.py) instead of read back: under fan-out that was a
    pool thread's three SELECTs per message (about 0.3 ms of Roost's CPU,
    docs/benchmarks.md). Any other range (a remote event, another process's,
    a position whose batch failed, one the engine no longer holds) is read.
    """

    def __init__(self, queries: SyncQueries, store: SyncEventStore,
                 max_events: int = 1000,
                 local: Callable[[int, int], LoadedRange | None] | None = None) -> None:
        self._queries = queries
        self._store = store
        self._max = max_events
        self._local = local
        self._start: int | None = None  # the window holds every event in (start, end]
        self._end = 0
        self._positions: list[int] = []
        self._events: list[StoredEvent] = []
        self._index: dict[str, int] = {}  # event id -> position in the stream
        self._kinds: dict[str, set[str]] = {}  # event id -> rel_types pointing at it
        self._loading = False
        self._waiting: list[defer.Deferred[None]] = []
        self.loads = 0  # ranges taken in (tests and benchmarks)
        self.stored_loads = 0  # of which read from PostgreSQL

    async def in_range(self, room_ids: Iterable[str], after: int, upto: int,
                       limit: int) -> list[StoredEvent]:
        """Events of the rooms in (after, upto], oldest first, at most the newest `limit`.

        The same answer as `SyncEventStore.in_range`, from memory when the
        window covers the range.
        """
        rooms = set(room_ids)
        if not rooms:
            return []
        if self._start is None:
            self._start = self._end = after
        if after < self._start:
            return await self._store.in_range(list(rooms), after, upto, limit)
        await self._catch_up(upto)
        if after < self._start:  # the window moved past `after` meanwhile
            return await self._store.in_range(list(rooms), after, upto, limit)
        lo = bisect_right(self._positions, after)
        hi = bisect_right(self._positions, upto)
        picked = [e for e in self._events[lo:hi] if e.room_id in rooms]
        return picked[-limit:] if limit else []

    async def window(self, after: int, upto: int) -> list[StoredEvent] | None:
        """Every event in (after, upto], oldest first, from memory; None when the window
        does not hold that range (then `in_range` reads it for the rooms wanted).

        For a reader with many rooms and news in few: it picks its rooms from what
        is new instead of building a set of all of them for `in_range`. The list
        is the caller's own (a slice)."""
        if self._start is None or after < self._start:
            return None
        if self._end < upto:  # (usually read already, by `catch_up` before the wake)
            await self._catch_up(upto)
        if after < self._start:  # the window moved past `after` meanwhile
            return None
        return self._events[bisect_right(self._positions, after):
                            bisect_right(self._positions, upto)]

    def held_window(self, after: int, upto: int) -> list[StoredEvent] | None:
        """`window`'s answer when the window already holds (after, upto] (no read, no
        wait: a woken reader's, `catch_up` having read the range before the wake), else
        None."""
        if self._start is None or after < self._start or self._end < upto:
            return None
        return self._events[bisect_right(self._positions, after):
                            bisect_right(self._positions, upto)]

    async def catch_up(self, upto: int) -> None:
        """Read the stream up to `upto` now, once, so that the readers a change wakes find
        it in memory (nothing to do before the first reader set the window's start)."""
        if self._start is not None and self._end < upto:
            await self._catch_up(upto)

    def relation_kinds(self, event_ids: Iterable[str]) -> dict[str, frozenset[str]] | None:
        """event id -> the rel_types of relations pointing at it; None unless all are known."""
        result: dict[str, frozenset[str]] = {}
        for event_id in event_ids:
            if event_id not in self._index:
                return None
            result[event_id] = frozenset(self._kinds.get(event_id, ()))
        return result

    async def _catch_up(self, upto: int) -> None:
        while self._end < upto:
            if self._loading:  # another reader is reading the stream: share its read
                waiting: defer.Deferred[None] = defer.Deferred()
                self._waiting.append(waiting)
                await waiting
                continue
            self._loading = True
            try:
                await self._extend(upto)
            finally:
                self._loading = False
                waiting_list, self._waiting = self._waiting, []
                for d in waiting_list:
                    if not d.called:
                        d.callback(None)

    async def _extend(self, upto: int) -> None:
        after = self._end
        self.loads += 1
        loaded = self._local(after, upto) if self._local is not None else None
        if loaded is None:
            self.stored_loads += 1
            loaded = await self._queries.load_range(after, upto, self._max)
        if loaded.truncated:  # more than the window holds: start again from the newest
            self._clear(loaded.first_position)
        for event in loaded.events:
            assert event.stream_ordering is not None
            self._positions.append(event.stream_ordering)
            self._events.append(event)
            self._index[event.event_id] = event.stream_ordering
        for target, redaction in loaded.redactions:
            self._redact(target, redaction)
        for target, rel_type in loaded.relations:
            if target in self._index:
                self._kinds.setdefault(target, set()).add(rel_type)
        self._end = upto
        if len(self._events) > self._max:
            self._evict(len(self._events) - self._max * 3 // 4)

    def _redact(self, target: str, redaction: str) -> None:
        position = self._index.get(target)
        if position is None:
            return
        i = bisect_right(self._positions, position) - 1
        event = self._events[i]
        if event.redacted_by is None or redaction < event.redacted_by:
            self._events[i] = event._replace(redacted_by=redaction)

    def _clear(self, start: int) -> None:
        self._start = start
        self._positions, self._events = [], []
        self._index.clear()
        self._kinds.clear()

    def _evict(self, count: int) -> None:
        for event in self._events[:count]:
            self._index.pop(event.event_id, None)
            self._kinds.pop(event.event_id, None)
        self._start = self._positions[count - 1]
        del self._events[:count]
        del self._positions[:count]

    def stats(self) -> dict[str, Any]:
        return {"start": self._start, "end": self._end, "events": len(self._events)}
