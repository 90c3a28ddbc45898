"""The admin room endpoints: list, describe, members, state, block, shut down."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import TestCase

from tests.admin.test_users import V3, A, admin_and_user
from tests.server_harness import q


class AdminRoomTests(TestCase):
    async def _rooms(self, server, token):
        big = (await server.request("POST", V3 + "/createRoom", {
            "name": "Big room", "preset": "public_chat", "room_alias_name": "big"},
            token=token)).body["room_id"]
        small = (await server.request("POST", V3 + "/createRoom", {"name": "Small"},
                                      token=token)).body["room_id"]
        return big, small

    async def test_list_describe_members_and_state(self) -> None:
        server, admin, alice = await admin_and_user(self)
        big, small = await self._rooms(server, alice["access_token"])
        bob = await server.register("bob")
        await server.request("POST", f"{V3}/join/{q(big)}", {}, token=bob["access_token"])
        listed = await server.request("GET", f"{A}/v1/rooms?order_by=joined_members&dir=b",
                                      token=admin)
        self.assertEqual(listed.status, 200, listed.body)
        self.assertEqual(listed.body["total_rooms"], 2)
        first = listed.body["rooms"][0]
        self.assertEqual((first["room_id"], first["name"], first["joined_members"],
                          first["canonical_alias"], first["join_rules"], first["public"]),
                         (big, "Big room", 2, "#big:test.roost", "public", False))
        found = await server.request("GET", f"{A}/v1/rooms?search_term=smal", token=admin)
        self.assertEqual([r["room_id"] for r in found.body["rooms"]], [small])
        paged = await server.request("GET", f"{A}/v1/rooms?limit=1", token=admin)
        self.assertEqual((len(paged.body["rooms"]), paged.body["next_batch"]), (1, 1))
        detail = await server.request("GET", f"{A}/v1/rooms/{q(big)}", token=admin)
        self.assertEqual((detail.body["joined_local_members"], detail.body["creator"]),
                         (2, "@alice:test.roost"))
        self.assertNotIn("topic", detail.body)  # none set: left out, not null
        members = await server.request("GET", f"{A}/v1/rooms/{q(big)}/members", token=admin)
        self.assertEqual(members.body, {"members": ["@alice:test.roost", "@bob:test.roost"],
                                        "total": 2})
        state = await server.request("GET", f"{A}/v1/rooms/{q(big)}/state", token=admin)
        self.assertIn("m.room.create", [e["type"] for e in state.body["state"]])
        unknown = await server.request("GET", f"{A}/v1/rooms/{q('!nope:test.roost')}",
                                       token=admin)
        self.assertEqual((unknown.status, unknown.body["errcode"]), (404, "M_NOT_FOUND"))
        bad = await server.request("GET", f"{A}/v1/rooms?order_by=secret", token=admin)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_INVALID_PARAM"))

    async def test_a_blocked_room_cannot_be_joined(self) -> None:
        server, admin, alice = await admin_and_user(self)
        big, _small = await self._rooms(server, alice["access_token"])
        put = await server.request("PUT", f"{A}/v1/rooms/{q(big)}/block", {"block": True},
                                   token=admin)
        self.assertEqual(put.body, {"block": True})
        got = await server.request("GET", f"{A}/v1/rooms/{q(big)}/block", token=admin)
        self.assertEqual(got.body, {"block": True, "user_id": "@root:test.roost"})
        bob = await server.register("bob")
        join = await server.request("POST", f"{V3}/join/{q(big)}", {}, token=bob["access_token"])
        self.assertEqual((join.status, join.body["errcode"]), (403, "M_FORBIDDEN"))
        await server.request("PUT", f"{A}/v1/rooms/{q(big)}/block", {"block": False},
                             token=admin)
        join = await server.request("POST", f"{V3}/join/{q(big)}", {}, token=bob["access_token"])
        self.assertEqual(join.status, 200)
        bad = await server.request("PUT", f"{A}/v1/rooms/{q(big)}/block", {"block": "yes"},
                                   token=admin)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_BAD_JSON"))

    async def test_shutdown_moves_everyone_to_a_new_room_and_drops_aliases(self) -> None:
        server, admin, alice = await admin_and_user(self)
        big, _small = await self._rooms(server, alice["access_token"])
        bob = await server.register("bob")
        await server.request("POST", f"{V3}/join/{q(big)}", {}, token=bob["access_token"])
        resp = await server.request("DELETE", f"{A}/v1/rooms/{q(big)}", {
            "new_room_user_id": "@root:test.roost", "block": True, "purge": False,
            "message": "moved"}, token=admin)
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(sorted(resp.body["kicked_users"]),
                         ["@alice:test.roost", "@bob:test.roost"])
        self.assertEqual(resp.body["local_aliases"], ["#big:test.roost"])
        new_room = resp.body["new_room_id"]
        joined = await server.request("GET", V3 + "/joined_rooms", token=bob["access_token"])
        self.assertIn(new_room, joined.body["joined_rooms"])
        self.assertNotIn(big, joined.body["joined_rooms"])
        alias = await server.request("GET", f"{V3}/directory/room/{q('#big:test.roost')}")
        self.assertEqual(alias.status, 404)
        rejoin = await server.request("POST", f"{V3}/join/{q(big)}", {},
                                      token=bob["access_token"])
        self.assertEqual(rejoin.status, 403)

    async def test_v2_delete_runs_in_the_background_with_a_status(self) -> None:
        server, admin, alice = await admin_and_user(self)
        _big, small = await self._rooms(server, alice["access_token"])
        resp = await server.request("DELETE", f"{A}/v2/rooms/{q(small)}", {"purge": False},
                                    token=admin)
        delete_id = resp.body["delete_id"]
        for _ in range(100):
            status = await server.request("GET", f"{A}/v2/rooms/delete_status/{delete_id}",
                                          token=admin)
            if status.body["status"] == "complete":
                break
            await task.deferLater(server.hs.reactor, 0.02, lambda: None)
        self.assertEqual(status.body["status"], "complete")
        self.assertEqual(status.body["shutdown_room"]["kicked_users"], ["@alice:test.roost"])
        by_room = await server.request("GET", f"{A}/v2/rooms/{q(small)}/delete_status",
                                       token=admin)
        self.assertEqual([r["delete_id"] for r in by_room.body["results"]], [delete_id])

    async def test_a_purged_room_is_gone_from_the_database(self) -> None:
        server, admin, alice = await admin_and_user(self)
        big, small = await self._rooms(server, alice["access_token"])
        sent = await server.request("PUT", f"{V3}/rooms/{q(big)}/send/m.room.message/1",
                                    {"msgtype": "m.text", "body": "bad"},
                                    token=alice["access_token"])
        resp = await server.request("DELETE", f"{A}/v1/rooms/{q(big)}", {"block": True},
                                    token=admin)  # purge defaults to true
        self.assertEqual(resp.status, 200, resp.body)
        gone = await server.request("GET", f"{A}/v1/rooms/{q(big)}", token=admin)
        self.assertEqual(gone.status, 404)
        left = await server.hs.db.run("count", lambda txn: txn.query_one(
            "SELECT (SELECT count(*) FROM events WHERE room_id = %s)"
            " + (SELECT count(*) FROM current_state WHERE room_id = %s)"
            " + (SELECT count(*) FROM state_groups WHERE room_id = %s)"
            " + (SELECT count(*) FROM event_edges WHERE event_id = %s)",
            (big, big, big, sent.body["event_id"])))
        self.assertEqual(left[0], 0)
        event = await server.request("GET", f"{V3}/rooms/{q(big)}/event/"
                                            f"{q(sent.body['event_id'])}",
                                     token=alice["access_token"])
        self.assertIn(event.status, (403, 404))
        blocked = await server.request("GET", f"{A}/v1/rooms/{q(big)}/block", token=admin)
        self.assertEqual(blocked.body["block"], True)  # the block outlives the purge
        rejoin = await server.request("POST", f"{V3}/join/{q(big)}", {},
                                      token=alice["access_token"])
        self.assertEqual(rejoin.status, 403)
        # The other room is untouched and still works.
        again = await server.request("PUT", f"{V3}/rooms/{q(small)}/send/m.room.message/2",
                                     {"msgtype": "m.text", "body": "fine"},
                                     token=alice["access_token"])
        self.assertEqual(again.status, 200)
