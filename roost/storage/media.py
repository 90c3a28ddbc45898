"""The media repository's metadata (migration 0014): media rows and their thumbnails.

The bytes are not here: roost/media/store.py keeps them in files. Every write
is one statement or a transaction that is safe to run again (inserts that
meet an existing row do nothing or update it to the same values).
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.storage.database import Database, Txn

_COLUMNS = ("server_name, media_id, is_local, user_id, media_type, upload_name, media_length,"
            " created_ts, unused_expires_ts, uploaded_ts, last_access_ts, unauthenticated,"
            " quarantined_by")


@dataclass(frozen=True)
class MediaRow:
    server_name: str
    media_id: str
    is_local: bool
    user_id: str | None
    media_type: str | None
    upload_name: str | None
    media_length: int | None
    created_ts: int
    unused_expires_ts: int | None
    uploaded_ts: int | None
    last_access_ts: int
    unauthenticated: bool
    quarantined_by: str | None

    @property
    def uploaded(self) -> bool:
        return self.uploaded_ts is not None


@dataclass(frozen=True)
class ThumbnailRow:
    width: int
    height: int
    method: str
    animated: bool
    media_type: str
    media_length: int


class MediaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, server_name: str, media_id: str) -> MediaRow | None:
        row = await self._db.run("get_media", lambda t: t.query_one(
            f"SELECT {_COLUMNS} FROM media WHERE server_name = %s AND media_id = %s",
            (server_name, media_id)))
        return MediaRow(*row) if row else None

    async def create_pending(self, server_name: str, media_id: str, user_id: str, now_ms: int,
                             expires_ms: int, max_pending: int, unauthenticated: bool) -> bool:
        """Reserve an id for a later upload; False when the user has `max_pending` already.

        Expired reservations of the user are dropped first, in the same transaction.
        """
        def txn(t: Txn) -> bool:
            t.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (user_id,))
            t.execute("DELETE FROM media WHERE user_id = %s AND uploaded_ts IS NULL"
                      " AND unused_expires_ts <= %s", (user_id, now_ms))
            row = t.query_one("SELECT count(*) FROM media WHERE user_id = %s"
                              " AND uploaded_ts IS NULL AND unused_expires_ts > %s",
                              (user_id, now_ms))
            if row is not None and row[0] >= max_pending:
                return False
            t.execute("INSERT INTO media (server_name, media_id, is_local, user_id, created_ts,"
                      " unused_expires_ts, last_access_ts, unauthenticated)"
                      " VALUES (%s, %s, TRUE, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                      (server_name, media_id, user_id, now_ms, expires_ms, now_ms,
                       unauthenticated))
            return True

        return await self._db.run("create_pending_media", txn)

    async def record_local(self, server_name: str, media_id: str, user_id: str, media_type: str,
                           upload_name: str | None, length: int, now_ms: int,
                           unauthenticated: bool) -> None:
        """A finished upload in one step (POST /upload)."""
        await self._db.run("record_local_media", lambda t: t.execute(
            "INSERT INTO media (server_name, media_id, is_local, user_id, media_type, upload_name,"
            " media_length, created_ts, uploaded_ts, last_access_ts, unauthenticated)"
            " VALUES (%s, %s, TRUE, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (server_name, media_id) DO NOTHING",
            (server_name, media_id, user_id, media_type, upload_name, length, now_ms, now_ms,
             now_ms, unauthenticated)))

    async def complete_pending(self, server_name: str, media_id: str, media_type: str,
                               upload_name: str | None, length: int, now_ms: int) -> bool:
        """Fill a reserved id; False if it was filled meanwhile (or has expired)."""
        def txn(t: Txn) -> bool:
            t.execute("UPDATE media SET media_type = %s, upload_name = %s, media_length = %s,"
                      " uploaded_ts = %s, unused_expires_ts = NULL, last_access_ts = %s"
                      " WHERE server_name = %s AND media_id = %s AND uploaded_ts IS NULL",
                      (media_type, upload_name, length, now_ms, now_ms, server_name, media_id))
            return t.rowcount == 1

        return await self._db.run("complete_pending_media", txn)

    async def record_remote(self, server_name: str, media_id: str, media_type: str,
                            upload_name: str | None, length: int, now_ms: int,
                            unauthenticated: bool) -> None:
        """A remote file now cached here."""
        await self._db.run("record_remote_media", lambda t: t.execute(
            "INSERT INTO media (server_name, media_id, is_local, media_type, upload_name,"
            " media_length, created_ts, uploaded_ts, last_access_ts, unauthenticated)"
            " VALUES (%s, %s, FALSE, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (server_name, media_id) DO UPDATE SET media_type = EXCLUDED.media_type,"
            " upload_name = EXCLUDED.upload_name, media_length = EXCLUDED.media_length,"
            " uploaded_ts = EXCLUDED.uploaded_ts, last_access_ts = EXCLUDED.last_access_ts",
            (server_name, media_id, media_type, upload_name, length, now_ms, now_ms, now_ms,
             unauthenticated)))

    async def ensure_remote(self, server_name: str, media_id: str, now_ms: int,
                            unauthenticated: bool) -> None:
        """A row for remote media whose thumbnails are cached before (or without) the
        file itself: it carries their cache accounting and eviction."""
        await self._db.run("ensure_remote_media", lambda t: t.execute(
            "INSERT INTO media (server_name, media_id, is_local, created_ts, last_access_ts,"
            " unauthenticated) VALUES (%s, %s, FALSE, %s, %s, %s) ON CONFLICT DO NOTHING",
            (server_name, media_id, now_ms, now_ms, unauthenticated)))

    async def touch(self, server_name: str, media_id: str, now_ms: int) -> None:
        await self._db.run("touch_media", lambda t: t.execute(
            "UPDATE media SET last_access_ts = %s WHERE server_name = %s AND media_id = %s",
            (now_ms, server_name, media_id)))

    async def thumbnails(self, server_name: str, media_id: str) -> list[ThumbnailRow]:
        rows = await self._db.run("get_thumbnails", lambda t: t.query(
            "SELECT width, height, method, animated, media_type, media_length"
            " FROM media_thumbnails WHERE server_name = %s AND media_id = %s",
            (server_name, media_id)))
        return [ThumbnailRow(*r) for r in rows]

    async def record_thumbnail(self, server_name: str, media_id: str, thumb: ThumbnailRow) -> None:
        await self._db.run("record_thumbnail", lambda t: t.execute(
            "INSERT INTO media_thumbnails (server_name, media_id, width, height, method, animated,"
            " media_type, media_length) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (server_name, media_id, thumb.width, thumb.height, thumb.method, thumb.animated,
             thumb.media_type, thumb.media_length)))

    async def set_quarantined(self, server_name: str, media_id: str, by: str | None) -> bool:
        """Quarantine (by an admin's user id) or release (None); False for unknown media."""
        def txn(t: Txn) -> bool:
            t.execute("UPDATE media SET quarantined_by = %s WHERE server_name = %s"
                      " AND media_id = %s", (by, server_name, media_id))
            return t.rowcount == 1

        return await self._db.run("quarantine_media", txn)

    async def delete(self, server_name: str, media_id: str) -> bool:
        """Forget the media and its thumbnails (the files go separately); False if unknown."""
        def txn(t: Txn) -> bool:
            t.execute("DELETE FROM media WHERE server_name = %s AND media_id = %s",
                      (server_name, media_id))
            return t.rowcount == 1

        return await self._db.run("delete_media", txn)

    async def remote_cache_bytes(self) -> int:
        """The bytes of cached remote media, their thumbnails included."""
        row = await self._db.run("remote_cache_bytes", lambda t: t.query_one(
            "SELECT (SELECT coalesce(sum(media_length), 0) FROM media WHERE NOT is_local)"
            " + (SELECT coalesce(sum(t.media_length), 0) FROM media_thumbnails t"
            "    JOIN media m USING (server_name, media_id) WHERE NOT m.is_local)"))
        return int(row[0]) if row else 0

    async def least_recent_remote(self, limit: int) -> list[tuple[str, str, int]]:
        """(server, media id, bytes with thumbnails) of the remote media used longest ago."""
        rows = await self._db.run("least_recent_remote", lambda t: t.query(
            "SELECT m.server_name, m.media_id, coalesce(m.media_length, 0)"
            " + coalesce((SELECT sum(t.media_length) FROM media_thumbnails t"
            "   WHERE t.server_name = m.server_name AND t.media_id = m.media_id), 0)"
            " FROM media m WHERE NOT m.is_local ORDER BY m.last_access_ts LIMIT %s", (limit,)))
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def expired_pending(self, now_ms: int, limit: int = 500) -> list[tuple[str, str]]:
        rows = await self._db.run("expired_pending_media", lambda t: t.query(
            "DELETE FROM media WHERE ctid IN (SELECT ctid FROM media WHERE uploaded_ts IS NULL"
            " AND unused_expires_ts <= %s LIMIT %s) RETURNING server_name, media_id",
            (now_ms, limit)))
        return [(r[0], r[1]) for r in rows]
