"""Device list changes (the device_lists stream) and remote users' cached devices.

A row of `device_lists_stream` says a user's devices or cross-signing keys
changed at a position; /sync and /keys/changes read the users whose rows fall
between two positions and who share a room with the reader. Remote users'
devices are cached in `device_lists_remote` only while they share a room with
a local user.
"""

from __future__ import annotations

import json
from typing import Any

from roost.storage.database import Database, Txn
from roost.storage.stream_positions import Fence, run_fenced

JsonDict = dict[str, Any]

# Users who share a joined room with %(me)s (current state), as a subquery.
_SHARING = (
    "SELECT DISTINCT o.state_key FROM current_state m JOIN current_state o"
    " ON o.room_id = m.room_id AND o.type = 'm.room.member' AND o.membership = 'join'"
    " WHERE m.type = 'm.room.member' AND m.state_key = %s AND m.membership = 'join'"
)


class DeviceListStore:
    def __init__(self, db: Database, server_name: str) -> None:
        self._db = db
        self._server_name = server_name

    async def max_stream_id(self) -> int:
        row = await self._db.run("device_lists_max", lambda t: t.query_one(
            "SELECT COALESCE(MAX(stream_id), 0) FROM device_lists_stream"))
        return int(row[0]) if row else 0

    async def add_changes(self, rows: list[tuple[int, str, str]],
                          fence: Fence | None = None) -> None:
        """Record (stream_id, user, device) rows; `fence`: the device lists stream's,
        among several writers (run_fenced)."""
        await run_fenced(self._db, "device_lists_add", fence, lambda t: t.execute_values(
            "INSERT INTO device_lists_stream (stream_id, user_id, device_id) VALUES %s", rows))

    async def local_changes(self, after: int, upto: int) -> list[tuple[int, str, str, int | None]]:
        """(stream_id, user, device, the user's previous device position) of local users'
        changes in (after, upto]; cross-signing rows (device '') are not in the chain."""
        rows = await self._db.run("device_lists_local", lambda t: t.query(
            "SELECT stream_id, user_id, device_id, prev FROM (SELECT stream_id, user_id,"
            " device_id, LAG(stream_id) OVER (PARTITION BY user_id, device_id = ''"
            " ORDER BY stream_id) AS prev FROM device_lists_stream WHERE user_id IN"
            " (SELECT user_id FROM device_lists_stream WHERE stream_id > %s"
            " AND stream_id <= %s AND user_id LIKE %s)) x"
            " WHERE stream_id > %s AND stream_id <= %s ORDER BY stream_id",
            (after, upto, f"%:{self._server_name}", after, upto)))
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def forget_user_keys(self, user_id: str) -> list[str]:
        """Delete a user's cross-signing keys and signatures; the device ids announced before."""

        def txn_fn(txn: Txn) -> list[str]:
            txn.execute("DELETE FROM e2e_cross_signing_keys WHERE user_id = %s", (user_id,))
            txn.execute("DELETE FROM e2e_signatures WHERE target_user_id = %s"
                        " OR signer_user_id = %s", (user_id, user_id))
            rows = txn.query("SELECT DISTINCT device_id FROM device_lists_stream"
                             " WHERE user_id = %s AND device_id <> '' ORDER BY device_id",
                             (user_id,))
            return [r[0] for r in rows]

        return await self._db.run("device_lists_forget_user", txn_fn)

    async def sent_position(self) -> int | None:
        """How far the device list sender has queued EDUs (None: never started)."""
        row = await self._db.run("device_lists_sent_get", lambda t: t.query_one(
            "SELECT stream_position FROM device_lists_sent_position"))
        return int(row[0]) if row else None

    async def set_sent_position(self, position: int) -> None:
        await self._db.run("device_lists_sent_set", lambda t: t.execute(
            "INSERT INTO device_lists_sent_position (stream_position) VALUES (%s)"
            " ON CONFLICT (lock) DO UPDATE SET stream_position = GREATEST("
            "device_lists_sent_position.stream_position, EXCLUDED.stream_position)",
            (position,)))

    async def latest_position(self, user_id: str) -> int:
        row = await self._db.run("device_lists_latest", lambda t: t.query_one(
            "SELECT COALESCE(MAX(stream_id), 0) FROM device_lists_stream WHERE user_id = %s"
            " AND device_id <> ''",
            (user_id,)))
        return int(row[0]) if row else 0

    async def changes_for(self, user_id: str, after: int, upto: int, after_events: int,
                          upto_events: int) -> tuple[set[str], set[str]]:
        """(changed, left) for a reader between two positions of each stream.

        changed: users sharing a room with the reader whose devices changed,
        the reader themself, and users who newly share a room (a join on
        either side). left: users who stopped sharing every room.
        """
        if upto <= after and upto_events <= after_events:
            return set(), set()  # nothing in either range: no transaction at all
        return await self._db.run("device_lists_changes", _changes_for, user_id, after, upto,
                                  after_events, upto_events)

    async def users_sharing_room(self, user_id: str) -> set[str]:
        rows = await self._db.run("device_lists_sharing", lambda t: t.query(_SHARING, (user_id,)))
        return {r[0] for r in rows}

    async def shares_room_with_local_user(self, user_id: str) -> bool:
        row = await self._db.run("device_lists_tracked", lambda t: t.query_one(
            "SELECT 1 FROM current_state m JOIN current_state o ON o.room_id = m.room_id"
            " AND o.type = 'm.room.member' AND o.membership = 'join'"
            " WHERE m.type = 'm.room.member' AND m.state_key = %s AND m.membership = 'join'"
            " AND o.state_key LIKE %s LIMIT 1", (user_id, f"%:{self._server_name}")))
        return row is not None

    async def joined_rooms(self, user_id: str) -> list[str]:
        rows = await self._db.run("device_lists_rooms", lambda t: t.query(
            "SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = %s"
            " AND membership = 'join'", (user_id,)))
        return [r[0] for r in rows]

    async def hosts_sharing(self, user_id: str) -> set[str]:
        """The servers of every user joined to a room the user is joined to."""
        users = await self.users_sharing_room(user_id)
        return {u.split(":", 1)[1] for u in users if ":" in u}

    # -- remote users' devices -------------------------------------------------------

    async def remote_devices(self, user_id: str) -> tuple[int | None, JsonDict] | None:
        """(stream_id, {"devices": {...}, "master_key": ..., "self_signing_key": ...})."""
        row = await self._db.run("remote_devices_get", lambda t: t.query_one(
            "SELECT stream_id, devices FROM device_lists_remote WHERE user_id = %s", (user_id,)))
        return None if row is None else (row[0], json.loads(row[1]))

    async def set_remote_devices(self, user_id: str, stream_id: int | None,
                                 cached: JsonDict) -> None:
        await self._db.run("remote_devices_set", lambda t: t.execute(
            "INSERT INTO device_lists_remote (user_id, stream_id, devices) VALUES (%s, %s, %s)"
            " ON CONFLICT (user_id) DO UPDATE SET stream_id = EXCLUDED.stream_id,"
            " devices = EXCLUDED.devices", (user_id, stream_id, json.dumps(cached))))

    async def tracked_users_in_rooms(self, room_ids: list[str]) -> set[str]:
        """Remote users with cached devices who were ever members of these rooms."""
        if not room_ids:
            return set()
        rows = await self._db.run("remote_devices_in_rooms", lambda t: t.query(
            "SELECT DISTINCT r.user_id FROM device_lists_remote r JOIN room_memberships m"
            " ON m.user_id = r.user_id WHERE m.room_id = ANY(%s)", (room_ids,)))
        return {r[0] for r in rows}

    async def drop_remote_devices(self, user_id: str) -> None:
        await self._db.run("remote_devices_drop", lambda t: t.execute(
            "DELETE FROM device_lists_remote WHERE user_id = %s", (user_id,)))


def _changes_for(txn: Txn, me: str, after: int, upto: int, after_events: int,
                 upto_events: int) -> tuple[set[str], set[str]]:
    # Candidates first (both reads walk a stream index over the range only); who shares
    # a room with the reader is asked only when there is someone to ask about.
    candidates: set[str] = set()
    if upto > after:
        rows = txn.query("SELECT DISTINCT user_id FROM device_lists_stream"
                         " WHERE stream_id > %s AND stream_id <= %s", (after, upto))
        candidates = {r[0] for r in rows}
    memberships: list[tuple[Any, ...]] = []
    if upto_events > after_events:
        memberships = txn.query(
            "SELECT room_id, user_id, membership FROM room_memberships"
            " WHERE stream_ordering > %s AND stream_ordering <= %s AND room_id IN"
            " (SELECT room_id FROM room_memberships WHERE user_id = %s)"
            " ORDER BY stream_ordering", (after_events, upto_events, me))
    if not candidates and not memberships:
        return set(), set()
    sharing = {r[0] for r in txn.query(_SHARING, (me,))}
    changed = {u for u in candidates if u == me or u in sharing}
    left: set[str] = set()
    mine_joined = [room for room, user, m in memberships if user == me and m == "join"]
    for _room, user, membership in memberships:
        if user == me:
            continue
        if membership == "join":
            changed.add(user)
        elif user not in sharing:
            left.add(user)
    if mine_joined:
        members = txn.query(
            "SELECT DISTINCT state_key FROM current_state WHERE type = 'm.room.member'"
            " AND membership = 'join' AND room_id = ANY(%s)", (mine_joined,))
        changed |= {r[0] for r in members if r[0] != me}
    mine_left = [room for room, user, m in memberships if user == me and m != "join"]
    if mine_left:
        members = txn.query(
            "SELECT DISTINCT user_id FROM room_memberships WHERE room_id = ANY(%s)",
            (mine_left,))
        left |= {r[0] for r in members if r[0] != me and r[0] not in sharing}
    changed = {u for u in changed if u == me or u in sharing}
    return changed, left - changed
