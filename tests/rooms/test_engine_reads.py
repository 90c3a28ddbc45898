"""Large reads of a room's current state come from the engine's cached head, unchanged."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from roost.rooms.engine import HELD_LOOKUP_MIN
from tests.server_harness import start_server

V3 = "/_matrix/client/v3"


class HeldStateReadTests(TestCase):
    async def test_state_read_from_the_head_equals_the_stored_events(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=token)).body["room_id"]
        for i in range(HELD_LOOKUP_MIN):
            resp = await server.request("PUT", V3 + f"/rooms/{room}/state/org.example.s/k{i}",
                                        {"i": i}, token=token)
            assert resp.status == 200, resp.body
        redacted = resp.body["event_id"]
        await server.request("PUT", V3 + f"/rooms/{room}/redact/{redacted}/r1", {}, token=token)
        engine: Any = server.hs.engine
        state = await engine.current_state_events(room)
        ids = sorted(e.event_id for e in state.values()) + ["$not-an-event"]
        self.assertTrue(engine._held_state(ids))  # the head answers
        held = await engine.get_events(ids)
        stored = {eid: engine._load(s) for eid, s in
                  (await engine._events.get_events(ids)).items()}
        self.assertEqual(set(held), set(stored))
        self.assertNotIn("$not-an-event", held)
        for eid, loaded in stored.items():
            got = held[eid]
            self.assertEqual((got.event.event_id, got.event.pdu, got.stream_ordering,
                              got.redacted_by, got.rejected),
                             (loaded.event.event_id, loaded.event.pdu, loaded.stream_ordering,
                              loaded.redacted_by, loaded.rejected))
        self.assertIsNotNone(held[redacted].redacted_by)
