"""One room's events a page at a time: /messages, /context, search results' context
and /initialSync's room pages.

Apart from the rest of the event reads (storage/events.py) because a page is its own
kind of query: one room's stream between two positions, filtered by type, read as a
prepared statement with a generic plan (planning was as much of PostgreSQL's CPU as
running it), and for /messages with what the reader's history visibility needs, from
the same snapshot.
"""

from __future__ import annotations

import json
from typing import Any

from roost.storage.database import Database, Prepared, ReadTxn
from roost.storage.events import _EVENT_COLUMNS, StoredEvent

# _EVENT_COLUMNS for one room's events: its version read once (an InitPlan on the room id
# given), not joined to every event the scan passes before the page's ORDER BY ... LIMIT
# (on a freshly filled table, 700 joins for a page of 100).
_ROOM_EVENT_COLUMNS = _EVENT_COLUMNS.replace(
    "r.room_version", "(SELECT r.room_version FROM rooms r WHERE r.room_id = %s)")


# How a page of one room's stream is planned. Prepared (Database Prepared): planned once
# per connection, not on every page (the planning was as much of PostgreSQL's CPU as
# running it). One generic plan serves every room and position, so the SQL leaves the
# planner one good choice whatever its statistics say:
# - no bitmap scans: on a table without fresh statistics (a new server, a room that
#   has just grown) the planner took a page for a bitmap scan of the room's whole
#   history up to the position, sorted, where a page reads 100 rows of the
#   (room_id, stream_ordering) index (EXPLAIN ANALYZE: 1.4 against 0.4 ms for the
#   newest page of 1,006 events; every older event for every page);
# - the room matched as `room_id = ANY(ARRAY[room])` and ordered by (room_id,
#   stream_ordering): with `room_id = room` the room's ordering is implied and the
#   global (stream_ordering) index can give the order too, and a generic plan made
#   while the statistics saw one room took it, walking every room's events to find
#   one room's page. These give the same rows in the same order (one room).
_PAGE_SETTINGS = ("plan_cache_mode = force_generic_plan", "enable_bitmapscan = off")
_page_statements: dict[str, Prepared] = {}  # SQL -> its statement: at most 32 shapes


class RoomPageStore:
    """Pages of one room's stream, for the endpoints that page through history."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def room_stream_events(
        self, room_id: str, from_pos: int, to_pos: int | None, backwards: bool, limit: int,
        types: list[str] | None = None, not_types: list[str] | None = None,
    ) -> list[StoredEvent]:
        """Events of the room strictly after (or before, backwards) `from_pos`, in that order:
        one SELECT, without BEGIN and COMMIT (Database.run_reads)."""
        return await self._db.run_reads(
            "room_stream_events", _room_stream_events, room_id, from_pos, to_pos, backwards, limit,
            types, not_types,
        )

    async def room_page(
        self, room_id: str, from_pos: int, to_pos: int | None, backwards: bool, limit: int,
        types: list[str] | None, not_types: list[str] | None, reader: str,
    ) -> tuple[list[StoredEvent], tuple[bool, list[tuple[int, str]]]]:
        """room_stream_events, and in the same transaction what history visibility needs
        of the `reader` (RoomStateStore.reader_history): a /messages page in one round
        trip, the reader's memberships read from the same snapshot as the page: one
        SELECT, so it needs no BEGIN and COMMIT around it (Database.run_reads)."""
        return await self._db.run_reads("room_page", _room_page, room_id, from_pos, to_pos,
                                        backwards, limit, types, not_types, reader)


def _room_page(
    txn: ReadTxn, room_id: str, from_pos: int, to_pos: int | None, backwards: bool, limit: int,
    types: list[str] | None, not_types: list[str] | None, reader: str,
) -> tuple[list[StoredEvent], tuple[bool, list[tuple[int, str]]]]:
    """One statement: the page's rows each carry the reader's forgotten flag and
    membership history (computed once by PostgreSQL, an InitPlan), so the page and what
    decides its visibility come from one snapshot in one round trip. An empty page
    needs no history (nothing to decide), and reads none.

    The history is one JSON text, [forgotten, [[position, membership], ...] or null],
    read from the first row only: as a boolean and two arrays, psycopg2 parsed them
    again on each of a page's 100 rows (about a quarter of the page's parsing)."""
    extra = (", (SELECT json_build_array("
             "  EXISTS (SELECT 1 FROM forgotten_rooms f WHERE f.user_id = %s AND f.room_id = %s),"
             "  (SELECT json_agg(json_build_array(m.stream_ordering, m.membership)"
             "    ORDER BY m.stream_ordering, m.membership)"
             "   FROM room_memberships m WHERE m.room_id = %s AND m.user_id = %s)))::text")
    rows = _stream_rows(txn, room_id, from_pos, to_pos, backwards, limit, types, not_types,
                        extra, [reader, room_id, room_id, reader])
    page = _page_events(rows)
    if not rows:
        return page, (False, [])
    forgotten, history = json.loads(rows[0][10])
    return page, (forgotten is True, [(int(p), str(m)) for p, m in history or ()])


def _room_stream_events(
    txn: ReadTxn, room_id: str, from_pos: int, to_pos: int | None, backwards: bool, limit: int,
    types: list[str] | None, not_types: list[str] | None,
) -> list[StoredEvent]:
    rows = _stream_rows(txn, room_id, from_pos, to_pos, backwards, limit, types, not_types)
    return _page_events(rows)


def _stream_rows(
    txn: ReadTxn, room_id: str, from_pos: int, to_pos: int | None, backwards: bool, limit: int,
    types: list[str] | None, not_types: list[str] | None, extra: str = "",
    extra_args: list[Any] | None = None,
) -> list[tuple[Any, ...]]:
    """The rows of a page of one room's stream: _EVENT_COLUMNS, the kinds of relation
    that point at each event, then the `extra` columns (with `extra_args`)."""
    op, order = ("<", "DESC") if backwards else (">", "ASC")
    clauses = [f"e.stream_ordering {op} %s", "e.room_id = ANY(ARRAY[%s])",
               "e.rejected_reason IS NULL", "NOT e.soft_failed"]
    args: list[Any] = [room_id, *(extra_args or ()), from_pos, room_id]
    if to_pos is not None:
        clauses.append("e.stream_ordering " + (">= %s" if backwards else "<= %s"))
        args.append(to_pos)
    if types:
        clauses.append("e.type = ANY(%s)")
        args.append(types)
    if not_types:
        clauses.append("NOT (e.type = ANY(%s))")
        args.append(not_types)
    args.append(limit)
    # ARRAY(SELECT DISTINCT ...), not array_agg(DISTINCT ...): the aggregate set up a sort
    # for each of the page's rows (EXPLAIN ANALYZE, 100 rows: 0.071 against 0.046 ms);
    # none relating gives {} instead of NULL, both read as no kinds (_page_events).
    sql = (f"SELECT {_ROOM_EVENT_COLUMNS}, ARRAY(SELECT DISTINCT x.rel_type"
           "  FROM event_relations x WHERE x.relates_to_id = e.event_id)"
           f"{extra} FROM events e WHERE {' AND '.join(clauses)}"
           f" ORDER BY e.room_id {order}, e.stream_ordering {order} LIMIT %s")
    statement = _page_statements.get(sql)
    if statement is None:
        statement = _page_statements.setdefault(sql, Prepared(sql, _PAGE_SETTINGS))
    return txn.query_prepared(statement, args)


_NO_RELATIONS: frozenset[str] = frozenset()
_new_tuple = tuple.__new__


def _page_events(rows: list[tuple[Any, ...]]) -> list[StoredEvent]:
    """A page's rows (_stream_rows) as StoredEvents: built by tuple.__new__ from the
    columns named one by one, not through the named tuple's own __new__ (a Python
    function) with a sliced row: 0.23 against 0.54 µs a row, on the pool thread."""
    return [_new_tuple(StoredEvent, (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
                                     frozenset(r[9]) if r[9] else _NO_RELATIONS))
            for r in rows]
