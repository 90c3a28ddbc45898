"""A room's part of an incremental sync is built once and shared (client_api/sync_shared.py):
every receiver still gets its own exact answer, and the key keeps apart what differs."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from roost.client_api.sync_shared import SHARE_MS
from tests.server_harness import RunningServer, q, start_server

V3 = "/_matrix/client/v3"


def _frozen_clock() -> task.Clock:
    """Served ages and the sharing window move only when a test advances this clock."""
    clock = task.Clock()
    clock.advance(reactor.seconds())  # type: ignore[attr-defined]
    return clock


class _Room:
    """A room of `names`, everyone joined, with each member's access token."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.tokens: dict[str, str] = {}
        self.room_id = ""

    async def setup(self, names: list[str]) -> None:
        for name in names:
            self.tokens[name] = (await self.server.register(name))["access_token"]
        created = await self.server.request("POST", V3 + "/createRoom",
                                            {"preset": "public_chat"},
                                            token=self.tokens[names[0]])
        self.room_id = created.body["room_id"]
        for name in names[1:]:
            joined = await self.server.request("POST", V3 + f"/rooms/{self.room_id}/join", {},
                                               token=self.tokens[name])
            assert joined.status == 200, joined.body

    async def send(self, name: str, body: str, txn: str, msgtype: str = "m.text") -> str:
        resp = await self.server.request(
            "PUT", V3 + f"/rooms/{self.room_id}/send/m.room.message/{txn}",
            {"msgtype": msgtype, "body": body}, token=self.tokens[name])
        assert resp.status == 200, resp.body
        return str(resp.body["event_id"])

    async def sync(self, name: str, since: str, filt: Any = None) -> Any:
        path = V3 + f"/sync?since={q(since)}&timeout=0"
        if filt is not None:
            path += "&filter=" + q(json.dumps(filt))
        resp = await self.server.request("GET", path, token=self.tokens[name])
        assert resp.status == 200, resp.body
        return resp.body

    async def timeline(self, name: str, since: str, filt: Any = None) -> list[Any]:
        body = await self.sync(name, since, filt)
        room = body["rooms"]["join"].get(self.room_id)
        return room["timeline"]["events"] if room else []

    def token_now(self) -> str:
        builder = self.server.hs.sync_builder
        assert builder is not None
        return builder.text(builder.now())


class SharedRoomPartTests(TestCase):
    async def _room(self, names: list[str]) -> tuple[_Room, Any]:
        server = await start_server(self, clock=_frozen_clock())
        room = _Room(server)
        await room.setup(names)
        return room, server.hs.sync_builder._shared

    async def test_receivers_with_different_per_user_data_get_their_own_answers(self) -> None:
        room, shared = await self._room(["alice", "bob", "carol", "dave", "erin"])
        ignored = await room.server.request(
            "PUT", V3 + f"/user/{q('@dave:test.roost')}/account_data/m.ignored_user_list",
            {"ignored_users": {"@alice:test.roost": {}}}, token=room.tokens["dave"])
        assert ignored.status == 200, ignored.body
        since = room.token_now()
        event_id = await room.send("alice", "hello", "txn-1")
        hits = shared.hits

        bob = await room.sync("bob", since)  # the first: builds and keeps the room's part
        alice = await room.sync("alice", since)  # the sender, on the sending device
        bob_again = await room.sync("bob", since)
        carol = await room.timeline("carol", since, {"room": {"timeline": {
            "not_senders": ["@alice:test.roost"]}}})
        dave = await room.timeline("dave", since)  # ignores alice
        erin = await room.timeline("erin", since, {"event_fields": ["content.body", "type"]})

        bob_events = bob["rooms"]["join"][room.room_id]["timeline"]["events"]
        alice_events = alice["rooms"]["join"][room.room_id]["timeline"]["events"]
        self.assertEqual([e["event_id"] for e in bob_events], [event_id])
        self.assertEqual([e["event_id"] for e in alice_events], [event_id])
        # Only the sending device sees its transaction id, and bob's copy was not touched.
        self.assertEqual(alice_events[0]["unsigned"]["transaction_id"], "txn-1")
        self.assertNotIn("transaction_id", bob_events[0]["unsigned"])
        self.assertEqual(bob_again["rooms"]["join"][room.room_id]["timeline"]["events"],
                         bob_events)
        # Unread counts stay per user: the sender has nothing unread.
        self.assertEqual(
            bob["rooms"]["join"][room.room_id]["unread_notifications"]["notification_count"], 1)
        self.assertEqual(
            alice["rooms"]["join"][room.room_id]["unread_notifications"]["notification_count"],
            0)
        self.assertEqual(carol, [])
        self.assertEqual(dave, [])
        self.assertEqual(erin, [{"content": {"body": "hello"}, "type": "m.room.message"}])
        self.assertGreaterEqual(shared.hits - hits, 2)  # alice and bob's second sync shared

    async def test_the_key_keeps_different_ranges_and_filters_apart(self) -> None:
        room, shared = await self._room(["alice", "bob", "carol"])
        early = room.token_now()
        first = await room.send("alice", "one", "t1")
        late = room.token_now()
        second = await room.send("alice", "two", "t2", msgtype="m.notice")
        hits = shared.hits

        bob_late = await room.timeline("bob", late)
        carol_early = await room.timeline("carol", early)  # same room and now, older since
        self.assertEqual([e["event_id"] for e in bob_late], [second])
        self.assertEqual([e["event_id"] for e in carol_early], [first, second])
        # Same range, a filter that keeps only one type, then one keeping no event at all.
        only_text = {"room": {"timeline": {"types": ["m.room.message"], "limit": 1}}}
        self.assertEqual([e["event_id"] for e in await room.timeline("bob", early, only_text)],
                         [second])
        none = {"room": {"timeline": {"types": ["m.room.topic"]}}}
        self.assertEqual(await room.timeline("carol", early, none), [])
        limited = await room.sync("bob", early, {"room": {"timeline": {"limit": 1}}})
        timeline = limited["rooms"]["join"][room.room_id]["timeline"]
        self.assertEqual([e["event_id"] for e in timeline["events"]], [second])
        self.assertTrue(timeline["limited"])
        # And the unfiltered answers again, now from the shared parts.
        self.assertEqual([e["event_id"] for e in await room.timeline("carol", late)], [second])
        self.assertEqual([e["event_id"] for e in await room.timeline("bob", early)],
                         [first, second])
        # (at least: an answer made at once looks its parts up before `build` may)
        self.assertGreaterEqual(shared.hits - hits, 2)

    async def test_a_shared_part_is_not_served_past_its_window(self) -> None:
        room, shared = await self._room(["alice", "bob", "carol"])
        clock = room.server.hs.clock
        since = room.token_now()
        await room.send("alice", "hello", "t1")
        bob = await room.timeline("bob", since)
        clock.advance(SHARE_MS / 1000 + 5)
        hits = shared.hits
        carol = await room.timeline("carol", since)
        self.assertEqual(shared.hits, hits)  # built again: the age is the age now
        self.assertGreaterEqual(carol[0]["unsigned"]["age"],
                                bob[0]["unsigned"]["age"] + SHARE_MS + 5000)
