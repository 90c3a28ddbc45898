"""A quiet incremental sync (only room events new, SyncBuilder._quiet) is answered from the
new events alone (SyncBuilder._news_rooms): the answer must be exactly the one the general
path (`_rooms`, which looks at every room of the user) gives for the same range and filter."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from roost.client_api.sync_extensions import SyncRequest
from roost.client_api.sync_filter import DEFAULT_FILTER, SyncFilter
from tests.client_api.sync_helpers import call as _call
from tests.client_api.sync_helpers import frozen_clock as _frozen_clock
from tests.server_harness import RunningServer, q, start_server


class QuietSyncTests(TestCase):
    async def _setup(self) -> tuple[RunningServer, dict[str, Any], dict[str, Any], list[str]]:
        server = await start_server(self, clock=_frozen_clock())
        alice = await server.register("alice")
        bob = await server.register("bob")
        rooms = []
        for _ in range(5):
            created = await _call(server, "POST", "/createRoom", alice["access_token"],
                                  {"preset": "public_chat"})
            rooms.append(created["room_id"])
            await _call(server, "POST", f"/rooms/{q(created['room_id'])}/join",
                        bob["access_token"])
        return server, alice, bob, rooms

    async def _both(self, server: RunningServer, user: dict[str, Any], since: Any,
                    filt: SyncFilter) -> tuple[Any, Any]:
        """(the built body's rooms, what the general path answers for the same range)."""
        builder = server.hs.sync_builder
        assert builder is not None
        now = builder.now()
        user_id, device_id = user["user_id"], user["device_id"]
        self.assertTrue(builder._quiet(user_id, since, now))
        body, token = await builder.build(user_id, since, filt, device_id=device_id)
        self.assertEqual(token, now)
        memberships = await builder._user_rooms.rooms_at(user_id, now.events)
        general = await builder._rooms(SyncRequest(user_id, device_id, since, now, filt),
                                       memberships, [], frozenset())
        return body["rooms"], general

    async def test_the_news_of_some_rooms_equal_the_general_answer(self) -> None:
        server, alice, bob, rooms = await self._setup()
        builder = server.hs.sync_builder
        assert builder is not None
        left = rooms[4]  # bob left it before `since`: its news are not his
        await _call(server, "POST", f"/rooms/{q(left)}/leave", bob["access_token"])
        for user in (alice, bob):  # initial syncs: their ignored users are known from then
            await builder.build(user["user_id"], None, DEFAULT_FILTER,
                                device_id=user["device_id"])
        since = builder.now()
        a, b, c = rooms[:3]
        target = (await _call(server, "PUT", f"/rooms/{q(a)}/send/m.room.message/m1",
                              alice["access_token"], {"msgtype": "m.text", "body": "hi"}))
        await _call(server, "PUT", f"/rooms/{q(a)}/send/m.reaction/r1", alice["access_token"],
                    {"m.relates_to": {"rel_type": "m.annotation",
                                      "event_id": target["event_id"], "key": "+"}})
        await _call(server, "PUT", f"/rooms/{q(b)}/send/m.room.message/mine",
                    bob["access_token"], {"msgtype": "m.text", "body": "own"})
        await _call(server, "PUT", f"/rooms/{q(b)}/state/m.room.name/", alice["access_token"],
                    {"name": "renamed"})
        await _call(server, "PUT", f"/rooms/{q(c)}/send/m.room.message/m2",
                    alice["access_token"], {"msgtype": "m.text", "body": "only alice"})
        await _call(server, "PUT", f"/rooms/{q(left)}/send/m.room.message/m3",
                    alice["access_token"], {"msgtype": "m.text", "body": "after bob left"})
        filters = [
            DEFAULT_FILTER,
            SyncFilter.from_json({"room": {"rooms": [a, b]}}),
            SyncFilter.from_json({"room": {"timeline": {"not_senders": [alice["user_id"]]}}}),
            SyncFilter.from_json({"room": {"timeline": {"limit": 1}}}),
        ]
        for filt in filters:
            quiet, general = await self._both(server, bob, since, filt)
            self.assertEqual(quiet, general)
        quiet, _ = await self._both(server, bob, since, DEFAULT_FILTER)
        self.assertEqual(set(quiet["join"]), {a, b, c})  # the fourth has no news, bob left the fifth
        self.assertEqual(quiet["leave"], {})
        own = [e for e in quiet["join"][b]["timeline"]["events"] if e["sender"] == bob["user_id"]]
        self.assertEqual(own[0]["unsigned"]["transaction_id"], "mine")
        self.assertIn("summary", quiet["join"][b])  # the name changed
        self.assertNotIn("summary", quiet["join"][c])
        reaction = [e for e in quiet["join"][a]["timeline"]["events"] if e["type"] == "m.reaction"]
        self.assertEqual(len(reaction), 1)
        self.assertIn("unread_notifications", quiet["join"][c])
        # Alice's answer: her own events in b carry no transaction id of bob's.
        quiet, general = await self._both(server, alice, since, DEFAULT_FILTER)
        self.assertEqual(quiet, general)
        self.assertNotIn("transaction_id",
                         quiet["join"][b]["timeline"]["events"][0].get("unsigned", {}))

    async def test_a_sync_with_other_news_is_not_quiet(self) -> None:
        server, alice, bob, rooms = await self._setup()
        builder = server.hs.sync_builder
        assert builder is not None
        await builder.build(bob["user_id"], None, DEFAULT_FILTER, device_id=bob["device_id"])
        since = builder.now()
        await _call(server, "POST", f"/rooms/{q(rooms[0])}/receipt/m.read/"
                    + q((await _call(server, "PUT", f"/rooms/{q(rooms[0])}/send/m.room.message/x",
                                     alice["access_token"], {"msgtype": "m.text", "body": "x"})
                         )["event_id"]), alice["access_token"])
        self.assertFalse(builder._quiet(bob["user_id"], since, builder.now()))
        body, _ = await builder.build(bob["user_id"], since, DEFAULT_FILTER,
                                      device_id=bob["device_id"])
        ephemeral = body["rooms"]["join"][rooms[0]]["ephemeral"]["events"]
        self.assertEqual([e["type"] for e in ephemeral], ["m.receipt"])
        # A membership change of the user: not quiet either (the general path serves it).
        since = builder.now()
        await _call(server, "POST", f"/rooms/{q(rooms[1])}/leave", bob["access_token"])
        self.assertFalse(builder._quiet(bob["user_id"], since, builder.now()))
        body, _ = await builder.build(bob["user_id"], since, DEFAULT_FILTER,
                                      device_id=bob["device_id"])
        self.assertIn(rooms[1], body["rooms"]["leave"])
