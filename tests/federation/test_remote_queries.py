"""What clients ask about another server, answered by that server over federation:
its aliases (query/directory), its users' profiles (query/profile, cached) and its
public room directory (/publicRooms?server=). Two real Roost servers on loopback."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.federation.two_servers import V3, eventually, start_pair
from tests.server_harness import q


class RemoteQueriesTests(TestCase):
    timeout = 120

    async def test_remote_alias_profile_and_public_rooms(self) -> None:
        hs1, hs2 = await start_pair(self)
        alice = await hs1.register("alice")
        await hs2.register("bob")
        created = await hs1.request("POST", V3 + "/createRoom",
                                    {"preset": "public_chat", "room_alias_name": "lobby",
                                     "name": "The lobby", "visibility": "public"}, user="alice")
        room_id = created["room_id"]

        # Another server's alias: asked of that server.
        alias = f"#lobby:{hs1.name}"
        found = await hs2.request("GET", f"{V3}/directory/room/{q(alias)}", user="bob")
        self.assertEqual(found["room_id"], room_id)
        self.assertIn(hs1.name, found["servers"])
        missing = await hs2.request("GET", f"{V3}/directory/room/{q('#nope:' + hs1.name)}",
                                    user="bob", expect=None)
        self.assertEqual((missing.status, missing.body["errcode"]), (404, "M_NOT_FOUND"))

        # Another server's user: the profile comes from that server, then from the cache.
        await hs1.request("PUT", f"{V3}/profile/{q(alice)}/displayname",
                          {"displayname": "Alice A."}, user="alice")
        profile = await hs2.request("GET", f"{V3}/profile/{q(alice)}", user="bob")
        self.assertEqual(profile["displayname"], "Alice A.")
        name = await hs2.request("GET", f"{V3}/profile/{q(alice)}/displayname", user="bob")
        self.assertEqual(name, {"displayname": "Alice A."})
        nobody = await hs2.request("GET", f"{V3}/profile/{q('@nobody:' + hs1.name)}",
                                   user="bob", expect=None)
        self.assertEqual((nobody.status, nobody.body["errcode"]), (404, "M_NOT_FOUND"))
        await hs1.stop()  # the cached profile still answers while its server is away
        cached = await hs2.request("GET", f"{V3}/profile/{q(alice)}", user="bob")
        self.assertEqual(cached["displayname"], "Alice A.")
        await hs1.start()

        # Another server's room directory, by GET and by POST with a filter.
        listed = await hs2.request("GET", f"{V3}/publicRooms?server={q(hs1.name)}", user="bob")
        self.assertEqual([r["room_id"] for r in listed["chunk"]], [room_id])
        self.assertEqual(listed["chunk"][0]["name"], "The lobby")
        searched = await hs2.request("POST", f"{V3}/publicRooms?server={q(hs1.name)}",
                                     {"filter": {"generic_search_term": "lobby"}, "limit": 5},
                                     user="bob")
        self.assertEqual([r["room_id"] for r in searched["chunk"]], [room_id])
        none = await hs2.request("POST", f"{V3}/publicRooms?server={q(hs1.name)}",
                                 {"filter": {"generic_search_term": "zzz"}}, user="bob")
        self.assertEqual(none["chunk"], [])
        bad = await hs2.request("GET", f"{V3}/publicRooms?server={q(hs1.name)}&limit=-1",
                                user="bob", expect=None)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_INVALID_PARAM"))


class CreateRoomRemoteInviteTests(TestCase):
    timeout = 120

    async def test_create_room_invites_remote_users_over_federation(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        created = await hs1.request("POST", V3 + "/createRoom",
                                    {"preset": "private_chat", "invite": [bob],
                                     "is_direct": True}, user="alice")
        room_id = created["room_id"]
        member = await hs1.request(
            "GET", f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(bob)}", user="alice")
        self.assertEqual(member["membership"], "invite")
        self.assertIs(member.get("is_direct"), True)

        async def invited() -> bool:
            sync = await hs2.request("GET", f"{V3}/sync?timeout=0", user="bob")
            return room_id in sync.get("rooms", {}).get("invite", {})

        await eventually(invited)
        await hs2.request("POST", f"{V3}/rooms/{q(room_id)}/join", {}, user="bob")

        async def joined() -> bool:
            resp = await hs1.request("GET", f"{V3}/rooms/{q(room_id)}/joined_members",
                                     user="alice")
            return bob in resp.get("joined", {})

        await eventually(joined)
