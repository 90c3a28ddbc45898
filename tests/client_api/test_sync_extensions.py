"""Other areas plug into /sync: top-level sections, per-room fields, streams; rooms.knock."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from roost.client_api.sync_extensions import SyncRequest
from roost.rooms.engine_types import NewEvent
from tests.server_harness import RunningServer, start_server

V3 = "/_matrix/client/v3"


async def _alice_with_room(server: RunningServer) -> tuple[str, str]:
    alice = (await server.register("alice"))["access_token"]
    room = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
    return alice, room


class SectionTests(TestCase):
    async def test_section_sees_user_device_and_token_range(self) -> None:
        server = await start_server(self)
        builder = server.hs.sync_builder
        assert builder is not None
        seen: list[SyncRequest] = []

        async def counts(request: SyncRequest) -> Any:
            seen.append(request)
            return {"signed_curve25519": 3}

        builder.add_section("org.roost.test_counts", counts, is_news=lambda v: False)
        login = await server.register("alice")
        alice = login["access_token"]
        first = await server.request("GET", V3 + "/sync", token=alice)
        self.assertEqual(first.body["org.roost.test_counts"], {"signed_curve25519": 3})
        self.assertEqual((seen[-1].user_id, seen[-1].device_id, seen[-1].since),
                         ("@alice:test.roost", login["device_id"], None))
        self.assertEqual(str(seen[-1].now), first.body["next_batch"])
        # Not news: an incremental sync with nothing else new still waits out its timeout.
        second = await server.request("GET", V3 + f"/sync?since={first.body['next_batch']}"
                                      "&timeout=0", token=alice)
        self.assertEqual(second.body["org.roost.test_counts"], {"signed_curve25519": 3})
        self.assertEqual(str(seen[-1].since), first.body["next_batch"])

    async def test_a_registered_stream_is_in_the_token_and_its_news_wakes_a_long_poll(
            self) -> None:
        server = await start_server(self)
        builder = server.hs.sync_builder
        assert builder is not None
        # (The real to_device and device_one_time_keys_count sections are e2ee's, registered
        # at start; these stand-ins use keys of their own.)
        # A stand-in for e2ee's to-device stream, riding the typing field of the token is
        # not allowed: only fields of StreamToken are streams.
        with self.assertRaises(ValueError):
            builder.add_stream("to_device_not_a_field", lambda: 0)
        with self.assertRaises(ValueError):
            builder.add_section("rooms", lambda r: defer.succeed(None))  # type: ignore[arg-type]
        inbox: dict[str, list[tuple[int, str]]] = {}

        async def to_device(request: SyncRequest) -> Any:
            # Reads exactly (since, now] of its stream (here the typing one stands in).
            low = request.since.typing if request.since else 0
            return {"events": [{"type": "m.test", "content": {"n": n}} for pos, n in
                               inbox.get(request.user_id, []) if low < pos <= request.now.typing]}

        builder.add_section("org.roost.test_to_device", to_device)
        alice, room = await _alice_with_room(server)
        first = await server.request("GET", V3 + "/sync", token=alice)
        self.assertEqual(first.body["org.roost.test_to_device"], {"events": []})
        poll = defer.ensureDeferred(server.request(
            "GET", V3 + f"/sync?since={first.body['next_batch']}&timeout=20000", token=alice))
        await task.deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(poll.called)
        position = server.hs.notifier.positions.get("typing", 0) + 1
        inbox["@alice:test.roost"] = [(position, "hi")]
        await server.request("PUT", V3 + f"/rooms/{room}/typing/@alice:test.roost",
                             {"typing": True, "timeout": 10000}, token=alice)
        woken = await poll
        self.assertEqual(woken.body["org.roost.test_to_device"]["events"], [{"type": "m.test",
                                                             "content": {"n": "hi"}}])
        again = await server.request("GET", V3 + f"/sync?since={woken.body['next_batch']}",
                                     token=alice)
        self.assertEqual(again.body["org.roost.test_to_device"], {"events": []})


class RoomFieldTests(TestCase):
    async def test_room_field_is_added_to_joined_rooms_in_the_answer(self) -> None:
        server = await start_server(self)
        builder = server.hs.sync_builder
        assert builder is not None
        asked: list[list[str]] = []

        async def unread(request: SyncRequest, rooms: list[str]) -> dict[str, Any]:
            asked.append(rooms)
            return {r: {"notification_count": 1, "highlight_count": 0} for r in rooms}

        builder.add_room_field("org.example.counts", unread)
        with self.assertRaises(ValueError):
            builder.add_room_field("timeline", unread)
        alice, room = await _alice_with_room(server)
        other = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        first = await server.request("GET", V3 + "/sync", token=alice)
        for r in (room, other):
            self.assertEqual(first.body["rooms"]["join"][r]["org.example.counts"],
                             {"notification_count": 1, "highlight_count": 0})
        await server.request("PUT", V3 + f"/rooms/{room}/send/m.room.message/t1",
                             {"msgtype": "m.text", "body": "x"}, token=alice)
        second = await server.request("GET", V3 + f"/sync?since={first.body['next_batch']}",
                                      token=alice)
        self.assertEqual(list(second.body["rooms"]["join"]), [room])
        self.assertEqual(asked[-1], [room])


class KnockTests(TestCase):
    async def test_knock_membership_appears_under_rooms_knock_with_stripped_state(
            self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        bob = (await server.register("bob"))["access_token"]
        created = await server.request("POST", V3 + "/createRoom", {
            "room_version": "10", "name": "Knock knock",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                               "content": {"join_rule": "knock"}}]}, token=alice)
        room = created.body["room_id"]
        first = await server.request("GET", V3 + "/sync", token=bob)
        # (No /knock endpoint yet: the knock goes through the engine's append path.)
        await server.hs.engine.append(room, NewEvent(
            "@bob:test.roost", "m.room.member", {"membership": "knock"}, "@bob:test.roost"))
        for since in (None, first.body["next_batch"]):
            path = "/sync" + (f"?since={since}" if since else "")
            resp = await server.request("GET", V3 + path, token=bob)
            state = resp.body["rooms"]["knock"][room]["knock_state"]["events"]
            by_key = {(e["type"], e["state_key"]): e for e in state}
            self.assertEqual(by_key[("m.room.name", "")]["content"], {"name": "Knock knock"})
            self.assertEqual(by_key[("m.room.member", "@bob:test.roost")]["content"]
                             ["membership"], "knock")
            self.assertNotIn("event_id", by_key[("m.room.name", "")])
            self.assertNotIn(room, resp.body["rooms"]["join"])
            self.assertNotIn(room, resp.body["rooms"]["invite"])
        later = await server.request("GET", V3 + f"/sync?since={resp.body['next_batch']}",
                                     token=bob)
        self.assertNotIn("knock", later.body["rooms"])
