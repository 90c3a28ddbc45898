"""Receipts, account data and filters: the per-user data /sync serves beside events."""

from __future__ import annotations

import json
from typing import Any

from roost.storage.database import Database, Txn
from roost.storage.stream_positions import Fence, run_fenced


class ReceiptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def max_stream_id(self) -> int:
        row = await self._db.run(
            "receipts_max", lambda t: t.query_one("SELECT COALESCE(MAX(stream_id), 0) FROM receipts"))
        return int(row[0]) if row else 0

    async def put(self, room_id: str, user_id: str, receipt_type: str, thread_id: str,
                  event_id: str, ts: int, stream_id: int, fence: Fence | None = None) -> None:
        """`fence`: the receipts stream's, among several writers (run_fenced)."""
        await run_fenced(
            self._db, "put_receipt", fence,
            lambda t: t.execute(
                "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts,"
                " stream_id) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET"
                " event_id = EXCLUDED.event_id, ts = EXCLUDED.ts, stream_id = EXCLUDED.stream_id",
                (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_id),
            ),
        )

    async def since(self, room_ids: list[str], after: int, upto: int
                    ) -> list[tuple[str, str, str, str, str, int]]:
        """(room, user, type, thread, event, ts) of receipts in the rooms in (after, upto]."""
        if not room_ids:
            return []
        rows = await self._db.run(
            "receipts_since",
            lambda t: t.query(
                "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts FROM receipts"
                " WHERE room_id = ANY(%s) AND stream_id > %s AND stream_id <= %s"
                " ORDER BY stream_id",
                (room_ids, after, upto),
            ),
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


class AccountDataStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def max_stream_id(self) -> int:
        row = await self._db.run(
            "account_data_max",
            lambda t: t.query_one("SELECT COALESCE(MAX(stream_id), 0) FROM account_data"))
        return int(row[0]) if row else 0

    async def put(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any],
                  stream_id: int, fence: Fence | None = None) -> None:
        """`fence`: the account data stream's, among several writers (run_fenced)."""
        await run_fenced(
            self._db, "put_account_data", fence,
            lambda t: t.execute(
                "INSERT INTO account_data (user_id, room_id, type, content, stream_id)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, room_id, type) DO UPDATE"
                " SET content = EXCLUDED.content, stream_id = EXCLUDED.stream_id",
                (user_id, room_id, data_type, json.dumps(content), stream_id),
            ),
        )

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        row = await self._db.run(
            "get_account_data",
            lambda t: t.query_one(
                "SELECT content FROM account_data WHERE user_id = %s AND room_id = %s AND type = %s",
                (user_id, room_id, data_type)),
        )
        return json.loads(row[0]) if row else None

    async def since(self, user_id: str, after: int, upto: int
                    ) -> list[tuple[str, str, dict[str, Any]]]:
        """(room_id or '', type, content) changed in (after, upto]."""
        rows = await self._db.run(
            "account_data_since",
            lambda t: t.query(
                "SELECT room_id, type, content FROM account_data WHERE user_id = %s"
                " AND stream_id > %s AND stream_id <= %s ORDER BY stream_id",
                (user_id, after, upto)),
        )
        return [(r[0], r[1], json.loads(r[2])) for r in rows]


class FilterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, user_id: str, filter_json: dict[str, Any]) -> int:
        def txn_fn(txn: Txn) -> int:
            txn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (user_id,))
            row = txn.query_one(
                "SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = %s",
                (user_id,))
            filter_id = int(row[0]) if row else 0
            txn.execute("INSERT INTO filters (user_id, filter_id, filter_json) VALUES (%s, %s, %s)",
                        (user_id, filter_id, json.dumps(filter_json)))
            return filter_id

        return await self._db.run("add_filter", txn_fn)

    async def get(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        row = await self._db.run(
            "get_filter",
            lambda t: t.query_one(
                "SELECT filter_json FROM filters WHERE user_id = %s AND filter_id = %s",
                (user_id, filter_id)),
        )
        return json.loads(row[0]) if row else None
