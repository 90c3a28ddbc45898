"""POST /rooms/{roomId}/upgrade: the tombstone, the new room with the copied state and
its predecessor, the aliases moved, the old room restricted; then users on the other
server (Roost or Synapse) follow the tombstone into the new room."""

from __future__ import annotations

from urllib.parse import quote

from twisted.trial.unittest import TestCase

from tests.federation.synapse_harness import start_synapse, synapse_user
from tests.federation.two_servers import V3, eventually, eventually_slow, start_node, start_pair
from tests.server_harness import q


async def _state(node, user: str, room: str, event_type: str, key: str = "") -> dict:
    resp = await node.request("GET", f"{V3}/rooms/{q(room)}/state/{event_type}/{q(key)}",
                              user=user, expect=None)
    return resp.body if resp.status == 200 else {}


class RoomUpgradeTests(TestCase):
    timeout = 180

    async def test_upgrade_copies_state_moves_aliases_and_the_remote_member_follows(self) -> None:
        hs1, hs2 = await start_pair(self)
        alice = await hs1.register("alice")
        await hs1.register("mallory")
        bob = await hs2.register("bob")
        old = (await hs1.request("POST", f"{V3}/createRoom",
                                 {"preset": "public_chat", "room_version": "5", "name": "Old",
                                  "topic": "t", "room_alias_name": "town",
                                  "visibility": "public",
                                  "power_level_content_override": {"users": {alice: 100}}},
                                 user="alice"))["room_id"]
        await hs1.request("POST", f"{V3}/rooms/{q(old)}/join", {}, user="mallory")
        await hs2.request("POST", f"{V3}/join/{q(old)}?server_name={q(hs1.name)}", {},
                          user="bob")
        # Only those who may send the tombstone may upgrade; unknown versions are refused.
        denied = await hs1.request("POST", f"{V3}/rooms/{q(old)}/upgrade",
                                   {"new_version": "10"}, user="mallory", expect=None)
        self.assertEqual((denied.status, denied.body["errcode"]), (403, "M_FORBIDDEN"))
        bad = await hs1.request("POST", f"{V3}/rooms/{q(old)}/upgrade", {"new_version": "99"},
                                user="alice", expect=None)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_UNSUPPORTED_ROOM_VERSION"))

        new = (await hs1.request("POST", f"{V3}/rooms/{q(old)}/upgrade", {"new_version": "12"},
                                 user="alice"))["replacement_room"]
        tombstone = await _state(hs1, "alice", old, "m.room.tombstone")
        self.assertEqual(tombstone["replacement_room"], new)
        create = await _state(hs1, "alice", new, "m.room.create")
        self.assertEqual((create["room_version"], create["predecessor"]["room_id"]), ("12", old))
        self.assertEqual((await _state(hs1, "alice", new, "m.room.name"))["name"], "Old")
        self.assertEqual((await _state(hs1, "alice", new, "m.room.topic"))["topic"], "t")
        rules = await _state(hs1, "alice", new, "m.room.join_rules")
        self.assertEqual(rules["join_rule"], "public")
        alias = await hs1.request("GET", f"{V3}/directory/room/{q('#town:' + hs1.name)}")
        self.assertEqual(alias["room_id"], new)
        canonical = await _state(hs1, "alice", new, "m.room.canonical_alias")
        self.assertEqual(canonical["alias"], "#town:" + hs1.name)
        listed = await hs1.request("GET", f"{V3}/publicRooms")
        self.assertEqual([r["room_id"] for r in listed["chunk"]], [new])
        # The old room: ordinary members can no longer talk.
        muted = await hs1.request("PUT", f"{V3}/rooms/{q(old)}/send/m.room.message/m1",
                                  {"msgtype": "m.text", "body": "still here?"}, user="mallory",
                                  expect=None)
        self.assertEqual(muted.status, 403)

        # Bob on hs2 sees the tombstone and follows it.
        async def bob_sees_tombstone() -> bool:
            return (await _state(hs2, "bob", old, "m.room.tombstone")).get(
                "replacement_room") == new

        await eventually(bob_sees_tombstone)
        await hs2.request("POST", f"{V3}/join/{q(new)}?server_name={q(hs1.name)}", {},
                          user="bob")

        async def bob_joined() -> bool:
            return (await _state(hs1, "alice", new, "m.room.member", bob)).get(
                "membership") == "join"

        await eventually(bob_joined)


class SynapseRoomUpgradeTests(TestCase):
    timeout = 400

    async def test_both_servers_follow_an_upgrade_made_on_either(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("alice")
        bob = await roost.register("bob")
        carol_on_synapse = await synapse_user(synapse, "carol")
        carol, s = carol_on_synapse.user_id, carol_on_synapse.request

        # Upgraded on Roost, followed by Carol on Synapse.
        old = (await roost.request("POST", f"{V3}/createRoom",
                                   {"preset": "public_chat", "room_version": "9"},
                                   user="alice"))["room_id"]
        status, body = await s("POST", f"{V3}/join/{quote(old)}?server_name={roost.name}", {})
        self.assertEqual(status, 200, body)
        new = (await roost.request("POST", f"{V3}/rooms/{q(old)}/upgrade",
                                   {"new_version": "10"}, user="alice"))["replacement_room"]

        async def synapse_sees_tombstone() -> bool:
            status, body = await s("GET", f"{V3}/rooms/{quote(old)}/state/m.room.tombstone/")
            return status == 200 and body.get("replacement_room") == new

        await eventually_slow(synapse_sees_tombstone)
        status, body = await s("POST", f"{V3}/join/{quote(new)}?server_name={roost.name}", {})
        self.assertEqual(status, 200, body)
        await eventually_slow(lambda: _roost_member_is(roost, new, carol, "join"))

        # Upgraded on Synapse, followed by Bob on Roost.
        status, created = await s("POST", f"{V3}/createRoom",
                                  {"preset": "public_chat", "room_version": "9"})
        s_old = created["room_id"]
        await roost.request("POST", f"{V3}/join/{quote(s_old)}?server_name={synapse.name}", {},
                            user="bob")
        status, upgraded = await s("POST", f"{V3}/rooms/{quote(s_old)}/upgrade",
                                   {"new_version": "10"})
        self.assertEqual(status, 200, upgraded)
        s_new = upgraded["replacement_room"]

        async def roost_sees_tombstone() -> bool:
            resp = await roost.request(
                "GET", f"{V3}/rooms/{q(s_old)}/state/m.room.tombstone/", user="bob",
                expect=None)
            return resp.status == 200 and resp.body.get("replacement_room") == s_new

        await eventually_slow(roost_sees_tombstone)
        await roost.request("POST", f"{V3}/join/{quote(s_new)}?server_name={synapse.name}", {},
                            user="bob")

        await eventually_slow(lambda: carol_on_synapse.sees_joined(s_new, bob))


async def _roost_member_is(roost, room: str, user: str, membership: str) -> bool:
    resp = await roost.request("GET", f"{V3}/rooms/{q(room)}/state/m.room.member/{q(user)}",
                               user="alice", expect=None)
    return resp.status == 200 and resp.body.get("membership") == membership

