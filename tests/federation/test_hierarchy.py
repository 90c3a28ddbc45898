"""Spaces: GET /rooms/{roomId}/hierarchy (depth first, max_depth, suggested_only,
pagination, only rooms the user may see) and federation /hierarchy/{roomId}, across
two Roost servers and with a real Synapse."""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.federation.synapse_harness import start_synapse
from tests.federation.two_servers import V3, start_node, start_pair
from tests.server_harness import q

V1 = "/_matrix/client/v1"


async def _room(node, user: str, name: str, **body) -> str:
    return (await node.request("POST", f"{V3}/createRoom", {"name": name, **body},
                               user=user))["room_id"]


async def _child(node, user: str, parent: str, child: str, via: str, **content) -> None:
    await node.request("PUT", f"{V3}/rooms/{q(parent)}/state/m.space.child/{q(child)}",
                       {"via": [via], **content}, user=user)


class HierarchyTests(TestCase):
    timeout = 180

    async def test_walk_depth_suggested_pages_and_hidden_rooms_across_servers(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        await hs1.register("eve")
        await hs2.register("bob")
        space = await _room(hs1, "alice", "Space", preset="public_chat",
                            creation_content={"type": "m.space"})
        a = await _room(hs1, "alice", "A", preset="public_chat")
        b = await _room(hs1, "alice", "B", preset="public_chat")
        secret = await _room(hs1, "alice", "Secret", preset="private_chat")
        sub = await _room(hs1, "alice", "Sub", preset="public_chat",
                          creation_content={"type": "m.space"})
        deep = await _room(hs1, "alice", "Deep", preset="public_chat")
        remote = await _room(hs2, "bob", "Remote", preset="public_chat")
        await _child(hs1, "alice", space, b, hs1.name, order="b")
        await _child(hs1, "alice", space, a, hs1.name, order="a", suggested=True)
        await _child(hs1, "alice", space, secret, hs1.name)
        await _child(hs1, "alice", space, sub, hs1.name, order="c")
        await _child(hs1, "alice", sub, deep, hs1.name)
        await _child(hs1, "alice", sub, remote, hs2.name)

        def names(answer: dict) -> list[str]:
            return [r.get("name") for r in answer["rooms"]]

        # Alice sees everything, depth first, children by order then the unordered ones;
        # the room on hs2 is described by hs2 over federation.
        got = await hs1.request("GET", f"{V1}/rooms/{q(space)}/hierarchy", user="alice")
        self.assertEqual(names(got), ["Space", "A", "B", "Sub", "Deep", "Remote", "Secret"])
        top = got["rooms"][0]
        self.assertEqual((top["room_type"], top["num_joined_members"], top["join_rule"]),
                         ("m.space", 1, "public"))
        self.assertEqual(len(top["children_state"]), 4)
        self.assertIn("origin_server_ts", top["children_state"][0])
        # Eve is in none of the rooms: the invite-only one is hidden from her.
        got = await hs1.request("GET", f"{V1}/rooms/{q(space)}/hierarchy", user="eve")
        self.assertNotIn("Secret", names(got))
        # max_depth and suggested_only.
        got = await hs1.request("GET", f"{V1}/rooms/{q(space)}/hierarchy?max_depth=1",
                                user="alice")
        self.assertEqual(names(got), ["Space", "A", "B", "Sub", "Secret"])
        got = await hs1.request("GET", f"{V1}/rooms/{q(space)}/hierarchy?suggested_only=true",
                                user="alice")
        self.assertEqual(names(got), ["Space", "A"])
        # Pages of two, and a token used with other parameters is refused.
        seen: list[str] = []
        path = f"{V1}/rooms/{q(space)}/hierarchy?limit=2"
        page = await hs1.request("GET", path, user="alice")
        while True:
            seen += names(page)
            if "next_batch" not in page:
                break
            page = await hs1.request("GET", f"{path}&from={page['next_batch']}", user="alice")
        self.assertEqual(seen, ["Space", "A", "B", "Sub", "Deep", "Remote", "Secret"])
        first = await hs1.request("GET", path, user="alice")
        wrong = await hs1.request("GET", f"{path}&max_depth=1&from={first['next_batch']}",
                                  user="alice", expect=None)
        self.assertEqual((wrong.status, wrong.body["errcode"]), (400, "M_INVALID_PARAM"))
        for bad in ("limit=-1", "max_depth=-1", "suggested_only=maybe", "from=zzz"):
            resp = await hs1.request("GET", f"{V1}/rooms/{q(space)}/hierarchy?{bad}",
                                     user="alice", expect=None)
            self.assertEqual(resp.status, 400, bad)
        # A room the user may not see at the top is 403.
        hidden = await hs1.request("GET", f"{V1}/rooms/{q(secret)}/hierarchy", user="eve",
                                   expect=None)
        self.assertEqual((hidden.status, hidden.body["errcode"]), (403, "M_FORBIDDEN"))
        # Bob on hs2 joins the space and walks it: hs1 describes the rooms hs2 does not hold.
        await hs2.request("POST", f"{V3}/join/{q(space)}?server_name={q(hs1.name)}", {},
                          user="bob")
        got = await hs2.request("GET", f"{V1}/rooms/{q(space)}/hierarchy", user="bob")
        self.assertEqual(names(got), ["Space", "A", "B", "Sub", "Deep", "Remote"])
        # Federation /hierarchy: the room, its children, the ones the server may not see.
        fed = hs2.server.hs.federation.client
        answer = await fed.get_json(hs1.name, f"/_matrix/federation/v1/hierarchy/{q(space)}")
        self.assertEqual(answer["room"]["room_id"], space)
        self.assertEqual({c["room_id"] for c in answer["children"]}, {a, b, sub})
        self.assertEqual(answer["inaccessible_children"], [secret])


class SynapseHierarchyTests(TestCase):
    timeout = 300

    async def test_hierarchy_across_roost_and_synapse(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("alice")
        carol, token = await threads.deferToThread(synapse.register, "carol")

        async def s(method: str, path: str, body: object = None) -> tuple[int, dict]:
            return await threads.deferToThread(synapse.client, method, path, body, token)

        status, created = await s("POST", f"{V3}/createRoom",
                                  {"preset": "public_chat", "name": "Synapse room"})
        s_room = created["room_id"]
        space = await _room(roost, "alice", "Roost space", preset="public_chat",
                            creation_content={"type": "m.space"})
        local = await _room(roost, "alice", "Roost room", preset="public_chat")
        await _child(roost, "alice", space, local, roost.name)
        await _child(roost, "alice", space, s_room, synapse.name)
        # Roost describes Synapse's room by asking Synapse.
        got = await roost.request("GET", f"{V1}/rooms/{q(space)}/hierarchy", user="alice")
        self.assertEqual([r.get("name") for r in got["rooms"]],
                         ["Roost space", "Roost room", "Synapse room"])
        # Carol joins the space on Synapse, which walks it through Roost's /hierarchy.
        status, body = await s("POST", f"{V3}/join/{quote(space)}?server_name={roost.name}", {})
        self.assertEqual(status, 200, body)
        status, body = await s("GET", f"{V1}/rooms/{quote(space)}/hierarchy")
        self.assertEqual(status, 200, body)
        self.assertEqual({r.get("name") for r in body["rooms"]},
                         {"Roost space", "Roost room", "Synapse room"})
