"""POST /rooms/{roomId}/read_markers: m.fully_read, m.read and m.read.private."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.server_harness import q, start_server

V3 = "/_matrix/client/v3"


class ReadMarkerTests(TestCase):
    async def test_each_marker_lands_where_it_belongs(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        bob = (await server.register("bob"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=alice)).body["room_id"]
        await server.request("POST", f"{V3}/rooms/{q(room)}/join", {}, token=bob)
        first = (await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/1",
                                      {"msgtype": "m.text", "body": "one"},
                                      token=alice)).body["event_id"]
        second = (await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/2",
                                       {"msgtype": "m.text", "body": "two"},
                                       token=alice)).body["event_id"]
        resp = await server.request("POST", f"{V3}/rooms/{q(room)}/read_markers", {
            "m.fully_read": first, "m.read.private": second}, token=bob)
        self.assertEqual((resp.status, resp.body), (200, {}))
        fully = await server.request(
            "GET", f"{V3}/user/{q('@bob:test.roost')}/rooms/{q(room)}/account_data/m.fully_read",
            token=bob)
        self.assertEqual(fully.body, {"event_id": first})

        def receipts(body: dict) -> dict:
            events = body["rooms"]["join"][room]["ephemeral"]["events"]
            return next((e["content"] for e in events if e["type"] == "m.receipt"), {})

        mine = receipts((await server.request("GET", V3 + "/sync", token=bob)).body)
        self.assertIn("@bob:test.roost", mine.get(second, {}).get("m.read.private", {}))
        theirs = receipts((await server.request("GET", V3 + "/sync", token=alice)).body)
        self.assertNotIn("m.read.private", theirs.get(second, {}))
        public = await server.request("POST", f"{V3}/rooms/{q(room)}/read_markers",
                                      {"m.read": second}, token=bob)
        self.assertEqual(public.status, 200)
        theirs = receipts((await server.request("GET", V3 + "/sync", token=alice)).body)
        self.assertIn("@bob:test.roost", theirs[second]["m.read"])

    async def test_bad_markers_are_refused_and_change_nothing(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        carol = (await server.register("carol"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        event = (await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/1",
                                      {"msgtype": "m.text", "body": "one"},
                                      token=alice)).body["event_id"]
        path = f"{V3}/rooms/{q(room)}/read_markers"
        for token, body, status, errcode in (
            (alice, {"m.fully_read": 5}, 400, "M_BAD_JSON"),
            (alice, {"m.read.private": ["$x"]}, 400, "M_BAD_JSON"),
            (alice, {"m.fully_read": "$nope"}, 404, "M_NOT_FOUND"),
            (carol, {"m.fully_read": event}, 403, "M_FORBIDDEN"),
        ):
            resp = await server.request("POST", path, body, token=token)
            self.assertEqual((resp.status, resp.body["errcode"]), (status, errcode), body)
        for token in (alice, carol):
            got = await server.request(
                "GET", f"{V3}/user/{q('@alice:test.roost' if token == alice else '@carol:test.roost')}"
                f"/rooms/{q(room)}/account_data/m.fully_read", token=token)
            self.assertEqual(got.status, 404)
