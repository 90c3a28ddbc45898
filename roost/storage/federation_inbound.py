"""Inbound federation tables: transactions already answered, remote invites, and the
memberships other servers made through this one, to be relayed."""

from __future__ import annotations

import json
from typing import Any

from roost.storage.database import Database


class FederationInboundStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_txn_response(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        """The answer given to (origin, txn id) the first time, if it was seen."""
        row = await self._db.run(
            "get_inbound_txn",
            lambda t: t.query_one(
                "SELECT response FROM federation_inbound_txns WHERE origin = %s AND txn_id = %s",
                (origin, txn_id),
            ),
        )
        return json.loads(row[0]) if row else None

    async def set_txn_response(self, origin: str, txn_id: str, response: dict[str, Any],
                               now_ms: int) -> None:
        """Record the answer; a concurrent duplicate that finished first keeps its row."""
        await self._db.run(
            "set_inbound_txn",
            lambda t: t.execute(
                "INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (origin, txn_id, json.dumps(response), now_ms),
            ),
        )

    async def prune_txns(self, before_ms: int) -> None:
        await self._db.run(
            "prune_inbound_txns",
            lambda t: t.execute("DELETE FROM federation_inbound_txns WHERE received_ts < %s",
                                (before_ms,)),
        )

    async def add_remote_invite(self, event_id: str, room_id: str, user_id: str,
                                invite_room_state: list[Any]) -> None:
        await self._db.run(
            "add_remote_invite",
            lambda t: t.execute(
                "INSERT INTO remote_invites (event_id, room_id, user_id, invite_room_state)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (event_id, room_id, user_id, json.dumps(invite_room_state)),
            ),
        )

    async def remote_invite_state(self, room_id: str, user_id: str) -> list[Any] | None:
        """The stripped state sent with the user's latest invite to the room, if any."""
        row = await self._db.run(
            "remote_invite_state",
            lambda t: t.query_one(
                "SELECT r.invite_room_state FROM remote_invites r JOIN events e"
                " ON e.event_id = r.event_id WHERE r.room_id = %s AND r.user_id = %s"
                " ORDER BY e.stream_ordering DESC NULLS LAST LIMIT 1",
                (room_id, user_id),
            ),
        )
        return json.loads(row[0]) if row else None

    async def relay_on_behalf(self, event_id: str, origin: str) -> None:
        """Mark a membership `origin` made through us for the sender to pass on to the
        room's other servers; written before the event is stored (see 0011)."""
        await self._db.run(
            "relay_on_behalf",
            lambda t: t.execute(
                "INSERT INTO federation_relayed_events (event_id, origin) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING", (event_id, origin)),
        )

    async def forget_relay(self, event_id: str) -> None:
        """The event was not taken into the room: there is nothing to pass on."""
        await self._db.run(
            "forget_relay",
            lambda t: t.execute("DELETE FROM federation_relayed_events WHERE event_id = %s",
                                (event_id,)),
        )
