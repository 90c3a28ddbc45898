"""Bounded work and bad input: every limit validated and capped, length and depth caps, NUL
characters refused before storage, no scan of a whole room, and a Matrix error (never a
500) for each bad input found by hand."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from roost.client_api import messages as messages_module
from roost.client_api import presence as presence_module
from roost.client_api.presence import PresenceTracker
from roost.storage.notifier import Notifier
from roost.storage.streams import StreamIdGenerator
from tests.client_api.test_rooms_http import assert_error, count_rows, start_users
from tests.server_harness import q


def _deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


class LimitTests(TestCase):
    async def test_negative_limits_are_400_and_huge_ones_are_capped(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        event_id = await alice.send(room, "one")
        r = f"/rooms/{q(room)}"
        for path in (f"{r}/context/{q(event_id)}?limit=-1",
                     f"/_matrix/client/v1/rooms/{q(room)}/relations/{q(event_id)}?limit=-5",
                     f"/_matrix/client/v1/rooms/{q(room)}/threads?limit=-1",
                     f"{r}/messages?dir=b&limit=-3",
                     f"{r}/context/{q(event_id)}?limit=x",
                     f"{r}/messages?dir=b&filter={q(json.dumps({'limit': True}))}",
                     f"{r}/messages?dir=b&filter={q(json.dumps({'limit': -2}))}"):
            assert_error(self, await alice.call("GET", path), 400, "M_INVALID_PARAM")
        for path in (f"{r}/context/{q(event_id)}?limit=99999999999999999999",
                     f"/_matrix/client/v1/rooms/{q(room)}/relations/{q(event_id)}?limit=10000000",
                     f"/_matrix/client/v1/rooms/{q(room)}/threads?limit=10000000",
                     f"{r}/messages?dir=b&limit=10000000"):
            resp = await alice.call("GET", path)
            self.assertEqual(resp.status, 200, (path, resp.body))

    async def test_sync_timeline_limit_is_capped(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        for i in range(110):
            await alice.send(room, f"m{i}")
        flt = json.dumps({"room": {"timeline": {"limit": 5000}}})
        body = await alice.ok("GET", f"/sync?filter={q(flt)}")
        timeline = body["rooms"]["join"][room]["timeline"]
        self.assertEqual(len(timeline["events"]), 100)
        self.assertTrue(timeline["limited"])

    async def test_public_rooms_pages_are_cut_and_capped(self) -> None:
        (alice,) = await start_users(self, "alice")
        for name in ("one cat", "two dogs", "three cats"):
            await alice.create_room(preset="public_chat", visibility="public", name=name)
        page = await alice.ok("POST", "/publicRooms", {"limit": 2})
        self.assertEqual((len(page["chunk"]), page["total_room_count_estimate"],
                          page["next_batch"]), (2, 3, "p2"))
        rest = await alice.ok("POST", "/publicRooms", {"limit": 2, "since": page["next_batch"]})
        self.assertEqual((len(rest["chunk"]), rest.get("next_batch")), (1, None))
        cats = await alice.ok("POST", "/publicRooms", {
            "limit": 10 ** 9, "filter": {"generic_search_term": "CAT"}})
        self.assertEqual(sorted(r["name"] for r in cats["chunk"]), ["one cat", "three cats"])
        assert_error(self, await alice.call("POST", "/publicRooms", {"limit": -1}), 400,
                     "M_INVALID_PARAM")


class WildcardFilterTests(TestCase):
    async def test_a_wildcard_filter_scans_a_bounded_window_and_continues(self) -> None:
        self.patch(messages_module, "_SCAN_BATCH", 10)
        self.patch(messages_module, "MAX_SCANNED", 30)
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        await alice.send(room, "rare", event_type="x.rare")
        for i in range(60):
            await alice.send(room, f"m{i}")
        flt = json.dumps({"types": ["x.*"]})
        first = await alice.messages(room, filter=flt, limit=5)
        self.assertEqual(first["chunk"], [])  # only 30 events looked at
        self.assertIn("end", first)
        found: list[str] = []
        token = first["end"]
        for _ in range(5):
            page = await alice.messages(room, filter=flt, limit=5, **{"from": token})
            found += [e["type"] for e in page["chunk"]]
            if "end" not in page:
                break
            token = page["end"]
        self.assertEqual(found, ["x.rare"])


class BadInputTests(TestCase):
    async def test_json_nested_too_deep_is_bad_json_and_stores_nothing(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        before = await count_rows(alice.server, "events")
        for depth in (401, 10_000, 100_000):
            resp = await alice.call("PUT", f"/rooms/{q(room)}/send/m.room.message/deep{depth}",
                                    raw=_deep(depth).encode())
            assert_error(self, resp, 400, "M_BAD_JSON")
        self.assertEqual(await count_rows(alice.server, "events"), before)
        ok = await alice.call("PUT", f"/rooms/{q(room)}/send/m.room.message/deep399",
                              raw=_deep(50).encode())
        self.assertEqual(ok.status, 200, ok.body)

    async def test_nul_characters_are_refused_before_storage(self) -> None:
        (alice,) = await start_users(self, "alice")
        room = await alice.create_room()
        before = await count_rows(alice.server, "events")
        resp = await alice.call("PUT", f"/profile/{q(alice.user_id)}/displayname",
                                {"displayname": "a\x00b"})
        assert_error(self, resp, 400, "M_BAD_JSON")
        resp = await alice.call("PUT", f"/rooms/{q(room)}/send/m.room.message/nul",
                                {"msgtype": "m.text", "body": "x\x00"})
        assert_error(self, resp, 400, "M_BAD_JSON")
        resp = await alice.call("GET", "/rooms/!a%00b:test.roost/state")
        assert_error(self, resp, 400, "M_INVALID_PARAM")
        resp = await alice.call("POST", "/join/!a%00b:test.roost", {})
        assert_error(self, resp, 400, "M_INVALID_PARAM")
        resp = await alice.call("GET", f"/rooms/{q(room)}/messages?dir=b&from=s1%00")
        assert_error(self, resp, 400, "M_INVALID_PARAM")
        self.assertEqual(await count_rows(alice.server, "events"), before)
        profile = await alice.ok("GET", f"/profile/{q(alice.user_id)}")
        self.assertNotIn("\x00", json.dumps(profile))

    async def test_a_non_string_uia_session_is_400(self) -> None:
        alice, _ = await start_users(self, "alice", "bob")
        for session in (5, ["x"], {"a": 1}, True):
            auth = {"type": "m.login.password", "session": session, "password": "hunter2-pw",
                    "identifier": {"type": "m.id.user", "user": alice.user_id}}
            for method, path, body in (
                    ("DELETE", f"/devices/{alice.device_id}", {"auth": auth}),
                    ("POST", "/delete_devices", {"devices": [alice.device_id], "auth": auth}),
                    ("POST", "/register", {"username": "carol", "password": "pw-pw-pw-pw",
                                           "auth": {"type": "m.login.dummy",
                                                    "session": session}})):
                resp = await alice.call(method, path, body)
                self.assertEqual(resp.status, 400, (method, path, session, resp.body))
        self.assertEqual((await alice.call("GET", "/account/whoami")).status, 200)

    async def test_a_room_id_with_a_bad_port_is_400_not_502(self) -> None:
        (alice,) = await start_users(self, "alice")
        for room in ("!abc:example.org:99999", "!abc:example.org:0x50", "!abc:[::1:80"):
            resp = await alice.call("POST", f"/join/{q(room)}", {})
            self.assertEqual(resp.status, 400, (room, resp.body))
            resp = await alice.call("POST", f"/join/{q(room)}?server_name=x.org:70000", {})
            self.assertEqual(resp.status, 400, (room, resp.body))


class PresenceBoundsTests(TestCase):
    async def test_status_message_length_is_capped(self) -> None:
        (alice,) = await start_users(self, "alice")
        path = f"/presence/{q(alice.user_id)}/status"
        resp = await alice.call("PUT", path, {"presence": "online", "status_msg": "x" * 1_000_000})
        assert_error(self, resp, 400, "M_INVALID_PARAM")
        self.assertNotIn("status_msg", await alice.ok("GET", path))
        await alice.ok("PUT", path, {"presence": "online", "status_msg": "x" * 1024})

    async def test_presence_is_readable_only_by_users_sharing_a_room(self) -> None:
        alice, bob = await start_users(self, "alice", "bob")
        path = f"/presence/{q(alice.user_id)}/status"
        await alice.ok("PUT", path, {"presence": "online", "status_msg": "here"})
        assert_error(self, await bob.call("GET", path), 403, "M_FORBIDDEN")
        room = await alice.create_room(preset="public_chat")
        await bob.join(room)
        self.assertEqual((await bob.ok("GET", path))["status_msg"], "here")
        await bob.leave(room)
        assert_error(self, await bob.call("GET", path), 403, "M_FORBIDDEN")

    async def test_remote_presence_is_bounded(self) -> None:
        self.patch(presence_module, "MAX_TRACKED_USERS", 10)
        tracker = PresenceTracker(Clock(), Notifier(), StreamIdGenerator(0))
        self.addCleanup(tracker.stop)
        for i in range(10):
            await tracker.set_remote_presence(f"@u{i}:remote.org", "offline", None)
        for i in range(20):
            await tracker.set_remote_presence(f"@n{i}:remote.org", "online", "hi")
        self.assertLessEqual(len(tracker._users), 10)
        self.assertEqual(tracker.get("@n0:remote.org")["presence"], "online")
        from roost.http.errors import MatrixError

        with self.assertRaises(MatrixError):
            await tracker.set_remote_presence("@n0:remote.org", "online", "x" * 5000)

