"""Devices and the login sessions that belong to them.

A session is one login: its id is inside every access token issued for it,
and its row holds the current refresh token (hashed) and how many times it
has been rotated. Deleting a device deletes its sessions (ON DELETE CASCADE),
which is what revokes the device's tokens. Live sessions are kept in memory
(storage/session_cache.py): every method here that ends sessions drops them
there, in every process, before it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from roost.storage.database import Database, Txn
from roost.storage.session_cache import SessionCache, SessionInfo


@dataclass(frozen=True)
class DeviceRecord:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    user_id: str
    device_id: str
    created_ts: int
    refresh_generation: int | None
    refresh_secret_hash: str | None
    refresh_expires_ts: int | None


_SESSION_COLUMNS = (
    "session_id, user_id, device_id, created_ts, refresh_generation,"
    " refresh_secret_hash, refresh_expires_ts"
)


@dataclass(frozen=True)
class NewSession:
    session_id: str
    user_id: str
    device_id: str
    created_ts: int
    refresh_secret_hash: str | None = None
    refresh_expires_ts: int | None = None


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.sessions = SessionCache.of(db)
        # (user, device) -> (last_seen_ts, last_seen_ip) not yet written (see `seen`).
        self._seen: dict[tuple[str, str], tuple[int, str | None]] = {}
        self._session_waiters: dict[str, list[defer.Deferred[Any]]] = {}
        self._session_query_running = False
        self._refreshing: set[str] = set()  # held sessions being read again (`_refresh`)
        self.sessions.refresh = self._refresh
        # Called with (user_id, device ids) after devices are deleted: their end-to-end
        # keys went with them (ON DELETE CASCADE) and the change must be announced.
        self.on_devices_deleted: list[Callable[[str, list[str]], Any]] = []
        # Called with (user_id, device ids) after a device is renamed: its display name is
        # part of what other users' clients see of it (device list updates).
        self.on_devices_renamed: list[Callable[[str, list[str]], Any]] = []

    def _deleted(self, user_id: str, device_ids: list[str]) -> None:
        if device_ids:
            for listener in self.on_devices_deleted:
                listener(user_id, device_ids)

    async def start_session(
        self, session: NewSession, display_name: str | None, replace_device_sessions: bool
    ) -> list[str]:
        """Create the device if new and the session; return the session ids it replaced.

        Logging in again with an existing device id ends that device's
        earlier sessions, as the spec asks.
        """

        def txn_fn(txn: Txn) -> list[str]:
            txn.execute(
                "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, device_id) DO UPDATE"
                " SET display_name = COALESCE(EXCLUDED.display_name, devices.display_name)",
                (session.user_id, session.device_id, display_name, session.created_ts),
            )
            replaced: list[str] = []
            if replace_device_sessions:
                rows = txn.query(
                    "DELETE FROM sessions WHERE user_id = %s AND device_id = %s RETURNING session_id",
                    (session.user_id, session.device_id),
                )
                replaced = [r[0] for r in rows]
            txn.execute(
                f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    session.session_id, session.user_id, session.device_id, session.created_ts,
                    0 if session.refresh_secret_hash else None,
                    session.refresh_secret_hash, session.refresh_expires_ts,
                ),
            )
            return replaced

        replaced = await self._db.run("start_session", txn_fn)
        if replaced:
            await self.sessions.revoked([session.user_id])
        return replaced

    async def get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._db.run(
            "get_session",
            lambda txn: txn.query_one(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = %s", (session_id,)
            ),
        )
        return SessionRecord(*row) if row else None

    def cached_session(self, session_id: str) -> SessionInfo | None:
        """The live session from memory, if this process may trust what it holds."""
        return self.sessions.get(session_id)

    async def session_auth(self, session_id: str) -> SessionInfo | None:
        """(user_id, device_id, is_admin) of a live session, on every authenticated
        request: from memory when held (a revocation in any process drops it before
        answering: storage/session_cache.py), else read and kept. The admin flag is
        the account's, not what a token says.

        Concurrent reads share one query: a request that arrives while a query is
        running waits for the next one, which starts after it arrived, so every
        request is still checked against the database as it was when it came in."""
        cached = self.sessions.get(session_id)
        if cached is not None:
            return cached
        waiter: defer.Deferred[SessionInfo | None] = defer.Deferred()
        self._session_waiters.setdefault(session_id, []).append(waiter)
        if not self._session_query_running:
            self._next_session_query()
        return await waiter

    def _refresh(self, session_id: str) -> None:
        """The cache serves `session_id` past its refresh age: read it again with the next
        batch, no request waiting on it."""
        if session_id in self._refreshing:
            return
        self._refreshing.add(session_id)
        self._session_waiters.setdefault(session_id, [])
        if not self._session_query_running:
            self._next_session_query()

    def _next_session_query(self) -> None:
        batch, self._session_waiters = self._session_waiters, {}
        self._session_query_running = True
        defer.ensureDeferred(self._session_query(batch))

    async def _session_query(self, batch: dict[str, list[Any]]) -> None:
        found: dict[str, SessionInfo] = {}
        failure: Failure | None = None
        ticket = self.sessions.begin_load()
        try:
            rows = await self._db.read(
                "session_auth",
                "SELECT s.session_id, s.user_id, s.device_id, u.is_admin FROM sessions s"
                " JOIN users u ON u.user_id = s.user_id WHERE s.session_id = ANY(%s)",
                (list(batch),))
            found = {r[0]: (r[1], r[2], bool(r[3])) for r in rows}
            for session_id, info in found.items():
                self.sessions.put(session_id, info, ticket)
            for session_id in batch.keys() - found.keys():
                self.sessions.forget(session_id)  # gone, and nobody announced it
        except Exception:
            failure = Failure()
        finally:
            self._refreshing.difference_update(batch)
            self._session_query_running = False
            if self._session_waiters:
                self._next_session_query()
        for session_id, waiters in batch.items():
            for waiter in waiters:
                if waiter.called:  # a request cancelled meanwhile
                    continue
                if failure is not None:
                    waiter.errback(failure)
                else:
                    waiter.callback(found.get(session_id))

    async def all_sessions(self) -> list[tuple[str, str, str]]:
        """(session_id, user_id, device_id) of every live session, to warm the token checker."""
        rows = await self._db.run(
            "all_sessions",
            lambda txn: txn.query("SELECT session_id, user_id, device_id FROM sessions"),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def rotate_refresh(
        self, session_id: str, expected_generation: int, secret_hash: str, expires_ts: int
    ) -> bool:
        """Move the session to the next refresh generation if it is still at the expected one.

        The compare-and-set makes two concurrent uses of one refresh token
        resolve to one winner; the loser is treated as a reuse.
        """

        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE sessions SET refresh_generation = refresh_generation + 1,"
                " refresh_secret_hash = %s, refresh_expires_ts = %s"
                " WHERE session_id = %s AND refresh_generation = %s",
                (secret_hash, expires_ts, session_id, expected_generation),
            )
            return txn.rowcount == 1

        return await self._db.run("rotate_refresh", txn_fn)

    async def end_session(self, session_id: str, delete_device: bool) -> None:
        """End one session; with delete_device, its whole device (and its other sessions)."""

        def txn_fn(txn: Txn) -> None:
            row = txn.query_one(
                "DELETE FROM sessions WHERE session_id = %s RETURNING user_id, device_id",
                (session_id,),
            )
            if row and delete_device:
                txn.execute("DELETE FROM devices WHERE user_id = %s AND device_id = %s", row)
                if txn.rowcount:
                    txn.call_after(lambda: self._deleted(row[0], [row[1]]))
            return row[0] if row else None

        user_id = await self._db.run("end_session", txn_fn)
        if user_id is not None:
            await self.sessions.revoked([user_id])

    async def delete_devices(self, user_id: str, device_ids: list[str] | None) -> list[str]:
        """Delete the devices (all of the user's with None); return the session ids ended."""

        def txn_fn(txn: Txn) -> list[str]:
            if device_ids is None:
                rows = txn.query("SELECT session_id FROM sessions WHERE user_id = %s", (user_id,))
                gone = txn.query("DELETE FROM devices WHERE user_id = %s RETURNING device_id",
                                 (user_id,))
            else:
                rows = txn.query(
                    "SELECT session_id FROM sessions WHERE user_id = %s AND device_id = ANY(%s)",
                    (user_id, device_ids),
                )
                gone = txn.query(
                    "DELETE FROM devices WHERE user_id = %s AND device_id = ANY(%s)"
                    " RETURNING device_id",
                    (user_id, device_ids),
                )
            txn.call_after(lambda: self._deleted(user_id, [g[0] for g in gone]))
            return [r[0] for r in rows]

        ended = await self._db.run("delete_devices", txn_fn)
        await self.sessions.revoked([user_id])
        return ended

    async def end_other_sessions(self, user_id: str, keep_session_id: str | None) -> list[str]:
        """Log out every device but the one holding `keep_session_id`; return ended sessions."""

        def txn_fn(txn: Txn) -> list[str]:
            keep = txn.query_one(
                "SELECT device_id FROM sessions WHERE session_id = %s", (keep_session_id,)
            )
            keep_device = keep[0] if keep else None
            rows = txn.query(
                "SELECT session_id FROM sessions WHERE user_id = %s"
                " AND device_id IS DISTINCT FROM %s",
                (user_id, keep_device),
            )
            gone = txn.query(
                "DELETE FROM devices WHERE user_id = %s AND device_id IS DISTINCT FROM %s"
                " RETURNING device_id",
                (user_id, keep_device),
            )
            txn.call_after(lambda: self._deleted(user_id, [g[0] for g in gone]))
            return [r[0] for r in rows]

        ended = await self._db.run("end_other_sessions", txn_fn)
        await self.sessions.revoked([user_id])
        return ended

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        rows = await self._db.run(
            "list_devices",
            lambda txn: txn.query(
                "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip"
                " FROM devices WHERE user_id = %s ORDER BY device_id",
                (user_id,),
            ),
        )
        return [self._with_seen(DeviceRecord(*r)) for r in rows]

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        row = await self._db.run(
            "get_device",
            lambda txn: txn.query_one(
                "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip"
                " FROM devices WHERE user_id = %s AND device_id = %s",
                (user_id, device_id),
            ),
        )
        return self._with_seen(DeviceRecord(*row)) if row else None

    # -- last seen ----------------------------------------------------------------

    def seen(self, user_id: str, device_id: str, ts: int, ip: str | None) -> None:
        """A request from the device, in memory only: authenticated requests are the most
        frequent thing a server does, so they cost no write each; `flush_seen` writes what
        gathered in one statement. This process's reads show it at once."""
        self._seen[(user_id, device_id)] = (ts, ip)

    async def flush_seen(self) -> None:
        """Write the last-seen times and addresses gathered since the last flush. A time
        never goes back (another process may have written a later one)."""
        batch, self._seen = self._seen, {}
        if not batch:
            return
        rows = [(u, d, ts, ip) for (u, d), (ts, ip) in batch.items()]
        try:
            await self._db.run("flush_last_seen", lambda txn: txn.execute_values(
                "UPDATE devices AS d SET last_seen_ts = v.ts, last_seen_ip = v.ip"
                " FROM (VALUES %s) AS v (user_id, device_id, ts, ip)"
                " WHERE d.user_id = v.user_id AND d.device_id = v.device_id"
                " AND (d.last_seen_ts IS NULL OR d.last_seen_ts <= v.ts)", rows))
        except BaseException:
            for key, value in batch.items():  # the next flush tries again
                if key not in self._seen:
                    self._seen[key] = value
            raise

    def _with_seen(self, record: DeviceRecord) -> DeviceRecord:
        pending = self._seen.get((record.user_id, record.device_id))
        if pending is None or (record.last_seen_ts is not None and record.last_seen_ts > pending[0]):
            return record
        return replace(record, last_seen_ts=pending[0], last_seen_ip=pending[1])

    async def set_display_name(self, user_id: str, device_id: str, name: str | None) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE devices SET display_name = %s WHERE user_id = %s AND device_id = %s"
                " AND display_name IS DISTINCT FROM %s",
                (name, user_id, device_id, name),
            )
            if txn.rowcount == 1:
                txn.call_after(lambda: [f(user_id, [device_id]) for f in self.on_devices_renamed])
                return True
            return txn.query_one("SELECT 1 FROM devices WHERE user_id = %s AND device_id = %s",
                                 (user_id, device_id)) is not None

        return await self._db.run("set_device_display_name", txn_fn)
