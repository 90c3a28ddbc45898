"""GET /room_summary/{roomIdOrAlias} and GET /mutual_rooms over real HTTP."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.server_harness import q, start_server

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"


class RoomSummaryTests(TestCase):
    async def test_summary_of_public_and_private_rooms(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        bob = (await server.register("bob"))["access_token"]
        public = (await server.request("POST", V3 + "/createRoom", {
            "preset": "public_chat", "name": "Town square", "topic": "all welcome",
            "room_alias_name": "square"}, token=alice)).body["room_id"]
        private = (await server.request("POST", V3 + "/createRoom", {"name": "Den"},
                                        token=alice)).body["room_id"]
        for token, target in ((bob, public), (None, public), (bob, "#square:test.roost")):
            resp = await server.request("GET", f"{V1}/room_summary/{q(target)}", token=token)
            self.assertEqual(resp.status, 200, resp.body)
            self.assertEqual((resp.body["room_id"], resp.body["name"], resp.body["topic"],
                              resp.body["join_rule"], resp.body["num_joined_members"]),
                             (public, "Town square", "all welcome", "public", 1))
            self.assertNotIn("membership", resp.body)
            self.assertNotIn("children_state", resp.body)
        for unstable in (f"/_matrix/client/unstable/im.nheko.summary/summary/{q(public)}",
                         f"/_matrix/client/unstable/im.nheko.summary/rooms/{q(public)}/summary"):
            resp = await server.request("GET", unstable, token=bob)
            self.assertEqual((resp.status, resp.body["room_id"]), (200, public))
        mine = await server.request("GET", f"{V1}/room_summary/{q(private)}", token=alice)
        self.assertEqual((mine.status, mine.body["membership"]), (200, "join"))
        for token in (bob, None):
            hidden = await server.request("GET", f"{V1}/room_summary/{q(private)}", token=token)
            self.assertEqual((hidden.status, hidden.body["errcode"]), (404, "M_NOT_FOUND"))
        await server.request("POST", f"{V3}/rooms/{q(private)}/invite",
                             {"user_id": "@bob:test.roost"}, token=alice)
        invited = await server.request("GET", f"{V1}/room_summary/{q(private)}", token=bob)
        self.assertEqual((invited.status, invited.body["membership"]), (200, "invite"))
        for target, status, errcode in (("!nope:test.roost", 404, "M_NOT_FOUND"),
                                        ("#nope:test.roost", 404, "M_NOT_FOUND"),
                                        ("garbage", 400, "M_INVALID_PARAM")):
            resp = await server.request("GET", f"{V1}/room_summary/{q(target)}", token=bob)
            self.assertEqual((resp.status, resp.body["errcode"]), (status, errcode), target)


class MutualRoomsTests(TestCase):
    async def test_rooms_both_users_are_joined_to(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        bob = (await server.register("bob"))["access_token"]
        shared = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                       token=alice)).body["room_id"]
        await server.request("POST", V3 + "/createRoom", {}, token=alice)
        await server.request("POST", f"{V3}/rooms/{q(shared)}/join", {}, token=bob)
        resp = await server.request("GET", f"{V1}/mutual_rooms?user_id={q('@bob:test.roost')}",
                                    token=alice)
        self.assertEqual((resp.status, resp.body), (200, {"joined": [shared], "count": 1}))
        nobody = await server.request(
            "GET", f"{V1}/mutual_rooms?user_id={q('@ghost:test.roost')}", token=alice)
        self.assertEqual(nobody.body, {"joined": [], "count": 0})
        for query in ("", f"user_id={q('@alice:test.roost')}", "user_id=bob",
                      f"user_id={q('@bob:test.roost')}&from=x"):
            bad = await server.request("GET", f"{V1}/mutual_rooms?{query}", token=alice)
            self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_INVALID_PARAM"), query)
