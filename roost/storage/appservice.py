"""Application service transactions: each service's position in the events stream and
its unacknowledged transactions (migration 0015)."""

from __future__ import annotations

import json

from roost.storage.database import Database, Txn


class AppServiceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def position(self, as_id: str, start_at: int) -> int:
        """The service's position; a service seen for the first time starts at `start_at`
        (now: history from before it was registered is not pushed)."""

        def txn_fn(txn: Txn) -> int:
            txn.execute("INSERT INTO appservice_position (as_id, stream_position)"
                        " VALUES (%s, %s) ON CONFLICT (as_id) DO NOTHING", (as_id, start_at))
            row = txn.query_one("SELECT stream_position FROM appservice_position"
                                " WHERE as_id = %s", (as_id,))
            return int(row[0]) if row else start_at

        return await self._db.run("as_position", txn_fn)

    async def make_txn(self, as_id: str, event_ids: list[str], new_position: int) -> None:
        """Queue the events as the next transaction (if any) and move the position, at once."""

        def txn_fn(txn: Txn) -> None:
            row = txn.query_one(
                "UPDATE appservice_position SET stream_position = %s,"
                " last_txn_id = last_txn_id + %s WHERE as_id = %s RETURNING last_txn_id",
                (new_position, 1 if event_ids else 0, as_id))
            if event_ids and row:
                txn.execute("INSERT INTO appservice_txns (as_id, txn_id, event_ids)"
                            " VALUES (%s, %s, %s)", (as_id, int(row[0]), json.dumps(event_ids)))

        await self._db.run("as_make_txn", txn_fn)

    async def oldest_txn(self, as_id: str) -> tuple[int, list[str]] | None:
        row = await self._db.run("as_oldest_txn", lambda txn: txn.query_one(
            "SELECT txn_id, event_ids FROM appservice_txns WHERE as_id = %s"
            " ORDER BY txn_id LIMIT 1", (as_id,)))
        return (int(row[0]), json.loads(row[1])) if row else None

    async def txn_done(self, as_id: str, txn_id: int) -> None:
        await self._db.run("as_txn_done", lambda txn: txn.execute(
            "DELETE FROM appservice_txns WHERE as_id = %s AND txn_id = %s", (as_id, txn_id)))

    async def backlog(self, as_id: str) -> int:
        row = await self._db.run("as_backlog", lambda txn: txn.query_one(
            "SELECT count(*) FROM appservice_txns WHERE as_id = %s", (as_id,)))
        return int(row[0]) if row else 0
