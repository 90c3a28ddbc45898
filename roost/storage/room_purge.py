"""Deleting a room and its whole history from the database (an admin's shutdown with
`purge`), in one transaction.

The tables are found in the schema rather than listed here, so a table added by
a later migration is purged too: first every table keyed by `event_id` alone
(edges, relations, redactions, txn ids, push actions...) for the room's events,
then state group entries, then every table with a `room_id` column, `rooms`
last. Tables that must outlive the room are named in KEEP (an admin's block
must survive the purge it came with; reports stay for the admins' records).
"""

from __future__ import annotations

from psycopg2 import sql

from roost.storage.database import Database, Txn

KEEP = frozenset({"blocked_rooms", "reports"})


def _tables_with(txn: Txn, column: str) -> set[str]:
    rows = txn.query(
        "SELECT c.table_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = current_schema() AND c.column_name = %s"
        " AND t.table_type = 'BASE TABLE'", (column,))
    return {r[0] for r in rows}


def _purge(txn: Txn, room_id: str) -> int:
    room_tables = _tables_with(txn, "room_id") - KEEP
    event_tables = _tables_with(txn, "event_id") - room_tables - KEEP
    found = txn.query_one("SELECT count(*) FROM events WHERE room_id = %s", (room_id,))
    for table in sorted(event_tables):
        txn.execute(sql.SQL("DELETE FROM {} WHERE event_id IN"
                            " (SELECT event_id FROM events WHERE room_id = %s)")
                    .format(sql.Identifier(table)), (room_id,))
    txn.execute("DELETE FROM state_group_entries WHERE state_group IN"
                " (SELECT id FROM state_groups WHERE room_id = %s)", (room_id,))
    for table in sorted(room_tables - {"rooms", "events", "state_groups"}):
        txn.execute(sql.SQL("DELETE FROM {} WHERE room_id = %s").format(sql.Identifier(table)),
                    (room_id,))
    for table in ("events", "state_groups", "rooms"):
        txn.execute(sql.SQL("DELETE FROM {} WHERE room_id = %s").format(sql.Identifier(table)),
                    (room_id,))
    return int(found[0]) if found else 0


class RoomPurger:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def purge(self, room_id: str) -> int:
        """Delete everything stored about the room; how many events it had."""
        return await self._db.run("purge_room", _purge, room_id)
