"""Writing a room's events, and reading them back.

`persist_batch` writes everything one append to a room changes in a single
transaction: the events and their edges, new state groups, the current
state, the forward extremities, membership rows, relations, redactions and
transaction ids. Nothing is half-written: either the batch is there, with
its stream positions, or none of it is.

Pages of one room's stream (/messages, /context) are read by storage/room_pages.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from roost.storage.database import Database, Statements, Txn, violated_constraint
from roost.storage.push import PushWrite, record_statement
from roost.storage.stream_positions import Fence, run_fenced

StateKey = tuple[str, str]
# Where the helpers below write: straight into the transaction, or queued to be sent
# together (_persist).
Writes = Txn | Statements

# Events per INSERT statement. libpq keeps a connection's output buffer at the
# largest statement it ever sent: a batch of 100 events in one statement (about
# 76 KB of event JSON) grew each pooled connection's buffer to 128 KiB for good,
# about 1 MiB across the pool after bench/memory.py. 32 keeps statements near
# 32 KB, at the cost of a few more statements in a large batch.
EVENTS_PER_STATEMENT = 32


@dataclass
class NewStateGroup:
    id: int
    prev_group: int | None
    chain_length: int
    # The delta against prev_group (or the full state when prev_group is None).
    entries: dict[StateKey, str]


@dataclass
class EventRow:
    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    depth: int
    origin_server_ts: int
    pdu_json: str
    prev_event_ids: list[str]
    auth_event_ids: list[str]
    stream_ordering: int | None
    state_group: int | None
    membership: str | None = None
    # (relates_to_id, rel_type, aggregation_key)
    relation: tuple[str, str, str | None] | None = None
    redacts: str | None = None
    txn_key: tuple[str, str, str] | None = None
    rejected_reason: str | None = None
    outlier: bool = False
    # A remote event that failed against the current state: kept in the graph,
    # never shown (the sync and /messages queries skip it).
    soft_failed: bool = False


@dataclass
class RoomBatch:
    room_id: str
    events: list[EventRow]
    state_groups: list[NewStateGroup] = field(default_factory=list)
    # (type, state_key) -> (event_id, membership)
    current_state: dict[StateKey, tuple[str, str | None]] = field(default_factory=dict)
    extremities: list[str] | None = None  # the room's new forward extremities
    new_room: tuple[str, str, int] | None = None  # (version, creator, created_ts)
    # Keys that left the current state (state resolution over a fork can drop one).
    current_state_removed: list[StateKey] = field(default_factory=list)
    # (state group, stream position): the group that is the current state as of
    # that position, when no event's group is (remote events; see room_state_heads).
    state_head: tuple[int, int] | None = None
    # Push evaluation of these very events, stored in the same transaction (the push
    # evaluator's `prepare`): then no write of its own follows the persist.
    push: PushWrite | None = None


class StoredEvent(NamedTuple):
    """An event's row as read. A named tuple, not a frozen dataclass: built for every row
    of every page and sync read (about a seventh of the time to build) and held 1,000 at a
    time by the sync path's window of the stream (about 140 bytes each instead of 350)."""

    event_id: str
    room_id: str
    stream_ordering: int | None
    # The canonical JSON the event was hashed and signed as: a str as read from PostgreSQL,
    # the event's own bytes in the rows the sync window builds from local sends (no copy).
    pdu_json: str | bytes
    room_version: str
    state_group: int | None
    rejected_reason: str | None
    outlier: bool
    redacted_by: str | None
    # The rel_types of events relating to this one, where the read asked (history
    # pages): serving it then needs no aggregation query when there are none.
    relation_kinds: frozenset[str] | None = None


class TxnIdConflict(Exception):
    """The (user, device, txn id) was used by a send that committed first."""


class EventStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Set by wiring for an event writer among several processes (stream_positions.Fence).
        self.fence: Fence | None = None

    async def persist_batch(self, batch: RoomBatch) -> None:
        """Store a room's new events; among several writers, only while this one still
        holds its place in the events stream (`fence`, stream_positions.Fence)."""
        try:
            if self.fence is None:  # one round trip for a small batch (run_script)
                await self._db.run_script("persist_batch", _queue_persist, batch)
            else:
                await run_fenced(self._db, "persist_batch", self.fence,
                                 lambda t: _persist(t, batch))
        except Exception as e:
            if violated_constraint(e) == "event_txn_ids_pkey":
                raise TxnIdConflict() from None  # the whole batch was undone
            raise

    async def max_stream_ordering(self) -> int:
        row = await self._db.run(
            "max_stream", lambda t: t.query_one("SELECT COALESCE(MAX(stream_ordering), 0) FROM events")
        )
        return int(row[0]) if row else 0

    async def max_state_group(self) -> int:
        row = await self._db.run(
            "max_state_group", lambda t: t.query_one("SELECT COALESCE(MAX(id), 0) FROM state_groups")
        )
        return int(row[0]) if row else 0

    async def get_events(self, event_ids: list[str]) -> dict[str, StoredEvent]:
        if not event_ids:
            return {}
        return await self._db.run("get_events", _get_events, list(dict.fromkeys(event_ids)))

    async def get_txn_event(self, user_id: str, device_id: str, txn_id: str) -> str | None:
        row = await self._db.run(
            "get_txn_event",
            lambda t: t.query_one(
                "SELECT event_id FROM event_txn_ids WHERE user_id = %s AND device_id = %s"
                " AND txn_id = %s",
                (user_id, device_id, txn_id),
            ),
        )
        return row[0] if row else None

    async def positions_and_redactions(
        self, event_ids: list[str]
    ) -> dict[str, tuple[int | None, str | None, bool]]:
        """event id -> (stream position, the redaction applying to it, rejected), without
        the events' JSON: for events the caller already holds parsed."""
        if not event_ids:
            return {}
        rows = await self._db.run(
            "positions_and_redactions",
            lambda t: t.query(
                "SELECT e.event_id, e.stream_ordering,"
                " (SELECT MIN(x.event_id) FROM redactions x JOIN events re"
                "   ON re.event_id = x.event_id"
                "   WHERE x.redacts = e.event_id AND re.rejected_reason IS NULL"
                "   AND re.room_id = e.room_id),"
                " e.rejected_reason IS NOT NULL"
                " FROM events e WHERE e.event_id = ANY(%s)",
                (event_ids,),
            ),
        )
        return {r[0]: (r[1], r[2], bool(r[3])) for r in rows}

    async def txn_events(self, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
        """(user, device, txn id) -> the event each already made, for those that made one."""
        if not keys:
            return {}
        rows = await self._db.run(
            "txn_events",
            lambda t: t.query(
                "SELECT t.user_id, t.device_id, t.txn_id, t.event_id FROM event_txn_ids t"
                " JOIN (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))"
                " AS k(user_id, device_id, txn_id) USING (user_id, device_id, txn_id)",
                ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
            ),
        )
        return {(r[0], r[1], r[2]): r[3] for r in rows}

    async def auth_chain_ids(self, event_ids: list[str]) -> set[str]:
        """Every auth ancestor of `event_ids` (not the events themselves), from the auth edges."""
        if not event_ids:
            return set()
        rows = await self._db.run(
            "auth_chain_ids",
            lambda t: t.query(
                "WITH RECURSIVE chain(event_id) AS ("
                "  SELECT auth_event_id FROM event_auth_edges WHERE event_id = ANY(%s)"
                "  UNION"
                "  SELECT a.auth_event_id FROM event_auth_edges a JOIN chain c"
                "  ON a.event_id = c.event_id"
                ") SELECT event_id FROM chain",
                (list(event_ids),),
            ),
        )
        return {r[0] for r in rows}

    async def prev_event_ids(self, event_ids: list[str]) -> dict[str, list[str]]:
        """event id -> its prev events, for the events given (from the edges table)."""
        if not event_ids:
            return {}
        rows = await self._db.run(
            "prev_event_ids",
            lambda t: t.query(
                "SELECT event_id, prev_event_id FROM event_edges WHERE event_id = ANY(%s)",
                (list(event_ids),),
            ),
        )
        result: dict[str, list[str]] = {e: [] for e in event_ids}
        for event_id, prev_id in rows:
            result[event_id].append(prev_id)
        return result

    async def backward_extremities(self, room_id: str, limit: int = 20) -> list[str]:
        """Prev events of the room's earliest timeline events that are not in the timeline
        here (unknown, or known only as outliers): where backfilling goes on from."""
        rows = await self._db.run(
            "backward_extremities",
            lambda t: t.query(
                "SELECT g.prev_event_id, MIN(e.stream_ordering) AS first FROM events e"
                " JOIN event_edges g ON g.event_id = e.event_id"
                " LEFT JOIN events p ON p.event_id = g.prev_event_id"
                " WHERE e.room_id = %s AND e.stream_ordering IS NOT NULL"
                " AND (p.event_id IS NULL OR (p.stream_ordering IS NULL"
                "      AND p.rejected_reason IS NULL))"
                " GROUP BY g.prev_event_id ORDER BY first LIMIT %s",
                (room_id, limit),
            ),
        )
        return [r[0] for r in rows]

    async def persist_backfilled(self, room_id: str, timeline: list[EventRow],
                                 rejected: list[EventRow],
                                 state_groups: list[NewStateGroup] | None = None) -> int:
        """Store backfilled events: `timeline` newest first, each given the next position
        below zero (an event held as an outlier is moved into the timeline, with its
        state group; one already in it is left alone); `rejected` (and new outliers)
        without a position; the state groups they open. Returns how many joined the
        timeline."""
        return await self._db.run("persist_backfilled", _persist_backfilled, room_id,
                                  timeline, rejected, state_groups or [])

_EVENT_COLUMNS = (
    "e.event_id, e.room_id, e.stream_ordering, e.pdu, r.room_version, e.state_group,"
    " e.rejected_reason, e.outlier,"
    " (SELECT MIN(x.event_id) FROM redactions x JOIN events re ON re.event_id = x.event_id"
    "   WHERE x.redacts = e.event_id AND re.rejected_reason IS NULL"
    "   AND re.room_id = e.room_id)"
)


def _row_to_event(row: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                       row[7], row[8])


def _get_events(txn: Txn, event_ids: list[str]) -> dict[str, StoredEvent]:
    rows = txn.query(
        f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
        " WHERE e.event_id = ANY(%s)",
        (event_ids,),
    )
    return {row[0]: _row_to_event(row) for row in rows}


def _persist(txn: Txn, batch: RoomBatch) -> None:
    # One round trip for the whole batch when it is small (a send: events, edges, auth
    # edges, extremities, txn id), instead of one per statement (Statements).
    out = txn.statements()
    _queue_persist(out, batch)
    out.send()


def _queue_persist(out: Statements, batch: RoomBatch) -> None:
    if batch.new_room is not None:
        version, creator, created_ts = batch.new_room
        out.execute(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (%s, %s, %s, %s)",
            (batch.room_id, version, creator, created_ts),
        )
    _insert_events(out, batch.events)
    _insert_state_groups(out, batch.room_id, batch.state_groups)
    _update_current_state(out, batch.room_id, batch.current_state)
    if batch.current_state_removed:
        _remove_current_state(out, batch.room_id, batch.current_state_removed)
    if batch.state_head is not None:
        out.execute(
            "INSERT INTO room_state_heads (room_id, state_group, stream_ordering)"
            " VALUES (%s, %s, %s) ON CONFLICT (room_id) DO UPDATE"
            " SET state_group = EXCLUDED.state_group, stream_ordering = EXCLUDED.stream_ordering",
            (batch.room_id, *batch.state_head),
        )
    if batch.extremities is not None:
        out.execute("DELETE FROM forward_extremities WHERE room_id = %s", (batch.room_id,))
        out.execute_values(
            "INSERT INTO forward_extremities (room_id, event_id) VALUES %s",
            [(batch.room_id, e) for e in batch.extremities],
        )
    if batch.push is not None:
        out.execute(*record_statement(*batch.push))
    _insert_txn_ids(out, batch.events)


def _insert_txn_ids(txn: Writes, events: list[EventRow]) -> None:
    """Queue the sends' txn ids. A key used before violates event_txn_ids_pkey, which undoes
    the whole batch (persist_batch raises TxnIdConflict): an error, not a row count read
    back, so the batch may be sent as one query in autocommit (Database.run_script)."""
    rows = [(*e.txn_key, e.event_id) for e in events if e.txn_key is not None]
    if rows:
        txn.execute_values(
            "INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id) VALUES %s", rows)


def _remove_current_state(txn: Writes, room_id: str, keys: list[StateKey]) -> None:
    for event_type, state_key in keys:
        txn.execute(
            "DELETE FROM current_state WHERE room_id = %s AND type = %s AND state_key = %s",
            (room_id, event_type, state_key),
        )


def _insert_events(txn: Writes, events: list[EventRow]) -> None:
    if not events:
        return
    txn.execute_values(
        "INSERT INTO events (event_id, room_id, stream_ordering, depth, type, state_key, sender,"
        " origin_server_ts, pdu, state_group, rejected_reason, outlier, soft_failed) VALUES %s",
        [
            (e.event_id, e.room_id, e.stream_ordering, e.depth, e.type, e.state_key, e.sender,
             e.origin_server_ts, e.pdu_json, e.state_group, e.rejected_reason, e.outlier,
             e.soft_failed)
            for e in events
        ],
        page_size=EVENTS_PER_STATEMENT,
    )
    edges = [(e.event_id, p) for e in events for p in e.prev_event_ids]
    if edges:
        txn.execute_values("INSERT INTO event_edges (event_id, prev_event_id) VALUES %s", edges)
    auth = [(e.event_id, a) for e in events for a in e.auth_event_ids]
    if auth:
        txn.execute_values(
            "INSERT INTO event_auth_edges (event_id, auth_event_id) VALUES %s", auth
        )
    accepted = [e for e in events
                if e.rejected_reason is None and not e.outlier and not e.soft_failed]
    _insert_timeline_extras(txn, accepted)


def _insert_timeline_extras(txn: Writes, accepted: list[EventRow]) -> None:
    """Membership, redaction and relation rows of events that are in the timeline."""
    members = [
        (e.event_id, e.room_id, e.state_key, e.sender, e.membership, e.stream_ordering)
        for e in accepted if e.membership is not None
    ]
    if members:
        txn.execute_values(
            "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership,"
            " stream_ordering) VALUES %s",
            members,
        )
    redactions = [(e.event_id, e.redacts) for e in accepted if e.redacts is not None]
    if redactions:
        txn.execute_values("INSERT INTO redactions (event_id, redacts) VALUES %s", redactions)
    relations = [
        (e.event_id, e.room_id, *e.relation[:2], e.type, e.sender, e.relation[2], e.stream_ordering)
        for e in accepted if e.relation is not None
    ]
    if relations:
        txn.execute_values(
            "INSERT INTO event_relations (event_id, room_id, relates_to_id, rel_type, event_type,"
            " sender, aggregation_key, stream_ordering) VALUES %s",
            relations,
        )


def _persist_backfilled(txn: Txn, room_id: str, timeline: list[EventRow],
                        rejected: list[EventRow], state_groups: list[NewStateGroup]) -> int:
    _insert_state_groups(txn, room_id, state_groups)
    ids = [e.event_id for e in [*timeline, *rejected]]
    held = {r[0]: r[1] for r in txn.query(
        "SELECT event_id, stream_ordering FROM events WHERE event_id = ANY(%s)", (ids,))}
    wanted = [e for e in timeline if e.event_id not in held or held[e.event_id] is None]
    positions = sorted((r[0] for r in txn.query(
        "SELECT nextval('backfill_stream_ordering') FROM generate_series(1, %s)",
        (len(wanted),))), reverse=True) if wanted else []
    new: list[EventRow] = []
    placed: list[EventRow] = []
    for row, position in zip(wanted, positions, strict=True):
        row.stream_ordering = position
        row.outlier = False
        placed.append(row)
        if row.event_id in held:
            txn.execute(
                "UPDATE events SET stream_ordering = %s, outlier = FALSE, state_group = %s"
                " WHERE event_id = %s AND stream_ordering IS NULL AND rejected_reason IS NULL",
                (position, row.state_group, row.event_id),
            )
        else:
            new.append(row)
    _insert_events(txn, new + [e for e in rejected if e.event_id not in held])
    # Outliers moved into the timeline get the rows _insert_events gave the new ones.
    _insert_timeline_extras(txn, [e for e in placed if e.event_id in held
                                  and e.rejected_reason is None])
    return len(placed)


def _insert_state_groups(txn: Writes, room_id: str, groups: list[NewStateGroup]) -> None:
    if not groups:
        return
    txn.execute_values(
        "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES %s",
        [(g.id, room_id, g.prev_group, g.chain_length) for g in groups],
    )
    entries = [(g.id, t, k, e) for g in groups for (t, k), e in g.entries.items()]
    if entries:
        txn.execute_values(
            "INSERT INTO state_group_entries (state_group, type, state_key, event_id) VALUES %s",
            entries,
        )


def _update_current_state(
    txn: Writes, room_id: str, changes: dict[StateKey, tuple[str, str | None]]
) -> None:
    if not changes:
        return
    txn.execute_values(
        "INSERT INTO current_state (room_id, type, state_key, event_id, membership) VALUES %s"
        " ON CONFLICT (room_id, type, state_key) DO UPDATE"
        " SET event_id = EXCLUDED.event_id, membership = EXCLUDED.membership",
        [(room_id, t, k, e, m) for (t, k), (e, m) in changes.items()],
    )


class SyncEventStore:
    """The event queries /sync makes: a few set-based queries per sync, not one per room."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def in_range(
        self, room_ids: list[str], after: int, upto: int, limit: int
    ) -> list[StoredEvent]:
        """Events of the rooms in (after, upto], oldest first, at most the newest `limit`."""
        if not room_ids:
            return []
        rows = await self._db.run(
            "events_in_range",
            lambda t: t.query(
                f"SELECT {_EVENT_COLUMNS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
                " WHERE e.room_id = ANY(%s) AND e.stream_ordering > %s AND e.stream_ordering <= %s"
                " AND e.rejected_reason IS NULL AND NOT e.soft_failed"
                " ORDER BY e.stream_ordering DESC LIMIT %s",
                (room_ids, after, upto, limit),
            ),
        )
        return [_row_to_event(row) for row in reversed(rows)]

    async def latest_join_positions(self, user_id: str, room_ids: list[str]) -> dict[str, int]:
        """room -> the position of the user's latest join, for the rooms given (one query)."""
        if not room_ids:
            return {}
        rows = await self._db.run(
            "latest_join_positions",
            lambda t: t.query(
                "SELECT room_id, MAX(stream_ordering) FROM room_memberships WHERE user_id = %s"
                " AND room_id = ANY(%s) AND membership = 'join' GROUP BY room_id",
                (user_id, room_ids),
            ),
        )
        return {r[0]: int(r[1]) for r in rows}

    async def membership_changes(
        self, user_id: str, after: int, upto: int
    ) -> list[tuple[str, str, str, int]]:
        """(room_id, membership, event_id, position) of the user's changes in (after, upto]."""
        rows = await self._db.run(
            "membership_changes",
            lambda t: t.query(
                "SELECT room_id, membership, event_id, stream_ordering FROM room_memberships"
                " WHERE user_id = %s AND stream_ordering > %s AND stream_ordering <= %s"
                " ORDER BY stream_ordering",
                (user_id, after, upto),
            ),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]
