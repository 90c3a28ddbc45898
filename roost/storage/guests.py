"""What keeping guests out of rooms that no longer allow them reads."""

from __future__ import annotations

from roost.storage.database import Database


class GuestQueries:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def guest_access_changes(self, after: int, upto: int) -> list[str]:
        """Rooms whose m.room.guest_access changed in (after, upto] of the events stream."""
        rows = await self._db.read(
            "guest_access_changes",
            "SELECT DISTINCT room_id FROM events WHERE stream_ordering > %s"
            " AND stream_ordering <= %s AND type = 'm.room.guest_access'"
            " AND state_key = '' AND NOT outlier AND rejected_reason IS NULL",
            (after, upto))
        return sorted(r[0] for r in rows)

    async def joined_guests(self, room_id: str) -> list[str]:
        """The local guest accounts joined to the room now."""
        rows = await self._db.run(
            "joined_guests",
            lambda t: t.query(
                "SELECT c.state_key FROM current_state c JOIN users u ON u.user_id = c.state_key"
                " WHERE c.room_id = %s AND c.type = 'm.room.member' AND c.membership = 'join'"
                " AND u.is_guest ORDER BY c.state_key", (room_id,)))
        return [r[0] for r in rows]
