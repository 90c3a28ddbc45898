"""To-device messages waiting in a device's inbox, at positions of the to_device stream.

A message stays until the device syncs with a token at or past its position
(which says the client has it), then it is deleted. Transaction ids make
/sendToDevice idempotent; message ids make each m.direct_to_device EDU from
another server deliver once.
"""

from __future__ import annotations

import json
from typing import Any

from roost.storage.database import Database, Txn
from roost.storage.stream_positions import Fence, run_fenced

JsonDict = dict[str, Any]


class DeviceInboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def max_stream_id(self) -> int:
        row = await self._db.run("inbox_max", lambda t: t.query_one(
            "SELECT COALESCE(MAX(stream_id), 0) FROM device_inbox"))
        return int(row[0]) if row else 0

    async def deliver(self, rows: list[tuple[str, str, JsonDict]], stream_id: int,
                      txn_key: tuple[str, str, str] | None = None,
                      federation_key: tuple[str, str, int] | None = None,
                      fence: Fence | None = None) -> bool:
        """Put (user, device, message) rows in inboxes at `stream_id`, once.

        `txn_key` (user, device, txn id) or `federation_key` (origin, message
        id, now) names the request; if it was seen before nothing is written
        and False is returned. Devices that no longer exist are skipped. `fence`:
        the to-device stream's, among several writers (run_fenced).
        """

        def txn_fn(txn: Txn) -> bool:
            if txn_key is not None:
                txn.execute("INSERT INTO device_inbox_txns (user_id, device_id, txn_id)"
                            " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", txn_key)
                if txn.rowcount == 0:
                    return False
            if federation_key is not None:
                txn.execute("INSERT INTO device_inbox_federation (origin, message_id, received_ts)"
                            " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", federation_key)
                if txn.rowcount == 0:
                    return False
            if rows:
                txn.execute_values(
                    "INSERT INTO device_inbox (user_id, device_id, stream_id, message_json)"
                    " SELECT v.u, v.d, v.s, v.m FROM (VALUES %s) AS v (u, d, s, m)"
                    " JOIN devices ON devices.user_id = v.u AND devices.device_id = v.d"
                    " ON CONFLICT DO NOTHING",
                    [(u, d, stream_id, json.dumps(m, separators=(",", ":"))) for u, d, m in rows])
            return True

        return await run_fenced(self._db, "inbox_deliver", fence, txn_fn)

    async def messages(self, user_id: str, device_id: str, upto: int, limit: int
                       ) -> tuple[list[JsonDict], int]:
        """Up to `limit` messages at positions <= upto, oldest first, and the position
        of the last one served (`upto` when none are left beyond them)."""

        def txn_fn(txn: Txn) -> tuple[list[JsonDict], int]:
            rows = txn.query(
                "SELECT stream_id, message_json FROM device_inbox WHERE user_id = %s"
                " AND device_id = %s AND stream_id <= %s ORDER BY stream_id LIMIT %s",
                (user_id, device_id, upto, limit + 1))
            if len(rows) <= limit:
                return [json.loads(r[1]) for r in rows], upto
            # A device holds at most one message per position (the primary key).
            kept = rows[:limit]
            return [json.loads(r[1]) for r in kept], kept[-1][0]

        return await self._db.run("inbox_messages", txn_fn)

    async def acknowledge(self, user_id: str, device_id: str, upto: int) -> None:
        """The device synced with a token at `upto`: it has every message up to there."""
        await self._db.run("inbox_ack", lambda t: t.execute(
            "DELETE FROM device_inbox WHERE user_id = %s AND device_id = %s AND stream_id <= %s",
            (user_id, device_id, upto)))

