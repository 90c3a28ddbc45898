"""Knocking: POST /knock locally and across servers (make_knock/send_knock), the knock
in the knocker's /sync (rooms.knock), accepting (invite) and refusing (kick) it; and a
Synapse user knocking on a Roost room and being let in."""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.federation.synapse_harness import start_synapse, synapse_user
from tests.federation.two_servers import V3, eventually, eventually_slow, start_node, start_pair
from tests.server_harness import q

KNOCK_RULES = [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]


async def _membership(node, user: str, room_id: str, target: str) -> str | None:
    resp = await node.request("GET", f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(target)}",
                              user=user, expect=None)
    return resp.body.get("membership") if resp.status == 200 else None


async def _is(node, user: str, room_id: str, target: str, membership: str) -> bool:
    return await _membership(node, user, room_id, target) == membership


class KnockingTests(TestCase):
    timeout = 180

    async def test_local_knock_is_refused_where_the_rules_say(self) -> None:
        hs1 = await start_node(self)
        await hs1.register("alice")
        carol = await hs1.register("carol")
        public = (await hs1.request("POST", f"{V3}/createRoom", {"preset": "public_chat"},
                                    user="alice"))["room_id"]
        refused = await hs1.request("POST", f"{V3}/knock/{q(public)}", {}, user="carol",
                                    expect=None)
        self.assertEqual((refused.status, refused.body["errcode"]), (403, "M_FORBIDDEN"))
        old = (await hs1.request("POST", f"{V3}/createRoom",
                                 {"room_version": "6", "initial_state": KNOCK_RULES},
                                 user="alice", expect=None))
        # v6 has no knock join rule: the room is created, knocking on it is refused.
        self.assertEqual(old.status, 200, old.body)
        refused = await hs1.request("POST", f"{V3}/knock/{q(old.body['room_id'])}", {},
                                    user="carol", expect=None)
        self.assertEqual(refused.status, 403)
        room = (await hs1.request("POST", f"{V3}/createRoom", {"initial_state": KNOCK_RULES},
                                  user="alice"))["room_id"]
        knocked = await hs1.request("POST", f"{V3}/knock/{q(room)}", {"reason": "let me in"},
                                    user="carol")
        self.assertEqual(knocked, {"room_id": room})
        self.assertEqual(await _membership(hs1, "alice", room, carol), "knock")
        again = await hs1.request("POST", f"{V3}/knock/{q('!nope:' + hs1.name)}", {},
                                  user="carol", expect=None)
        self.assertEqual(again.status, 404)
        bad = await hs1.request("POST", f"{V3}/knock/{q(room)}", {"reason": 5}, user="carol",
                                expect=None)
        self.assertEqual((bad.status, bad.body["errcode"]), (400, "M_INVALID_PARAM"))

    async def test_remote_knock_accepted_then_another_refused(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        dave = await hs2.register("dave")
        room = (await hs1.request("POST", f"{V3}/createRoom",
                                  {"initial_state": KNOCK_RULES, "name": "Knock knock"},
                                  user="alice"))["room_id"]
        await hs2.request("POST", f"{V3}/knock/{q(room)}?server_name={q(hs1.name)}",
                          {"reason": "hi"}, user="bob")
        await eventually(lambda: _is(hs1, "alice", room, bob, "knock"))

        sync = await hs2.request("GET", f"{V3}/sync?timeout=0", user="bob")
        knock = sync["rooms"]["knock"][room]["knock_state"]["events"]
        self.assertIn("Knock knock", [e["content"].get("name") for e in knock])

        await hs1.request("POST", f"{V3}/rooms/{q(room)}/invite", {"user_id": bob}, user="alice")
        await hs2.request("POST", f"{V3}/join/{q(room)}?server_name={q(hs1.name)}", {},
                          user="bob")
        await eventually(lambda: _is(hs1, "alice", room, bob, "join"))

        await hs2.request("POST", f"{V3}/knock/{q(room)}?server_name={q(hs1.name)}", {},
                          user="dave")
        await eventually(lambda: _is(hs1, "alice", room, dave, "knock"))
        await hs1.request("POST", f"{V3}/rooms/{q(room)}/kick", {"user_id": dave},
                          user="alice")
        await eventually(lambda: _is(hs1, "alice", room, dave, "leave"))


class SynapseKnockTests(TestCase):
    timeout = 300

    async def test_a_synapse_user_knocks_on_a_roost_room_and_is_let_in(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("alice")
        room = (await roost.request("POST", f"{V3}/createRoom",
                                    {"initial_state": KNOCK_RULES, "room_version": "10"},
                                    user="alice"))["room_id"]
        carol, token = await threads.deferToThread(synapse.register, "carol")
        status, body = await threads.deferToThread(
            synapse.client, "POST", f"{V3}/knock/{quote(room)}?server_name={roost.name}",
            {"reason": "please"}, token)
        self.assertEqual(status, 200, body)
        await eventually_slow(lambda: _is(roost, "alice", room, carol, "knock"))
        await roost.request("POST", f"{V3}/rooms/{q(room)}/invite", {"user_id": carol},
                            user="alice")
        status, body = await threads.deferToThread(
            synapse.client, "POST", f"{V3}/join/{quote(room)}?server_name={roost.name}", {},
            token)
        self.assertEqual(status, 200, body)
        await eventually_slow(lambda: _is(roost, "alice", room, carol, "join"))


class RoostKnocksOnSynapseTests(TestCase):
    timeout = 300

    async def test_a_roost_user_knocks_on_a_synapse_room_and_is_let_in(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        bob = await roost.register("bob")
        carol_on_synapse = await synapse_user(synapse, "carol")
        carol = carol_on_synapse.user_id
        status, created = await carol_on_synapse.request(
            "POST", f"{V3}/createRoom",
            {"room_version": "10", "initial_state": KNOCK_RULES, "name": "Knock here"})
        self.assertEqual(status, 200, created)
        room = created["room_id"]
        await roost.request("POST", f"{V3}/knock/{q(room)}?server_name={q(synapse.name)}",
                            {"reason": "hello"}, user="bob")
        sync = await roost.request("GET", f"{V3}/sync?timeout=0", user="bob")
        knock_state = sync["rooms"]["knock"][room]["knock_state"]["events"]
        self.assertIn("Knock here", [e["content"].get("name") for e in knock_state])

        async def synapse_sees_knock() -> bool:
            status, member = await carol_on_synapse.request(
                "GET", f"{V3}/rooms/{quote(room)}/state/m.room.member/{quote(bob)}")
            return status == 200 and member.get("membership") == "knock"

        await eventually_slow(synapse_sees_knock)
        status, body = await carol_on_synapse.request("POST", f"{V3}/rooms/{quote(room)}/invite",
                                           {"user_id": bob})
        self.assertEqual(status, 200, body)

        async def invited() -> bool:
            sync = await roost.request("GET", f"{V3}/sync?timeout=0", user="bob")
            return room in sync.get("rooms", {}).get("invite", {})

        await eventually_slow(invited)
        await roost.request("POST", f"{V3}/join/{q(room)}?server_name={q(synapse.name)}", {},
                            user="bob")

        await eventually_slow(lambda: carol_on_synapse.sees_joined(room, bob))
        self.assertTrue(carol)

