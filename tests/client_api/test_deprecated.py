"""The deprecated GET /events, /events/{eventId}, /initialSync and /rooms/{roomId}/initialSync."""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.server_harness import q, start_server

V3 = "/_matrix/client/v3"


async def _setup(testcase: TestCase):  # noqa: ANN202
    server = await start_server(testcase)
    alice = (await server.register("alice"))["access_token"]
    bob = (await server.register("bob"))["access_token"]
    room = (await server.request("POST", V3 + "/createRoom", {"name": "Hall"},
                                 token=alice)).body["room_id"]
    return server, alice, bob, room


async def _say(server, token: str, room: str, text: str, txn: str) -> str:  # noqa: ANN001
    resp = await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{txn}",
                                {"msgtype": "m.text", "body": text}, token=token)
    assert resp.status == 200, resp.body
    return str(resp.body["event_id"])


class EventsStreamTests(TestCase):
    async def test_events_from_a_token_and_long_poll(self) -> None:
        server, alice, bob, room = await _setup(self)
        now = await server.request("GET", V3 + "/events", token=alice)
        self.assertEqual((now.status, now.body["chunk"]), (200, []))
        sent = await _say(server, alice, room, "hello", "1")
        got = await server.request("GET", f"{V3}/events?from={now.body['end']}&timeout=0",
                                   token=alice)
        self.assertEqual([e["event_id"] for e in got.body["chunk"]], [sent])
        self.assertEqual(got.body["start"], now.body["end"])
        # Messages of a user one ignores are left out.
        await server.request("PUT", f"{V3}/user/{q('@alice:test.roost')}/account_data/"
                             "m.ignored_user_list", {"ignored_users": {"@bob:test.roost": {}}},
                             token=alice)
        await server.request("POST", f"{V3}/rooms/{q(room)}/invite",
                             {"user_id": "@bob:test.roost"}, token=alice)
        await server.request("POST", f"{V3}/rooms/{q(room)}/join", {}, token=bob)
        mark = got.body["end"]
        await _say(server, bob, room, "ignore me", "b1")
        shown = await server.request("GET", f"{V3}/events?from={mark}&timeout=0", token=alice)
        self.assertNotIn("ignore me", [e["content"].get("body") for e in shown.body["chunk"]])
        self.assertIn("m.room.member", [e["type"] for e in shown.body["chunk"]])
        initial = await server.request("GET", f"{V3}/rooms/{q(room)}/initialSync", token=alice)
        self.assertNotIn("ignore me", [e["content"].get("body")
                                       for e in initial.body["messages"]["chunk"]])
        await server.request("POST", f"{V3}/rooms/{q(room)}/leave", {}, token=bob)
        # Bob is not in the room: nothing for him, after the timeout.
        none = await server.request("GET", f"{V3}/events?from={now.body['end']}&timeout=0",
                                    token=bob)
        self.assertEqual(none.body["chunk"], [])
        # A long poll wakes on the next message.
        fresh = (await server.request("GET", V3 + "/events", token=alice)).body["end"]
        waiting = defer.ensureDeferred(server.request(
            "GET", f"{V3}/events?from={fresh}&timeout=20000", token=alice))
        await task.deferLater(reactor, 0.2, lambda: None)
        later = await _say(server, alice, room, "later", "2")
        woke = await waiting
        self.assertEqual([e["event_id"] for e in woke.body["chunk"]], [later])

    async def test_peeking_a_world_readable_room_and_bad_input(self) -> None:
        server, alice, bob, room = await _setup(self)
        start = (await server.request("GET", V3 + "/events", token=bob)).body["end"]
        refused = await server.request("GET", f"{V3}/events?room_id={q(room)}&from={start}",
                                       token=bob)
        self.assertEqual((refused.status, refused.body["errcode"]), (403, "M_FORBIDDEN"))
        await server.request("PUT", f"{V3}/rooms/{q(room)}/state/m.room.history_visibility/",
                             {"history_visibility": "world_readable"}, token=alice)
        sent = await _say(server, alice, room, "for all", "1")
        peek = await server.request("GET", f"{V3}/events?room_id={q(room)}&from={start}"
                                    "&timeout=0", token=bob)
        self.assertEqual(peek.status, 200, peek.body)
        self.assertIn(sent, [e["event_id"] for e in peek.body["chunk"]])
        for query, errcode in (("from=nonsense", "M_INVALID_PARAM"),
                               ("from=s1&timeout=-5", "M_INVALID_PARAM"),
                               ("from=s1&timeout=soon", "M_INVALID_PARAM")):
            resp = await server.request("GET", f"{V3}/events?{query}", token=bob)
            self.assertEqual((resp.status, resp.body["errcode"]), (400, errcode), query)
        unknown = await server.request("GET", f"{V3}/events?room_id={q('!nope:test.roost')}",
                                       token=bob)
        self.assertEqual(unknown.status, 404)

    async def test_single_event_by_id(self) -> None:
        server, alice, bob, room = await _setup(self)
        sent = await _say(server, alice, room, "hi", "1")
        got = await server.request("GET", f"{V3}/events/{q(sent)}", token=alice)
        self.assertEqual((got.status, got.body["content"]["body"]), (200, "hi"))
        for token, event_id in ((bob, sent), (alice, "$nope")):
            resp = await server.request("GET", f"{V3}/events/{q(event_id)}", token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_NOT_FOUND"))


class InitialSyncTests(TestCase):
    async def test_initial_sync_lists_rooms_messages_state_and_account_data(self) -> None:
        server, alice, bob, room = await _setup(self)
        left = (await server.request("POST", V3 + "/createRoom", {},
                                     token=alice)).body["room_id"]
        await server.request("POST", f"{V3}/rooms/{q(left)}/leave", {}, token=alice)
        for n in range(3):
            await _say(server, alice, room, f"m{n}", str(n))
        await server.request("PUT", f"{V3}/user/{q('@alice:test.roost')}/account_data/org.x",
                             {"k": 1}, token=alice)
        resp = await server.request("GET", f"{V3}/initialSync?limit=2", token=alice)
        self.assertEqual(resp.status, 200, resp.body)
        body = resp.body
        self.assertEqual([r["room_id"] for r in body["rooms"]], [room])
        [entry] = body["rooms"]
        self.assertEqual(entry["membership"], "join")
        self.assertEqual(entry["visibility"], "private")
        self.assertEqual([e["content"]["body"] for e in entry["messages"]["chunk"]],
                         ["m1", "m2"])
        self.assertIn("m.room.name", {e["type"] for e in entry["state"]})
        self.assertIn({"type": "org.x", "content": {"k": 1}}, body["account_data"])
        self.assertTrue(body["end"].startswith("s"))
        # The page's start token continues backwards with /messages.
        older = await server.request(
            "GET", f"{V3}/rooms/{q(room)}/messages?dir=b&limit=1&from="
            f"{entry['messages']['start']}", token=alice)
        self.assertEqual([e["content"].get("body") for e in older.body["chunk"]], ["m0"])
        invited_to = (await server.request("POST", V3 + "/createRoom", {
            "invite": ["@alice:test.roost"]}, token=bob)).body["room_id"]
        with_invite = await server.request("GET", f"{V3}/initialSync", token=alice)
        [invite] = [r for r in with_invite.body["rooms"] if r["room_id"] == invited_to]
        self.assertEqual((invite["membership"], invite["invite"]["sender"]),
                         ("invite", "@bob:test.roost"))
        self.assertNotIn("messages", invite)
        archived = await server.request("GET", f"{V3}/initialSync?archived=true", token=alice)
        self.assertEqual({r["room_id"]: r["membership"] for r in archived.body["rooms"]},
                         {room: "join", left: "leave", invited_to: "invite"})
        bad = await server.request("GET", f"{V3}/initialSync?limit=-1", token=alice)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_INVALID_PARAM"))
        bad = await server.request("GET", f"{V3}/initialSync?archived=maybe", token=alice)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_INVALID_PARAM"))

    async def test_room_initial_sync(self) -> None:
        server, alice, bob, room = await _setup(self)
        await _say(server, alice, room, "hi", "1")
        resp = await server.request("GET", f"{V3}/rooms/{q(room)}/initialSync", token=alice)
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual((resp.body["room_id"], resp.body["membership"]), (room, "join"))
        self.assertEqual(resp.body["messages"]["chunk"][-1]["content"]["body"], "hi")
        self.assertEqual([p["sender"] for p in resp.body["presence"]], ["@alice:test.roost"])
        stranger = await server.request("GET", f"{V3}/rooms/{q(room)}/initialSync", token=bob)
        self.assertEqual((stranger.status, stranger.body["errcode"]), (403, "M_FORBIDDEN"))
        unknown = await server.request("GET", f"{V3}/rooms/{q('!nope:test.roost')}/initialSync",
                                       token=bob)
        self.assertEqual((unknown.status, unknown.body["errcode"]), (404, "M_NOT_FOUND"))
