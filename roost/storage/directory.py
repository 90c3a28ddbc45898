"""Room aliases, the public room directory, and forgotten rooms."""

from __future__ import annotations

from dataclasses import dataclass

from roost.storage.database import Database, Txn


@dataclass(frozen=True)
class PublicRoom:
    room_id: str
    joined_members: int
    state: dict[tuple[str, str], str]  # the directory-relevant current state: key -> event id


class DirectoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_alias(self, alias: str, room_id: str, creator: str) -> bool:
        """False if the alias is taken."""

        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "INSERT INTO room_aliases (alias, room_id, creator) VALUES (%s, %s, %s)"
                " ON CONFLICT (alias) DO NOTHING",
                (alias, room_id, creator),
            )
            return txn.rowcount == 1

        return await self._db.run("create_alias", txn_fn)

    async def get_alias(self, alias: str) -> tuple[str, str] | None:
        """(room_id, creator) of an alias."""
        row = await self._db.run(
            "get_alias",
            lambda t: t.query_one("SELECT room_id, creator FROM room_aliases WHERE alias = %s",
                                  (alias,)),
        )
        return (row[0], row[1]) if row else None

    async def delete_alias(self, alias: str) -> None:
        await self._db.run(
            "delete_alias", lambda t: t.execute("DELETE FROM room_aliases WHERE alias = %s", (alias,))
        )

    async def aliases_of(self, room_id: str) -> list[str]:
        rows = await self._db.run(
            "aliases_of",
            lambda t: t.query("SELECT alias FROM room_aliases WHERE room_id = %s ORDER BY alias",
                              (room_id,)),
        )
        return [r[0] for r in rows]

    async def set_public(self, room_id: str, public: bool) -> None:
        await self._db.run(
            "set_public",
            lambda t: t.execute("UPDATE rooms SET is_public = %s WHERE room_id = %s",
                                (public, room_id)),
        )

    async def is_public(self, room_id: str) -> bool | None:
        row = await self._db.run(
            "is_public",
            lambda t: t.query_one("SELECT is_public FROM rooms WHERE room_id = %s", (room_id,)),
        )
        return bool(row[0]) if row else None

    async def public_rooms_page(self, offset: int, limit: int,
                                term: str | None) -> tuple[list[PublicRoom], int]:
        """One page of the listed rooms (largest first) whose name, topic or canonical
        alias contains `term` (any case), and how many match in all: the database cuts
        the page, so a call reads only the rooms it answers with."""
        return await self._db.run("public_rooms_page", _public_rooms_page, offset, limit, term)

    async def is_blocked(self, room_id: str) -> bool:
        """Whether an admin blocked the room (local users may not join or be invited)."""
        row = await self._db.run("is_blocked", lambda txn: txn.query_one(
            "SELECT 1 FROM blocked_rooms WHERE room_id = %s", (room_id,)))
        return row is not None

    async def forget(self, user_id: str, room_id: str) -> None:
        await self._db.run(
            "forget_room",
            lambda t: t.execute(
                "INSERT INTO forgotten_rooms (user_id, room_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (user_id, room_id),
            ),
        )

    async def is_forgotten(self, user_id: str, room_id: str) -> bool:
        row = await self._db.run(
            "is_forgotten",
            lambda t: t.query_one(
                "SELECT 1 FROM forgotten_rooms WHERE user_id = %s AND room_id = %s",
                (user_id, room_id)),
        )
        return row is not None

    async def unforget(self, user_id: str, room_id: str) -> None:
        await self._db.run(
            "unforget_room",
            lambda t: t.execute(
                "DELETE FROM forgotten_rooms WHERE user_id = %s AND room_id = %s", (user_id, room_id)
            ),
        )


_DIRECTORY_TYPES = ["m.room.name", "m.room.topic", "m.room.canonical_alias", "m.room.avatar",
                    "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
                    "m.room.create"]


def _public_rooms_page(txn: Txn, offset: int, limit: int,
                       term: str | None) -> tuple[list[PublicRoom], int]:
    search = ""
    args: list[object] = []
    if term:
        search = (
            " AND EXISTS (SELECT 1 FROM current_state c JOIN events e ON e.event_id = c.event_id"
            "  WHERE c.room_id = r.room_id AND c.state_key = ''"
            "  AND c.type IN ('m.room.name', 'm.room.topic', 'm.room.canonical_alias')"
            "  AND strpos(lower(COALESCE(e.pdu::jsonb -> 'content' ->> 'name', '')"
            "   || ' ' || COALESCE(e.pdu::jsonb -> 'content' ->> 'topic', '')"
            "   || ' ' || COALESCE(e.pdu::jsonb -> 'content' ->> 'alias', '')), lower(%s)) > 0)")
        args.append(term)
    rows = txn.query(
        "SELECT r.room_id, (SELECT COUNT(*) FROM current_state m WHERE m.room_id = r.room_id"
        "   AND m.type = 'm.room.member' AND m.membership = 'join') AS members,"
        " COUNT(*) OVER ()"
        f" FROM rooms r WHERE r.is_public{search}"
        " ORDER BY members DESC, r.room_id LIMIT %s OFFSET %s",
        (*args, limit, offset),
    )
    total = int(rows[0][2]) if rows else (
        0 if offset == 0 else _count_public(txn, search, args))
    ids = [r[0] for r in rows]
    state: dict[str, dict[tuple[str, str], str]] = {room_id: {} for room_id in ids}
    if ids:
        for room_id, event_type, state_key, event_id in txn.query(
            "SELECT room_id, type, state_key, event_id FROM current_state"
            " WHERE room_id = ANY(%s) AND type = ANY(%s) AND state_key = ''",
            (ids, _DIRECTORY_TYPES),
        ):
            state[room_id][(event_type, state_key)] = event_id
    return [PublicRoom(r[0], int(r[1]), state[r[0]]) for r in rows], total


def _count_public(txn: Txn, search: str, args: list[object]) -> int:
    row = txn.query_one(f"SELECT COUNT(*) FROM rooms r WHERE r.is_public{search}", tuple(args))
    return int(row[0]) if row else 0

