"""GET /sync over real HTTP: initial and incremental syncs, long polling, ephemeral data."""

from __future__ import annotations

import json

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.server_harness import RunningServer, start_server

V3 = "/_matrix/client/v3"


async def _setup(server: RunningServer) -> tuple[str, str, str]:
    alice = (await server.register("alice"))["access_token"]
    bob = (await server.register("bob"))["access_token"]
    created = await server.request("POST", V3 + "/createRoom",
                                   {"name": "Chat", "invite": ["@bob:test.roost"]}, token=alice)
    room = created.body["room_id"]
    joined = await server.request("POST", V3 + f"/rooms/{room}/join", {}, token=bob)
    assert joined.status == 200, joined.body
    return alice, bob, room


async def _send(server: RunningServer, token: str, room: str, body: str, txn: str) -> str:
    resp = await server.request("PUT", V3 + f"/rooms/{room}/send/m.room.message/{txn}",
                                {"msgtype": "m.text", "body": body}, token=token)
    assert resp.status == 200, resp.body
    return resp.body["event_id"]


class InitialSyncTests(TestCase):
    async def test_initial_sync_has_joined_rooms_state_and_timeline(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        for i in range(15):
            await _send(server, alice, room, f"m{i}", f"t{i}")
        resp = await server.request("GET", V3 + "/sync", token=bob)
        self.assertEqual(resp.status, 200, resp.body)
        joined = resp.body["rooms"]["join"][room]
        timeline = joined["timeline"]
        self.assertEqual([e["content"]["body"] for e in timeline["events"]],
                         [f"m{i}" for i in range(5, 15)])
        self.assertTrue(timeline["limited"])
        state_types = {e["type"] for e in joined["state"]["events"]}
        self.assertTrue({"m.room.create", "m.room.power_levels", "m.room.name",
                         "m.room.member"} <= state_types)
        # prev_batch pages back into the history the timeline left out.
        older = await server.request(
            "GET", V3 + f"/rooms/{room}/messages?dir=b&limit=3&from={timeline['prev_batch']}",
            token=bob)
        self.assertEqual([e["content"]["body"] for e in older.body["chunk"]], ["m4", "m3", "m2"])

    async def test_invites_appear_with_stripped_state(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        carol = (await server.register("carol"))["access_token"]
        created = await server.request("POST", V3 + "/createRoom",
                                       {"name": "Secret", "invite": ["@carol:test.roost"]},
                                       token=alice)
        resp = await server.request("GET", V3 + "/sync", token=carol)
        invite = resp.body["rooms"]["invite"][created.body["room_id"]]
        events = {(e["type"], e["state_key"]): e for e in invite["invite_state"]["events"]}
        self.assertEqual(events[("m.room.name", "")]["content"], {"name": "Secret"})
        self.assertEqual(events[("m.room.member", "@carol:test.roost")]["content"]["membership"],
                         "invite")
        self.assertNotIn(created.body["room_id"], resp.body["rooms"]["join"])


class IncrementalSyncTests(TestCase):
    async def test_incremental_sync_returns_only_new_events_once(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        first = await server.request("GET", V3 + "/sync", token=bob)
        token = first.body["next_batch"]
        await _send(server, alice, room, "hello", "a1")
        await _send(server, alice, room, "again", "a2")
        second = await server.request("GET", V3 + f"/sync?since={token}", token=bob)
        events = second.body["rooms"]["join"][room]["timeline"]["events"]
        self.assertEqual([e["content"]["body"] for e in events], ["hello", "again"])
        self.assertFalse(second.body["rooms"]["join"][room]["timeline"]["limited"])
        third = await server.request(
            "GET", V3 + f"/sync?since={second.body['next_batch']}", token=bob)
        self.assertNotIn(room, third.body["rooms"]["join"])

    async def test_leave_kick_and_ban_show_under_leave(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        token = (await server.request("GET", V3 + "/sync", token=bob)).body["next_batch"]
        kicked = await server.request("POST", V3 + f"/rooms/{room}/kick",
                                      {"user_id": "@bob:test.roost", "reason": "bye"}, token=alice)
        self.assertEqual(kicked.status, 200, kicked.body)
        await _send(server, alice, room, "after the kick", "k1")
        resp = await server.request("GET", V3 + f"/sync?since={token}", token=bob)
        left = resp.body["rooms"]["leave"][room]
        last = left["timeline"]["events"][-1]
        self.assertEqual((last["type"], last["content"]["membership"]), ("m.room.member", "leave"))
        bodies = [e["content"].get("body") for e in left["timeline"]["events"]]
        self.assertNotIn("after the kick", bodies)
        self.assertNotIn(room, resp.body["rooms"]["join"])

    async def test_timeline_filter_limit_and_types(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        token = (await server.request("GET", V3 + "/sync", token=bob)).body["next_batch"]
        for i in range(4):
            await _send(server, alice, room, f"m{i}", f"f{i}")
        await server.request("PUT", V3 + f"/rooms/{room}/state/m.room.topic", {"topic": "t"},
                             token=alice)
        filt = json.dumps({"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}})
        resp = await server.request("GET", V3 + f"/sync?since={token}&filter={filt}", token=bob)
        joined = resp.body["rooms"]["join"][room]
        self.assertEqual([e["content"]["body"] for e in joined["timeline"]["events"]], ["m2", "m3"])
        self.assertTrue(joined["timeline"]["limited"])
        stored = await server.request("POST", V3 + "/user/@bob:test.roost/filter",
                                      json.loads(filt), token=bob)
        fid = stored.body["filter_id"]
        got = await server.request("GET", V3 + f"/user/@bob:test.roost/filter/{fid}", token=bob)
        self.assertEqual(got.body, json.loads(filt))
        resp = await server.request("GET", V3 + f"/sync?since={token}&filter={fid}", token=bob)
        self.assertEqual(len(resp.body["rooms"]["join"][room]["timeline"]["events"]), 2)

    async def test_bad_tokens_and_filters(self) -> None:
        server = await start_server(self)
        bob = (await server.register("bob"))["access_token"]
        for query, errcode in (("since=garbage", "M_INVALID_PARAM"), ("filter={bad", "M_NOT_JSON"),
                               ("filter=999", "M_NOT_FOUND"), ("timeout=-5", "M_INVALID_PARAM"),
                               ('filter={"room":[]}', "M_BAD_JSON")):
            resp = await server.request("GET", V3 + f"/sync?{query}", token=bob)
            self.assertEqual(resp.body["errcode"], errcode, query)


class SyncFilterAndStateTests(TestCase):
    async def _two_rooms(self, server: RunningServer) -> tuple[str, str, str, str]:
        alice, bob, first = await _setup(server)
        created = await server.request("POST", V3 + "/createRoom",
                                       {"invite": ["@bob:test.roost"]}, token=alice)
        second = created.body["room_id"]
        await server.request("POST", V3 + f"/rooms/{second}/join", {}, token=bob)
        return alice, bob, first, second

    async def test_rooms_and_not_rooms_pick_the_rooms_synced(self) -> None:
        server = await start_server(self)
        _alice, bob, first, second = await self._two_rooms(server)
        for filt, expected in (({"room": {"rooms": [first]}}, {first}),
                               ({"room": {"not_rooms": [first]}}, {second}),
                               ({"room": {"rooms": [first, second], "not_rooms": [second]}},
                                {first}),
                               ({}, {first, second})):
            resp = await server.request(
                "GET", V3 + f"/sync?filter={json.dumps(filt)}", token=bob)
            self.assertEqual(set(resp.body["rooms"]["join"]), expected, filt)

    async def test_lazy_loading_sends_only_the_members_the_timeline_needs(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        carol = (await server.register("carol"))["access_token"]
        await server.request("POST", V3 + f"/rooms/{room}/invite",
                             {"user_id": "@carol:test.roost"}, token=alice)
        await server.request("POST", V3 + f"/rooms/{room}/join", {}, token=carol)
        for i in range(3):
            await _send(server, alice, room, f"m{i}", f"l{i}")

        def members(body: dict) -> set[str]:
            state = body["rooms"]["join"][room]["state"]["events"]
            return {e["state_key"] for e in state if e["type"] == "m.room.member"}

        lazy = json.dumps({"room": {"timeline": {"limit": 2},
                                    "state": {"lazy_load_members": True}}})
        resp = await server.request("GET", V3 + f"/sync?filter={lazy}", token=bob)
        # The timeline's sender and the syncing user; carol said nothing in it.
        self.assertEqual(members(resp.body), {"@alice:test.roost", "@bob:test.roost"})
        eager = json.dumps({"room": {"timeline": {"limit": 2}}})
        full = await server.request("GET", V3 + f"/sync?filter={eager}", token=bob)
        self.assertEqual(members(full.body),
                         {"@alice:test.roost", "@bob:test.roost", "@carol:test.roost"})

    async def test_full_state_returns_all_state_on_an_incremental_sync(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        token = (await server.request("GET", V3 + "/sync", token=bob)).body["next_batch"]
        await _send(server, alice, room, "new", "fs1")
        plain = await server.request("GET", V3 + f"/sync?since={token}", token=bob)
        self.assertEqual(plain.body["rooms"]["join"][room]["state"]["events"], [])
        full = await server.request("GET", V3 + f"/sync?since={token}&full_state=true", token=bob)
        joined = full.body["rooms"]["join"][room]
        self.assertTrue({"m.room.create", "m.room.power_levels", "m.room.name", "m.room.member"}
                        <= {e["type"] for e in joined["state"]["events"]})
        # The timeline still starts at `since`.
        self.assertEqual([e["content"]["body"] for e in joined["timeline"]["events"]], ["new"])

    async def test_a_state_change_the_limited_timeline_skipped_is_in_state(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        token = (await server.request("GET", V3 + "/sync", token=bob)).body["next_batch"]
        await server.request("PUT", V3 + f"/rooms/{room}/state/m.room.topic", {"topic": "new"},
                             token=alice)
        for i in range(12):
            await _send(server, alice, room, f"m{i}", f"g{i}")
        resp = await server.request("GET", V3 + f"/sync?since={token}", token=bob)
        joined = resp.body["rooms"]["join"][room]
        self.assertTrue(joined["timeline"]["limited"])
        self.assertNotIn("m.room.topic", {e["type"] for e in joined["timeline"]["events"]})
        topics = [e for e in joined["state"]["events"] if e["type"] == "m.room.topic"]
        self.assertEqual([t["content"] for t in topics], [{"topic": "new"}])


class LongPollTests(TestCase):
    async def test_waiting_sync_answers_as_soon_as_a_message_arrives(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        token = (await server.request("GET", V3 + "/sync", token=bob)).body["next_batch"]
        waiting = defer.ensureDeferred(
            server.request("GET", V3 + f"/sync?since={token}&timeout=60000", token=bob))
        await task.deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(waiting.called)
        await _send(server, alice, room, "wake up", "w1")
        resp = await waiting
        events = resp.body["rooms"]["join"][room]["timeline"]["events"]
        self.assertEqual([e["content"]["body"] for e in events], ["wake up"])

    async def test_long_poll_ends_empty_when_the_timeout_passes(self) -> None:
        clock = task.Clock()
        clock.advance(1_800_000_000)
        server = await start_server(self, clock=clock)
        alice, bob, room = await _setup(server)
        token = (await server.request("GET", V3 + "/sync", token=bob)).body["next_batch"]
        waiting = defer.ensureDeferred(
            server.request("GET", V3 + f"/sync?since={token}&timeout=30000", token=bob))
        await task.deferLater(reactor, 0.2, lambda: None)
        clock.advance(29)
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(waiting.called)
        clock.advance(2)
        resp = await waiting
        self.assertEqual(resp.body["rooms"]["join"], {})
        self.assertEqual(resp.body["next_batch"], token)


class EphemeralTests(TestCase):
    async def test_typing_appears_and_expires_with_the_clock(self) -> None:
        clock = task.Clock()
        clock.advance(1_800_000_000)
        server = await start_server(self, clock=clock)
        alice, bob, room = await _setup(server)
        token = (await server.request("GET", V3 + "/sync", token=bob)).body["next_batch"]
        put = await server.request("PUT", V3 + f"/rooms/{room}/typing/@alice:test.roost",
                                    {"typing": True, "timeout": 10000}, token=alice)
        self.assertEqual(put.status, 200, put.body)
        resp = await server.request("GET", V3 + f"/sync?since={token}", token=bob)
        ephemeral = resp.body["rooms"]["join"][room]["ephemeral"]["events"]
        self.assertIn({"type": "m.typing", "content": {"user_ids": ["@alice:test.roost"]}},
                      ephemeral)
        token = resp.body["next_batch"]
        clock.advance(11)
        resp = await server.request("GET", V3 + f"/sync?since={token}", token=bob)
        ephemeral = resp.body["rooms"]["join"][room]["ephemeral"]["events"]
        self.assertIn({"type": "m.typing", "content": {"user_ids": []}}, ephemeral)
        other = await server.request("PUT", V3 + f"/rooms/{room}/typing/@bob:test.roost",
                                     {"typing": True}, token=alice)
        self.assertEqual(other.status, 403)

    async def test_receipts_public_and_private(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        event_id = await _send(server, alice, room, "read me", "r1")
        token = (await server.request("GET", V3 + "/sync", token=alice)).body["next_batch"]
        resp = await server.request("POST", V3 + f"/rooms/{room}/receipt/m.read/{event_id}", {},
                                    token=bob)
        self.assertEqual(resp.status, 200, resp.body)
        await server.request("POST", V3 + f"/rooms/{room}/receipt/m.read.private/{event_id}", {},
                             token=bob)
        resp = await server.request("GET", V3 + f"/sync?since={token}", token=alice)
        receipts = [e for e in resp.body["rooms"]["join"][room]["ephemeral"]["events"]
                    if e["type"] == "m.receipt"]
        content = receipts[0]["content"][event_id]
        self.assertIn("@bob:test.roost", content["m.read"])
        self.assertNotIn("m.read.private", content)
        bad = await server.request("POST", V3 + f"/rooms/{room}/receipt/m.bogus/{event_id}", {},
                                   token=bob)
        self.assertEqual(bad.body["errcode"], "M_INVALID_PARAM")
        missing = await server.request("POST", V3 + f"/rooms/{room}/receipt/m.read/$nope", {},
                                       token=bob)
        self.assertEqual(missing.status, 404)

    async def test_read_markers_set_fully_read_account_data(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        event_id = await _send(server, alice, room, "x", "x1")
        resp = await server.request("POST", V3 + f"/rooms/{room}/read_markers",
                                    {"m.fully_read": event_id, "m.read": event_id}, token=bob)
        self.assertEqual(resp.status, 200, resp.body)
        got = await server.request(
            "GET", V3 + f"/user/@bob:test.roost/rooms/{room}/account_data/m.fully_read", token=bob)
        self.assertEqual(got.body, {"event_id": event_id})


class AccountDataTests(TestCase):
    async def test_global_and_room_account_data_sync(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        token = (await server.request("GET", V3 + "/sync", token=bob)).body["next_batch"]
        put = await server.request("PUT", V3 + "/user/@bob:test.roost/account_data/m.direct",
                                   {"@alice:test.roost": [room]}, token=bob)
        self.assertEqual(put.status, 200)
        await server.request("PUT", V3 + f"/user/@bob:test.roost/rooms/{room}/account_data/m.tag",
                             {"tags": {"u.work": {}}}, token=bob)
        resp = await server.request("GET", V3 + f"/sync?since={token}", token=bob)
        self.assertIn({"type": "m.direct", "content": {"@alice:test.roost": [room]}},
                      resp.body["account_data"]["events"])
        self.assertIn({"type": "m.tag", "content": {"tags": {"u.work": {}}}},
                      resp.body["rooms"]["join"][room]["account_data"]["events"])
        got = await server.request("GET", V3 + "/user/@bob:test.roost/account_data/m.direct",
                                   token=bob)
        self.assertEqual(got.body, {"@alice:test.roost": [room]})
        other = await server.request("GET", V3 + "/user/@alice:test.roost/account_data/m.direct",
                                     token=bob)
        self.assertEqual(other.status, 403)
        missing = await server.request("GET", V3 + "/user/@bob:test.roost/account_data/x.none",
                                       token=bob)
        self.assertEqual(missing.status, 404)
