"""Server-side key backup: backup versions and the room keys stored in them.

Versions are numbered per user from 1 and never reused (a deleted version
stays as a tombstone so its number is not handed out again). A version's
etag moves whenever its keys change; replacing a session's key follows the
spec: a verified key beats an unverified one, then the lower first message
index wins, then the lower forwarded count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from roost.storage.database import Database, Txn

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class BackupVersion:
    version: int
    algorithm: str
    auth_data: JsonDict
    etag: int
    count: int


@dataclass(frozen=True)
class RoomKey:
    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: JsonDict

    def to_json(self) -> JsonDict:
        return {"first_message_index": self.first_message_index,
                "forwarded_count": self.forwarded_count, "is_verified": self.is_verified,
                "session_data": self.session_data}


def _better(new: RoomKey, old: tuple[int, int, bool]) -> bool:
    """Whether `new` replaces a stored key (first_message_index, forwarded_count, verified)."""
    old_index, old_forwarded, old_verified = old
    if new.is_verified != old_verified:
        return new.is_verified
    if new.first_message_index != old_index:
        return new.first_message_index < old_index
    return new.forwarded_count < old_forwarded


class KeyBackupStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_version(self, user_id: str, algorithm: str, auth_data: JsonDict) -> int:
        def txn_fn(txn: Txn) -> int:
            txn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"backup:{user_id}",))
            row = txn.query_one("SELECT COALESCE(MAX(version), 0) FROM e2e_room_keys_versions"
                                " WHERE user_id = %s", (user_id,))
            version = int(row[0]) + 1 if row else 1
            txn.execute("INSERT INTO e2e_room_keys_versions (user_id, version, algorithm,"
                        " auth_data) VALUES (%s, %s, %s, %s)",
                        (user_id, version, algorithm, json.dumps(auth_data)))
            return version

        return await self._db.run("backup_create", txn_fn)

    async def get_version(self, user_id: str, version: int | None) -> BackupVersion | None:
        """A live version (the latest with None)."""

        def txn_fn(txn: Txn) -> BackupVersion | None:
            if version is None:
                row = txn.query_one(
                    "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions"
                    " WHERE user_id = %s AND NOT deleted ORDER BY version DESC LIMIT 1",
                    (user_id,))
            else:
                row = txn.query_one(
                    "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions"
                    " WHERE user_id = %s AND version = %s AND NOT deleted", (user_id, version))
            if row is None:
                return None
            count = txn.query_one("SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = %s"
                                  " AND version = %s", (user_id, row[0]))
            return BackupVersion(int(row[0]), row[1], json.loads(row[2]), int(row[3]),
                                 int(count[0]) if count else 0)

        return await self._db.run("backup_get", txn_fn)

    async def update_version(self, user_id: str, version: int, auth_data: JsonDict) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute("UPDATE e2e_room_keys_versions SET auth_data = %s WHERE user_id = %s"
                        " AND version = %s AND NOT deleted",
                        (json.dumps(auth_data), user_id, version))
            return txn.rowcount == 1

        return await self._db.run("backup_update", txn_fn)

    async def delete_version(self, user_id: str, version: int) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute("UPDATE e2e_room_keys_versions SET deleted = TRUE WHERE user_id = %s"
                        " AND version = %s AND NOT deleted", (user_id, version))
            if txn.rowcount != 1:
                return False
            txn.execute("DELETE FROM e2e_room_keys WHERE user_id = %s AND version = %s",
                        (user_id, version))
            return True

        return await self._db.run("backup_delete", txn_fn)

    async def put_keys(self, user_id: str, version: int, keys: list[RoomKey]
                       ) -> tuple[int, int] | None:
        """Store keys that beat what is there; (etag, count), or None if the version is not
        the live one."""

        def txn_fn(txn: Txn) -> tuple[int, int] | None:
            row = txn.query_one("SELECT etag FROM e2e_room_keys_versions WHERE user_id = %s"
                                " AND version = %s AND NOT deleted FOR UPDATE", (user_id, version))
            if row is None:
                return None
            etag = int(row[0])
            changed = False
            for key in keys:
                old = txn.query_one(
                    "SELECT first_message_index, forwarded_count, is_verified FROM e2e_room_keys"
                    " WHERE user_id = %s AND version = %s AND room_id = %s AND session_id = %s",
                    (user_id, version, key.room_id, key.session_id))
                if old is not None and not _better(key, (old[0], old[1], old[2])):
                    continue
                txn.execute(
                    "INSERT INTO e2e_room_keys (user_id, version, room_id, session_id,"
                    " first_message_index, forwarded_count, is_verified, session_data)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, version,"
                    " room_id, session_id) DO UPDATE SET first_message_index ="
                    " EXCLUDED.first_message_index, forwarded_count = EXCLUDED.forwarded_count,"
                    " is_verified = EXCLUDED.is_verified, session_data = EXCLUDED.session_data",
                    (user_id, version, key.room_id, key.session_id, key.first_message_index,
                     key.forwarded_count, key.is_verified, json.dumps(key.session_data)))
                changed = True
            if changed:
                etag += 1
                txn.execute("UPDATE e2e_room_keys_versions SET etag = %s WHERE user_id = %s"
                            " AND version = %s", (etag, user_id, version))
            count = txn.query_one("SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = %s"
                                  " AND version = %s", (user_id, version))
            return etag, int(count[0]) if count else 0

        return await self._db.run("backup_put_keys", txn_fn)

    async def get_keys(self, user_id: str, version: int, room_id: str | None,
                       session_id: str | None) -> list[RoomKey]:
        sql = ("SELECT room_id, session_id, first_message_index, forwarded_count, is_verified,"
               " session_data FROM e2e_room_keys WHERE user_id = %s AND version = %s")
        args: list[Any] = [user_id, version]
        if room_id is not None:
            sql += " AND room_id = %s"
            args.append(room_id)
        if session_id is not None:
            sql += " AND session_id = %s"
            args.append(session_id)
        rows = await self._db.run("backup_get_keys", lambda t: t.query(
            sql + " ORDER BY room_id, session_id", args))
        return [RoomKey(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    async def delete_keys(self, user_id: str, version: int, room_id: str | None,
                          session_id: str | None) -> tuple[int, int] | None:
        def txn_fn(txn: Txn) -> tuple[int, int] | None:
            row = txn.query_one("SELECT etag FROM e2e_room_keys_versions WHERE user_id = %s"
                                " AND version = %s AND NOT deleted FOR UPDATE", (user_id, version))
            if row is None:
                return None
            sql = "DELETE FROM e2e_room_keys WHERE user_id = %s AND version = %s"
            args: list[Any] = [user_id, version]
            if room_id is not None:
                sql += " AND room_id = %s"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = %s"
                args.append(session_id)
            txn.execute(sql, args)
            etag = int(row[0])
            if txn.rowcount:
                etag += 1
                txn.execute("UPDATE e2e_room_keys_versions SET etag = %s WHERE user_id = %s"
                            " AND version = %s", (etag, user_id, version))
            count = txn.query_one("SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = %s"
                                  " AND version = %s", (user_id, version))
            return etag, int(count[0]) if count else 0

        return await self._db.run("backup_delete_keys", txn_fn)
