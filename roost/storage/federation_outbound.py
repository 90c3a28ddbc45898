"""The federation sender's durable queue (tables of 0007_federation_outbound.sql).

Every transaction function here is safe to re-run: inserts ignore rows that
are already there, and deletes name exactly the rows a delivered transaction
carried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from roost.storage.database import Database, Txn


@dataclass(frozen=True)
class OutboundEvent:
    """What the sender needs to know of an event in the stream to route it."""

    stream_ordering: int
    event_id: str
    room_id: str
    sender: str
    type: str
    state_key: str | None
    membership: str | None
    state_group: int | None
    # For another server's join or leave served here: that server (see 0011).
    relay_origin: str | None = None


@dataclass(frozen=True)
class PendingPdu:
    stream_ordering: int
    event_id: str
    pdu_json: str


@dataclass(frozen=True)
class PendingEdu:
    id: int
    edu_type: str
    content: Any


@dataclass(frozen=True)
class RetryState:
    failure_count: int
    retry_interval_ms: int
    next_attempt_ts: int


class FederationOutboundStore:
    def __init__(self, db: Database, shard: str | None = None,
                 shards: tuple[str, ...] = ()) -> None:
        """`shard`: this sender's name when several senders split the destinations (each
        then keeps its own position, in stream_positions); `shards`: all of them."""
        self._db = db
        self._shard = shard
        self._shards = list(shards)

    # -- the sender's position in the events stream -------------------------

    async def get_position(self) -> int | None:
        """Where this sender is in the events stream. A shard that never ran starts where
        the single sender was, so turning sharding on sends nothing twice or never."""
        def read(t: Txn) -> Any:
            if self._shard is not None:
                row = t.query_one(
                    "SELECT position FROM stream_positions WHERE stream = %s AND instance = %s",
                    (_SHARD_STREAM, self._shard))
                if row:
                    return row
            return t.query_one("SELECT stream_position FROM federation_sender_position")
        row = await self._db.run("fed_sender_position", read)
        return int(row[0]) if row else None

    async def set_position(self, position: int) -> None:
        await self._db.run("fed_sender_set_position", _set_position, position, self._shard)

    # -- reading events to route --------------------------------------------

    async def events_after(self, after: int, upto: int, limit: int) -> list[OutboundEvent]:
        """Accepted, non-outlier events in (after, upto], in stream order."""
        rows = await self._db.run(
            "fed_events_after",
            lambda t: t.query(
                "SELECT e.stream_ordering, e.event_id, e.room_id, e.sender, e.type, e.state_key,"
                " m.membership, e.state_group, r.origin FROM events e"
                " LEFT JOIN room_memberships m ON m.event_id = e.event_id"
                " LEFT JOIN federation_relayed_events r ON r.event_id = e.event_id"
                " WHERE e.stream_ordering > %s AND e.stream_ordering <= %s"
                " AND e.rejected_reason IS NULL AND NOT e.outlier AND NOT e.soft_failed"
                " ORDER BY e.stream_ordering LIMIT %s",
                (after, upto, limit)))
        return [OutboundEvent(*r) for r in rows]

    async def joined_users_at_groups(self, groups: list[int]) -> dict[int, list[str]]:
        """state group -> users whose membership is join in that group's state."""
        if not groups:
            return {}
        return await self._db.run("fed_joined_at_groups", _joined_at_groups, groups)

    async def group_member_delta(self, group: int) -> tuple[int | None, list[tuple[str, str]]]:
        """A state group's previous group and the (user, membership) entries it changes.

        Cheap beside `joined_users_at_groups` (which walks the whole chain): the
        sender derives a group's hosts from its previous group's when every change
        is a join."""
        return await self._db.run("fed_group_member_delta", _group_member_delta, group)

    async def receipts_since(self, after: int, upto: int
                             ) -> list[tuple[str, str, str, str, str, int]]:
        """(room, user, type, thread, event, ts) of public read receipts in (after, upto]."""
        rows = await self._db.run(
            "fed_receipts_since",
            lambda t: t.query(
                "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts FROM receipts"
                " WHERE stream_id > %s AND stream_id <= %s AND receipt_type = 'm.read'"
                " ORDER BY stream_id", (after, upto)))
        return [tuple(r) for r in rows]  # type: ignore[misc]

    # -- queueing ----------------------------------------------------------------

    async def enqueue_pdus(self, rows: list[tuple[str, int, str]], new_position: int | None,
                           relayed: list[str] | None = None) -> None:
        """Queue (destination, stream_ordering, event_id) rows and move the position, at once;
        the relay marks of `relayed` events go in the same transaction."""
        await self._db.run("fed_enqueue_pdus", _enqueue_pdus, rows, new_position,
                           relayed or [], self._shard, self._shards)

    async def enqueue_edus(self, rows: list[tuple[str, str, Any]], now_ms: int) -> None:
        """Queue (destination, edu_type, content) rows."""
        if not rows:
            return
        await self._db.run(
            "fed_enqueue_edus",
            lambda t: t.execute_values(
                "INSERT INTO federation_outbound_edus (destination, edu_type, content, queued_ts)"
                " VALUES %s",
                [(d, kind, json.dumps(c, separators=(",", ":")), now_ms) for d, kind, c in rows]))

    async def pending(self, destination: str, max_pdus: int, max_edus: int
                      ) -> tuple[list[PendingPdu], list[PendingEdu], list[int]]:
        """The oldest PDUs and EDUs owed to `destination`.

        The third list holds stream orderings of queued events that no longer
        exist (purged): the caller deletes them with the delivered ones.
        """
        return await self._db.run("fed_pending", _pending, destination, max_pdus, max_edus)

    async def delivered(self, destination: str, stream_orderings: list[int],
                        edu_ids: list[int]) -> None:
        """Forget what a 200 answer covered, and the destination's failures."""
        await self._db.run("fed_delivered", _delivered, destination, stream_orderings, edu_ids)

    async def destinations_pending(self) -> dict[str, int]:
        """destination -> when it may next be tried (0: now), for every destination owed."""
        return await self._db.run("fed_destinations_pending", _destinations_pending)

    async def queue_depths(self) -> dict[str, int]:
        """destination -> PDUs and EDUs waiting for it (a metric)."""
        rows = await self._db.run("fed_queue_depths", lambda t: t.query(
            "SELECT destination, sum(n) FROM ("
            " SELECT destination, count(*) AS n FROM federation_outbound_pdus"
            " GROUP BY destination UNION ALL"
            " SELECT destination, count(*) FROM federation_outbound_edus"
            " GROUP BY destination) q GROUP BY destination"))
        return {r[0]: int(r[1]) for r in rows}

    # -- retry state --------------------------------------------------------------

    async def get_retry(self, destination: str) -> RetryState | None:
        row = await self._db.run(
            "fed_get_retry",
            lambda t: t.query_one(
                "SELECT failure_count, retry_interval_ms, next_attempt_ts"
                " FROM federation_destinations WHERE destination = %s", (destination,)))
        return RetryState(*row) if row else None

    async def set_retry(self, destination: str, state: RetryState) -> None:
        await self._db.run(
            "fed_set_retry",
            lambda t: t.execute(
                "INSERT INTO federation_destinations (destination, failure_count,"
                " retry_interval_ms, next_attempt_ts) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (destination) DO UPDATE SET failure_count = EXCLUDED.failure_count,"
                " retry_interval_ms = EXCLUDED.retry_interval_ms,"
                " next_attempt_ts = EXCLUDED.next_attempt_ts",
                (destination, state.failure_count, state.retry_interval_ms,
                 state.next_attempt_ts)))

    async def clear_retry(self, destination: str) -> None:
        await self._db.run(
            "fed_clear_retry",
            lambda t: t.execute("DELETE FROM federation_destinations WHERE destination = %s",
                                (destination,)))


_SHARD_STREAM = "federation_sender"


def _set_position(txn: Txn, position: int, shard: str | None = None) -> None:
    if shard is not None:
        txn.execute(
            "INSERT INTO stream_positions (stream, instance, position) VALUES (%s, %s, %s)"
            " ON CONFLICT (stream, instance) DO UPDATE SET position = EXCLUDED.position",
            (_SHARD_STREAM, shard, position))
        return
    txn.execute(
        "INSERT INTO federation_sender_position (lock, stream_position) VALUES ('X', %s)"
        " ON CONFLICT (lock) DO UPDATE SET stream_position = EXCLUDED.stream_position",
        (position,))


def _enqueue_pdus(txn: Txn, rows: list[tuple[str, int, str]], new_position: int | None,
                  relayed: list[str], shard: str | None = None,
                  shards: list[str] | None = None) -> None:
    if relayed and shard is None:
        txn.execute("DELETE FROM federation_relayed_events WHERE event_id = ANY(%s)", (relayed,))
    elif relayed:
        # Every shard reads every relayed event: its mark goes once all have passed it.
        txn.execute(
            "DELETE FROM federation_relayed_events r USING events e"
            " WHERE r.event_id = e.event_id AND e.stream_ordering <= ("
            "  SELECT CASE WHEN count(*) = %s THEN min(position) END FROM stream_positions"
            "  WHERE stream = %s AND instance = ANY(%s))",
            (len(shards or []), _SHARD_STREAM, shards or []))
    if rows:
        txn.execute_values(
            "INSERT INTO federation_outbound_pdus (destination, stream_ordering, event_id)"
            " VALUES %s ON CONFLICT DO NOTHING", rows)
    if new_position is not None:
        _set_position(txn, new_position, shard)


def _joined_at_groups(txn: Txn, groups: list[int]) -> dict[int, list[str]]:
    result: dict[int, list[str]] = {}
    for group in groups:
        rows = txn.query(
            "WITH RECURSIVE chain(id, prev_group, n) AS ("
            "  SELECT id, prev_group, 0 FROM state_groups WHERE id = %s"
            "  UNION ALL"
            "  SELECT g.id, g.prev_group, c.n + 1 FROM state_groups g"
            "  JOIN chain c ON g.id = c.prev_group"
            "), members AS ("
            "  SELECT DISTINCT ON (s.state_key) s.state_key, s.event_id"
            "  FROM chain c JOIN state_group_entries s ON s.state_group = c.id"
            "  WHERE s.type = 'm.room.member' ORDER BY s.state_key, c.n"
            ")"
            # From the member event itself: members learned from a send_join
            # response are outliers, which have no room_memberships row.
            " SELECT m.state_key FROM members m JOIN events e ON e.event_id = m.event_id"
            " WHERE (e.pdu::jsonb -> 'content' ->> 'membership') = 'join'",
            (group,))
        result[group] = [r[0] for r in rows]
    return result


def _group_member_delta(txn: Txn, group: int) -> tuple[int | None, list[tuple[str, str]]]:
    rows = txn.query(
        "SELECT g.prev_group, s.state_key, e.pdu::jsonb -> 'content' ->> 'membership'"
        " FROM state_groups g"
        " LEFT JOIN state_group_entries s ON s.state_group = g.id AND s.type = 'm.room.member'"
        " LEFT JOIN events e ON e.event_id = s.event_id"
        " WHERE g.id = %s", (group,))
    if not rows:
        return None, []
    return rows[0][0], [(r[1], r[2] or "") for r in rows if r[1] is not None]


def _pending(txn: Txn, destination: str, max_pdus: int, max_edus: int
             ) -> tuple[list[PendingPdu], list[PendingEdu], list[int]]:
    rows = txn.query(
        "SELECT q.stream_ordering, q.event_id, e.pdu FROM federation_outbound_pdus q"
        " LEFT JOIN events e ON e.event_id = q.event_id"
        " WHERE q.destination = %s ORDER BY q.stream_ordering LIMIT %s",
        (destination, max_pdus))
    pdus = [PendingPdu(r[0], r[1], r[2]) for r in rows if r[2] is not None]
    gone = [r[0] for r in rows if r[2] is None]
    edus = [
        PendingEdu(r[0], r[1], json.loads(r[2]))
        for r in txn.query(
            "SELECT id, edu_type, content FROM federation_outbound_edus WHERE destination = %s"
            " ORDER BY id LIMIT %s", (destination, max_edus))
    ]
    return pdus, edus, gone


def _delivered(txn: Txn, destination: str, stream_orderings: list[int], edu_ids: list[int]) -> None:
    if stream_orderings:
        txn.execute(
            "DELETE FROM federation_outbound_pdus WHERE destination = %s"
            " AND stream_ordering = ANY(%s)", (destination, stream_orderings))
    if edu_ids:
        txn.execute("DELETE FROM federation_outbound_edus WHERE destination = %s AND id = ANY(%s)",
                    (destination, edu_ids))
    txn.execute("DELETE FROM federation_destinations WHERE destination = %s", (destination,))


def _destinations_pending(txn: Txn) -> dict[str, int]:
    rows = txn.query(
        "SELECT q.destination, COALESCE(MAX(d.next_attempt_ts), 0) FROM ("
        "  SELECT DISTINCT destination FROM federation_outbound_pdus"
        "  UNION SELECT DISTINCT destination FROM federation_outbound_edus"
        ") q LEFT JOIN federation_destinations d ON d.destination = q.destination"
        " GROUP BY q.destination")
    return {r[0]: int(r[1]) for r in rows}
