"""Server signing keys: other servers' verify keys, and this server's own over time.

Remote keys are cached here so that a restart does not cost a key request per
server, and so that this server, acting as a notary, can still vouch for a
server that has gone offline. A key's validity only ever grows: a response
that arrives late (an old notary answer, say) never shortens what a newer one
said, so a cache cannot be rolled back by replaying old responses.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from roost.storage.database import Database, Txn


@dataclass(frozen=True)
class StoredKey:
    """A verify key of another server, as far as this server has learnt it."""

    server_name: str
    key_id: str
    verify_key: str  # unpadded base64
    valid_until_ts: int
    fetched_ts: int
    from_server: str


@dataclass(frozen=True)
class NewKey:
    key_id: str
    verify_key: str
    valid_until_ts: int


@dataclass(frozen=True)
class LocalKeyRecord:
    key_id: str
    verify_key: str
    created_ts: int
    expired_ts: int | None


def _dump(obj: dict[str, Any]) -> str:
    # Sorted and compact, so that one response stored for several keys is one text.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class ServerKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_keys(self, server_name: str, key_ids: Collection[str]) -> dict[str, StoredKey]:
        """The stored keys of `server_name` among `key_ids`, by key id."""
        if not key_ids:
            return {}
        rows = await self._db.run(
            "get_server_keys",
            lambda txn: txn.query(
                "SELECT server_name, key_id, verify_key, valid_until_ts, fetched_ts, from_server"
                " FROM remote_server_keys WHERE server_name = %s AND key_id = ANY(%s)",
                (server_name, list(key_ids)),
            ),
        )
        return {row[1]: StoredKey(*row) for row in rows}

    async def store_response(
        self,
        server_name: str,
        from_server: str,
        key_json: dict[str, Any],
        keys: Sequence[NewKey],
        fetched_ts: int,
    ) -> None:
        """Record the keys one verified response listed; a key's validity never shrinks."""
        text = _dump(key_json)
        rows = [
            (server_name, k.key_id, k.verify_key, k.valid_until_ts, fetched_ts, from_server, text)
            for k in keys
        ]
        if not rows:
            return

        def txn_fn(txn: Txn) -> None:
            # Sorted so that two concurrent writers lock rows in one order.
            txn.execute_values(
                "INSERT INTO remote_server_keys (server_name, key_id, verify_key, valid_until_ts,"
                " fetched_ts, from_server, key_json) VALUES %s"
                " ON CONFLICT (server_name, key_id) DO UPDATE SET"
                " verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts,"
                " fetched_ts = excluded.fetched_ts, from_server = excluded.from_server,"
                " key_json = excluded.key_json"
                " WHERE excluded.valid_until_ts >= remote_server_keys.valid_until_ts",
                sorted(rows, key=lambda r: r[1]),
            )

        await self._db.run("store_server_keys", txn_fn)

    async def get_responses(self, server_name: str) -> list[dict[str, Any]]:
        """Every distinct signed key response kept for `server_name` (what a notary serves)."""
        rows = await self._db.run(
            "get_server_key_responses",
            lambda txn: txn.query(
                "SELECT DISTINCT key_json FROM remote_server_keys WHERE server_name = %s",
                (server_name,),
            ),
        )
        return [json.loads(row[0]) for row in rows]

    async def record_local_key(self, key_id: str, verify_key: str, now_ms: int) -> None:
        """Make `key_id` the key in use; any other key in use becomes old as of now.

        Called at every start, so that replacing the signing key file is all an
        operator does to rotate: the replaced key is published as old from then on.
        """

        def txn_fn(txn: Txn) -> None:
            txn.execute("LOCK TABLE local_server_keys IN EXCLUSIVE MODE")
            txn.execute(
                "UPDATE local_server_keys SET expired_ts = %s"
                " WHERE expired_ts IS NULL AND key_id <> %s",
                (now_ms, key_id),
            )
            txn.execute(
                "INSERT INTO local_server_keys (key_id, verify_key, created_ts, expired_ts)"
                " VALUES (%s, %s, %s, NULL)"
                " ON CONFLICT (key_id) DO UPDATE SET expired_ts = NULL",
                (key_id, verify_key, now_ms),
            )

        await self._db.run("record_local_key", txn_fn)

    async def get_old_local_keys(self) -> list[LocalKeyRecord]:
        """This server's keys no longer in use, oldest first."""
        rows = await self._db.run(
            "get_old_local_keys",
            lambda txn: txn.query(
                "SELECT key_id, verify_key, created_ts, expired_ts FROM local_server_keys"
                " WHERE expired_ts IS NOT NULL ORDER BY expired_ts, key_id"
            ),
        )
        return [LocalKeyRecord(*row) for row in rows]
