"""Closing a gap in a room's graph: an event arrives whose prev events this server lacks.

The receiving server asks the sender for the missing events
(`/get_missing_events`, up to its limit), and where a gap remains beyond that,
takes the state before the earliest event it got (`/state_ids`, then `/event`
for the state events it lacks): the room's state after the gap is right even
though the events in the gap never reached its timeline.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.federation.ingest import MISSING_EVENTS_LIMIT
from tests.federation.test_served import q
from tests.federation.two_servers import V3, FedNode, eventually, room_events, start_pair


async def _stored(node: FedNode, event_id: str) -> str | None:
    """How `node` holds the event: in its timeline, as an outlier, or (None) not at all."""
    assert node.server is not None
    row = await node.server.hs.db.run("stored", lambda t: t.query_one(
        "SELECT outlier FROM events WHERE event_id = %s", (event_id,)))
    return None if row is None else ("outlier" if row[0] else "timeline")


class GapTests(TestCase):
    async def test_a_gap_beyond_get_missing_events_is_closed_with_the_state_before_it(self) -> None:
        a, b = await start_pair(self)
        await a.register("alice")
        await b.register("bob")
        room = await a.request("POST", V3 + "/createRoom",
                               {"preset": "public_chat", "name": "Before"}, user="alice")
        room_id = room["room_id"]
        await b.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(a.name)}", {}, user="bob")

        # B goes away, and what A owes it is lost: B will be sent only the event after the gap.
        await b.stop()
        await a.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.name/",
                        {"name": "Renamed in the gap"}, user="alice")
        gap = MISSING_EVENTS_LIMIT + 10
        gap_ids = []
        for i in range(gap):
            sent = await a.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/g{i}",
                                   {"msgtype": "m.text", "body": f"in the gap {i}"}, user="alice")
            gap_ids.append(sent["event_id"])
        assert a.server is not None
        db = a.server.hs.db

        async def all_queued() -> bool:  # the sender routes events in the background
            row = await db.run("queued", lambda t: t.query_one(
                "SELECT COUNT(*) FROM federation_outbound_pdus WHERE destination = %s",
                (b.name,)))
            return int(row[0]) >= gap + 1

        await eventually(all_queued)
        await db.run("forget", lambda t: t.execute(
            "DELETE FROM federation_outbound_pdus WHERE destination = %s", (b.name,)))
        await a.restart()  # and the transaction it keeps retrying in memory is gone too
        await b.start()
        after = await a.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/after",
                                {"msgtype": "m.text", "body": "after the gap"}, user="alice")

        async def arrived() -> bool:
            return await _stored(b, after["event_id"]) == "timeline"

        await eventually(arrived, timeout_s=30)
        # The newest of the gap came through /get_missing_events; the oldest did not
        # (nobody has read the history yet, which would backfill it).
        self.assertEqual(await _stored(b, gap_ids[-1]), "timeline")
        self.assertIsNone(await _stored(b, gap_ids[0]), [await _stored(b, i) for i in gap_ids])
        # The state before what it got came through /state_ids and /event.
        name = await b.request("GET", f"{V3}/rooms/{q(room_id)}/state/m.room.name/", user="bob")
        self.assertEqual(name, {"name": "Renamed in the gap"})
        # Reading back through the gap backfills it, in order.
        bodies = [e["content"].get("body") for e in await room_events(b, "bob", room_id, 200)
                  if e["type"] == "m.room.message"]
        self.assertEqual(bodies, [f"in the gap {i}" for i in range(gap)] + ["after the gap"])
        # The room goes on from there, both ways.
        await b.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/reply",
                        {"msgtype": "m.text", "body": "bob after the gap"}, user="bob")

        async def replied() -> bool:
            return any(e["content"].get("body") == "bob after the gap"
                       for e in await room_events(a, "alice", room_id))

        await eventually(replied, timeout_s=30)
