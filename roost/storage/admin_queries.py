"""The queries behind the admin API: users and rooms listed, counted and described.

Operators page through every account and room, so each listing is one
ordered, limited query with its total beside it, never a load of the whole
table. Room details read the names and settings out of the current state's
event JSON, which is fine for an operator's occasional request and keeps
the send path free of any extra bookkeeping for the admin view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roost.storage.database import Database, Txn, like_escape
from roost.storage.session_cache import SessionCache

# Column a caller may order the user list by -> the SQL expression (never user input in SQL).
USER_ORDER = {
    "name": "u.user_id",
    "displayname": "p.displayname",
    "admin": "u.is_admin",
    "deactivated": "u.deactivated",
    "creation_ts": "u.created_ts",
}
ROOM_ORDER = {
    "name": "name",
    "canonical_alias": "canonical_alias",
    "joined_members": "joined_members",
    "joined_local_members": "joined_local_members",
    "version": "version",
    "creator": "creator",
    "encryption": "encryption",
    "public": "public",
    "join_rules": "join_rules",
    "guest_access": "guest_access",
    "history_visibility": "history_visibility",
    "state_events": "state_events",
}


@dataclass(frozen=True)
class UserRow:
    user_id: str
    is_admin: bool
    deactivated: bool
    created_ts: int
    displayname: str | None
    avatar_url: str | None


@dataclass(frozen=True)
class UserFilter:
    name: str | None = None  # substring of the user id or display name
    user_id: str | None = None  # substring of the user id only
    deactivated: bool = False  # include deactivated accounts
    admins: bool | None = None  # only admins (True), only non-admins (False), or both


# Summary column -> (state event type, content key), read from the room's current state.
_STATE_FIELDS = {
    "name": ("m.room.name", "name"),
    "topic": ("m.room.topic", "topic"),
    "avatar": ("m.room.avatar", "url"),
    "canonical_alias": ("m.room.canonical_alias", "alias"),
    "encryption": ("m.room.encryption", "algorithm"),
    "join_rules": ("m.room.join_rules", "join_rule"),
    "guest_access": ("m.room.guest_access", "guest_access"),
    "history_visibility": ("m.room.history_visibility", "history_visibility"),
    "room_type": ("m.room.create", "type"),
    "federatable": ("m.room.create", "m.federate"),
}


def _room_summary_sql() -> str:
    """One pass over each room's current state: a pivot of the fields above, plus counts.
    The types and keys are constants of this module, never input."""
    pivots = ",\n".join(
        f"max(CASE WHEN c.type = '{etype}' THEN (e.pdu::jsonb)->'content'->>'{key}' END)"
        f" AS {column}" for column, (etype, key) in _STATE_FIELDS.items())
    return f"""
    SELECT r.room_id, r.room_version AS version, r.creator, r.is_public AS public,
      {", ".join(f"s.{c}" for c in _STATE_FIELDS)},
      m.joined_members, m.joined_local_members, m.state_events
    FROM rooms r
    LEFT JOIN LATERAL (
      SELECT {pivots}
      FROM current_state c JOIN events e USING (event_id)
      WHERE c.room_id = r.room_id AND c.state_key = ''
    ) s ON TRUE
    LEFT JOIN LATERAL (
      SELECT count(*) FILTER (WHERE c.type = 'm.room.member' AND c.membership = 'join')
               AS joined_members,
             count(*) FILTER (WHERE c.type = 'm.room.member' AND c.membership = 'join'
                              AND c.state_key LIKE %(local)s) AS joined_local_members,
             count(*) AS state_events
      FROM current_state c WHERE c.room_id = r.room_id
    ) m ON TRUE
"""


_ROOM_SUMMARY = _room_summary_sql()
_ROOM_COLUMNS = ("room_id", "version", "creator", "public", *_STATE_FIELDS,
                 "joined_members", "joined_local_members", "state_events")


class AdminQueries:
    def __init__(self, db: Database, server_name: str) -> None:
        self._db = db
        self._local_suffix = "%:" + like_escape(server_name)

    async def list_users(self, flt: UserFilter, order_by: str, backwards: bool,
                         offset: int, limit: int) -> tuple[list[UserRow], int]:
        """One page of users and how many match in all."""
        where, args = ["TRUE"], []
        if flt.name:
            where.append("(u.user_id ILIKE %s OR p.displayname ILIKE %s)")
            pattern = f"%{like_escape(flt.name)}%"
            args += [pattern, pattern]
        if flt.user_id:
            where.append("u.user_id ILIKE %s")
            args.append(f"%{like_escape(flt.user_id)}%")
        if not flt.deactivated:
            where.append("NOT u.deactivated")
        if flt.admins is not None:
            where.append("u.is_admin = %s")
            args.append(flt.admins)
        direction = "DESC" if backwards else "ASC"
        sql_where = " AND ".join(where)

        def txn_fn(txn: Txn) -> tuple[list[UserRow], int]:
            base = f"FROM users u LEFT JOIN profiles p USING (user_id) WHERE {sql_where}"
            total = txn.query_one(f"SELECT count(*) {base}", tuple(args))
            rows = txn.query(
                "SELECT u.user_id, u.is_admin, u.deactivated, u.created_ts, p.displayname,"
                f" p.avatar_url {base} ORDER BY {USER_ORDER[order_by]} {direction} NULLS LAST,"
                " u.user_id ASC LIMIT %s OFFSET %s",
                (*args, limit, offset),
            )
            return [UserRow(*r) for r in rows], int(total[0]) if total else 0

        return await self._db.run("admin_list_users", txn_fn)

    async def get_user(self, user_id: str) -> UserRow | None:
        row = await self._db.run("admin_get_user", lambda txn: txn.query_one(
            "SELECT u.user_id, u.is_admin, u.deactivated, u.created_ts, p.displayname,"
            " p.avatar_url FROM users u LEFT JOIN profiles p USING (user_id)"
            " WHERE u.user_id = %s", (user_id,)))
        return UserRow(*row) if row else None

    async def set_admin(self, user_id: str, admin: bool) -> None:
        await self._db.run("admin_set_admin", lambda txn: txn.execute(
            "UPDATE users SET is_admin = %s WHERE user_id = %s", (admin, user_id)))
        # Live sessions carry the admin flag (storage/session_cache.py): read it again.
        await SessionCache.of(self._db).revoked([user_id])

    async def joined_rooms(self, user_id: str) -> list[str]:
        rows = await self._db.run("admin_joined_rooms", lambda txn: txn.query(
            "SELECT room_id FROM current_state WHERE type = 'm.room.member'"
            " AND state_key = %s AND membership = 'join' ORDER BY room_id", (user_id,)))
        return [r[0] for r in rows]

    async def list_rooms(self, search: str | None, order_by: str, backwards: bool,
                         offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of rooms (with their summaries) and how many match in all."""
        args: dict[str, Any] = {"local": self._local_suffix, "limit": limit, "offset": offset}
        where = "TRUE"
        if search:
            args["search"] = f"%{like_escape(search)}%"
            where = ("(s.name ILIKE %(search)s OR s.canonical_alias ILIKE %(search)s"
                     " OR s.room_id ILIKE %(search)s)")
        direction = "DESC" if backwards else "ASC"
        # Rooms sort by size unless asked otherwise, as operators look for big rooms first.
        order = ROOM_ORDER[order_by]

        def txn_fn(txn: Txn) -> tuple[list[dict[str, Any]], int]:
            summary = f"WITH s AS ({_ROOM_SUMMARY}) SELECT * FROM s WHERE {where}"
            total = txn.query_one(f"SELECT count(*) FROM ({summary}) t", args)
            rows = txn.query(
                f"{summary} ORDER BY {order} {direction} NULLS LAST, room_id ASC"
                " LIMIT %(limit)s OFFSET %(offset)s", args)
            return [dict(zip(_ROOM_COLUMNS, r, strict=True)) for r in rows], (
                int(total[0]) if total else 0)

        return await self._db.run("admin_list_rooms", txn_fn)

    async def room(self, room_id: str) -> dict[str, Any] | None:
        row = await self._db.run("admin_room", lambda txn: txn.query_one(
            f"{_ROOM_SUMMARY} WHERE r.room_id = %(room)s",
            {"local": self._local_suffix, "room": room_id}))
        return dict(zip(_ROOM_COLUMNS, row, strict=True)) if row else None

    async def joined_members(self, room_id: str) -> list[str]:
        rows = await self._db.run("admin_room_members", lambda txn: txn.query(
            "SELECT state_key FROM current_state WHERE room_id = %s"
            " AND type = 'm.room.member' AND membership = 'join' ORDER BY state_key",
            (room_id,)))
        return [r[0] for r in rows]

    async def local_members(self, room_id: str) -> list[str]:
        """Local users joined or invited (the ones a room shutdown must move out)."""
        rows = await self._db.run("admin_room_local_members", lambda txn: txn.query(
            "SELECT state_key FROM current_state WHERE room_id = %s"
            " AND type = 'm.room.member' AND membership IN ('join', 'invite')"
            " AND state_key LIKE %s ORDER BY state_key", (room_id, self._local_suffix)))
        return [r[0] for r in rows]

    async def block_room(self, room_id: str, blocked_by: str, now_ms: int) -> None:
        await self._db.run("admin_block_room", lambda txn: txn.execute(
            "INSERT INTO blocked_rooms (room_id, blocked_by, blocked_ts) VALUES (%s, %s, %s)"
            " ON CONFLICT (room_id) DO NOTHING", (room_id, blocked_by, now_ms)))

    async def unblock_room(self, room_id: str) -> None:
        await self._db.run("admin_unblock_room", lambda txn: txn.execute(
            "DELETE FROM blocked_rooms WHERE room_id = %s", (room_id,)))

    async def blocked_by(self, room_id: str) -> str | None:
        row = await self._db.run("admin_blocked", lambda txn: txn.query_one(
            "SELECT blocked_by FROM blocked_rooms WHERE room_id = %s", (room_id,)))
        return row[0] if row else None

    async def delete_local_aliases(self, room_id: str) -> list[str]:
        def txn_fn(txn: Txn) -> list[str]:
            rows = txn.query("DELETE FROM room_aliases WHERE room_id = %s RETURNING alias",
                             (room_id,))
            txn.execute("UPDATE rooms SET is_public = FALSE WHERE room_id = %s", (room_id,))
            return sorted(r[0] for r in rows)

        return await self._db.run("admin_delete_aliases", txn_fn)

