"""The events of a room nearest a point in time (timestamp_to_event, client and federation)."""

from __future__ import annotations

from roost.storage.database import Database


class EventTimestampStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def nearest(self, room_id: str, ts: int, forwards: bool, limit: int) -> list[str]:
        """Ids of the room's timeline events at or after `ts` (forwards) or at or before it,
        nearest first; outliers, rejected and soft-failed events are never candidates."""
        if forwards:
            where, order = "origin_server_ts >= %s", "origin_server_ts, stream_ordering"
        else:
            where, order = "origin_server_ts <= %s", \
                "origin_server_ts DESC, stream_ordering DESC"
        rows = await self._db.run(
            "events_near_timestamp",
            lambda t: t.query(
                f"SELECT event_id FROM events WHERE room_id = %s AND {where}"
                " AND stream_ordering IS NOT NULL AND NOT outlier AND NOT soft_failed"
                f" AND rejected_reason IS NULL ORDER BY {order} LIMIT %s",
                (room_id, ts, limit)))
        return [r[0] for r in rows]
