"""Restricted joins: the allow list checked against the rooms (spaces) the user is in,
join_authorised_via_users_server chosen and signed by the resident server; locally,
between two Roost servers, and with a real Synapse both ways."""

from __future__ import annotations

from urllib.parse import quote

from twisted.trial.unittest import TestCase

from tests.federation.synapse_harness import start_synapse, synapse_user
from tests.federation.two_servers import V3, eventually, eventually_slow, start_node, start_pair
from tests.server_harness import q


def restricted_to(space_id: str, rule: str = "restricted") -> list[dict]:
    return [{"type": "m.room.join_rules", "state_key": "",
             "content": {"join_rule": rule,
                         "allow": [{"type": "m.room_membership", "room_id": space_id}]}}]


async def _member(node, user: str, room_id: str, target: str) -> dict:
    resp = await node.request("GET", f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(target)}",
                              user=user, expect=None)
    return resp.body if resp.status == 200 else {}


class RestrictedJoinTests(TestCase):
    timeout = 180

    async def test_local_and_remote_users_of_the_space_may_join_others_not(self) -> None:
        hs1, hs2 = await start_pair(self)
        alice = await hs1.register("alice")
        carol = await hs1.register("carol")
        bob = await hs2.register("bob")
        dave = await hs2.register("dave")
        space = (await hs1.request("POST", f"{V3}/createRoom",
                                   {"preset": "public_chat", "creation_content":
                                    {"type": "m.space"}}, user="alice"))["room_id"]
        room = (await hs1.request("POST", f"{V3}/createRoom",
                                  {"initial_state": restricted_to(space)},
                                  user="alice"))["room_id"]
        # Carol is in no allowed room: refused; once in the space, let in, vouched by Alice.
        refused = await hs1.request("POST", f"{V3}/rooms/{q(room)}/join", {}, user="carol",
                                    expect=None)
        self.assertEqual((refused.status, refused.body["errcode"]), (403, "M_FORBIDDEN"))
        await hs1.request("POST", f"{V3}/rooms/{q(space)}/join", {}, user="carol")
        await hs1.request("POST", f"{V3}/rooms/{q(room)}/join", {}, user="carol")
        member = await _member(hs1, "alice", room, carol)
        self.assertEqual((member["membership"], member["join_authorised_via_users_server"]),
                         ("join", alice))
        # Bob of hs2 joins the space, then the room through hs1, which vouches and signs.
        await hs2.request("POST", f"{V3}/join/{q(space)}?server_name={q(hs1.name)}", {},
                          user="bob")
        await eventually(lambda: _is_joined(hs1, room=space, target=bob))
        await hs2.request("POST", f"{V3}/join/{q(room)}?server_name={q(hs1.name)}", {},
                          user="bob")
        await eventually(lambda: _is_joined(hs1, room=room, target=bob))
        member = await _member(hs1, "alice", room, bob)
        self.assertEqual(member["join_authorised_via_users_server"], alice)
        # Dave of hs2 is not in the space: hs1 will not vouch for him.
        refused = await hs2.request("POST", f"{V3}/join/{q(room)}?server_name={q(hs1.name)}",
                                    {}, user="dave", expect=None)
        self.assertEqual(refused.status, 403, refused.body)
        self.assertEqual(await _member(hs1, "alice", room, dave), {})


async def _is_joined(node, room: str, target: str) -> bool:
    return (await _member(node, "alice", room, target)).get("membership") == "join"


class SynapseRestrictedJoinTests(TestCase):
    timeout = 400

    async def test_space_members_on_each_server_join_the_others_restricted_room(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("alice")
        bob = await roost.register("bob")
        carol_on_synapse = await synapse_user(synapse, "carol")
        carol, s = carol_on_synapse.user_id, carol_on_synapse.request

        # A Roost space and restricted room; Carol (Synapse) joins the space, then the room.
        space = (await roost.request("POST", f"{V3}/createRoom",
                                     {"preset": "public_chat", "room_version": "9"},
                                     user="alice"))["room_id"]
        room = (await roost.request("POST", f"{V3}/createRoom",
                                    {"room_version": "9", "initial_state": restricted_to(space)},
                                    user="alice"))["room_id"]
        status, body = await s("POST", f"{V3}/join/{quote(space)}?server_name={roost.name}", {})
        self.assertEqual(status, 200, body)
        await eventually_slow(lambda: _roost_has(roost, space, carol))
        status, body = await s("POST", f"{V3}/join/{quote(room)}?server_name={roost.name}", {})
        self.assertEqual(status, 200, body)
        await eventually_slow(lambda: _roost_has(roost, room, carol))

        # A Synapse space and restricted room; Bob (Roost) joins the space, then the room.
        status, created = await s("POST", f"{V3}/createRoom",
                                  {"preset": "public_chat", "room_version": "10"})
        self.assertEqual(status, 200, created)
        s_space = created["room_id"]
        status, created = await s("POST", f"{V3}/createRoom",
                                  {"room_version": "10",
                                   "initial_state": restricted_to(s_space)})
        self.assertEqual(status, 200, created)
        s_room = created["room_id"]
        await roost.request("POST", f"{V3}/join/{quote(s_space)}?server_name={synapse.name}", {},
                            user="bob")
        joined = await roost.request(
            "POST", f"{V3}/join/{quote(s_room)}?server_name={synapse.name}", {}, user="bob")
        self.assertEqual(joined["room_id"], s_room)

        await eventually_slow(lambda: carol_on_synapse.sees_joined(s_room, bob))


async def _roost_has(roost, room: str, user: str) -> bool:
    resp = await roost.request("GET", f"{V3}/rooms/{q(room)}/joined_members", user="alice")
    return user in resp.get("joined", {})



class RefusalStatusTests(TestCase):
    timeout = 120

    async def test_a_remote_make_join_refusal_keeps_its_status(self) -> None:
        """hs1 cannot vouch for a join to a room restricted to a room it does not hold:
        its 400 M_UNABLE_TO_AUTHORISE_JOIN reaches hs2's client as that 400, not a 502;
        an invite-only room's 403 stays 403."""
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        await hs2.register("bob")
        room = (await hs1.request("POST", f"{V3}/createRoom",
                                  {"initial_state": restricted_to("!elsewhere:nowhere.test")},
                                  user="alice"))["room_id"]
        refused = await hs2.request("POST", f"{V3}/join/{q(room)}?server_name={q(hs1.name)}",
                                    {}, user="bob", expect=None)
        self.assertEqual((refused.status, refused.body["errcode"]),
                         (400, "M_UNABLE_TO_AUTHORISE_JOIN"))
        private = (await hs1.request("POST", f"{V3}/createRoom", {"preset": "private_chat"},
                                     user="alice"))["room_id"]
        refused = await hs2.request("POST", f"{V3}/join/{q(private)}?server_name={q(hs1.name)}",
                                    {}, user="bob", expect=None)
        self.assertEqual(refused.status, 403)
