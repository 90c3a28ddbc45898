"""Rooms spanning three Roost servers: every event reaches every other server in the room.

A room is created on A; a user of B joins; a user of C joins, either through
A (the creator) or through B (a server that did not create the room and must
pass C's join on to A). Messages sent on each server reach the users of the
other two, through /messages and /sync, and membership changes (a leave, a
kick) reach every server with a user in the room.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.federation.two_servers import V3, FedNode, eventually, room_events, start_node
from tests.server_harness import q


async def _membership(node: FedNode, room_id: str, user_id: str) -> str | None:
    assert node.server is not None
    return await node.server.hs.engine.membership(room_id, user_id)


async def _is(node: FedNode, room_id: str, user_id: str, membership: str) -> bool:
    return await _membership(node, room_id, user_id) == membership


async def _bodies(node: FedNode, user: str, room_id: str) -> list[str]:
    """Message bodies of the room's timeline through /messages, oldest first."""
    return [e["content"].get("body") for e in await room_events(node, user, room_id)
            if e["type"] == "m.room.message"]


async def _synced_bodies(node: FedNode, user: str, room_id: str) -> list[str]:
    """Message bodies of the room's timeline in a fresh /sync (a large timeline)."""
    flt = q('{"room": {"timeline": {"limit": 100}}}')
    body = await node.request("GET", f"{V3}/sync?timeout=0&filter={flt}", user=user)
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e["content"].get("body") for e in room.get("timeline", {}).get("events", [])
            if e["type"] == "m.room.message"]


class ThreeServerTests(TestCase):
    timeout = 180

    async def _three(self) -> tuple[FedNode, FedNode, FedNode, str, str, str]:
        a, b, c = await start_node(self), await start_node(self), await start_node(self)
        alice = await a.register("alice")
        bob = await b.register("bob")
        carol = await c.register("carol")
        return a, b, c, alice, bob, carol

    async def _room(self, a: FedNode) -> str:
        created = await a.request("POST", f"{V3}/createRoom",
                                  {"preset": "public_chat", "name": "Three"}, user="alice")
        return created["room_id"]

    async def _join(self, node: FedNode, user: str, room_id: str, via: FedNode) -> None:
        await node.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(via.name)}", {},
                           user=user)

    async def _all_joined(self, nodes: list[FedNode], room_id: str, users: list[str]) -> None:
        for node in nodes:
            for user in users:
                await eventually(lambda n=node, u=user: _is(n, room_id, u, "join"))

    async def _say(self, node: FedNode, user: str, room_id: str, body: str) -> None:
        await node.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/{body}",
                           {"msgtype": "m.text", "body": body}, user=user)

    async def _everyone_hears_everyone(self, room_id: str,
                                       speakers: list[tuple[FedNode, str]]) -> None:
        """Each speaker says a line; every other speaker's server shows it, twice over:
        in /messages and in /sync."""
        for node, user in speakers:
            await self._say(node, user, room_id, f"hello-from-{user}")
        for node, user in speakers:
            for _, other in speakers:
                line = f"hello-from-{other}"
                await eventually(lambda n=node, u=user, x=line: _contains(
                    _bodies(n, u, room_id), x))
                await eventually(lambda n=node, u=user, x=line: _contains(
                    _synced_bodies(n, u, room_id), x))

    async def test_two_servers_join_through_the_creator(self) -> None:
        a, b, c, alice, bob, carol = await self._three()
        room_id = await self._room(a)
        await self._join(b, "bob", room_id, a)
        await self._join(c, "carol", room_id, a)
        # A served C's join: B learns of it from A, C learns of B's from the state.
        await self._all_joined([a, b, c], room_id, [alice, bob, carol])
        await self._everyone_hears_everyone(room_id, [(a, "alice"), (b, "bob"), (c, "carol")])

        # B's user leaves: A and C (each still with a user joined) see it.
        await b.request("POST", f"{V3}/rooms/{q(room_id)}/leave", {}, user="bob")
        for node in (a, b, c):
            await eventually(lambda n=node: _is(n, room_id, bob, "leave"))
        # A's admin kicks C's user: A and C see it (B has nobody left in the room).
        await a.request("POST", f"{V3}/rooms/{q(room_id)}/kick", {"user_id": carol}, user="alice")
        for node in (a, c):
            await eventually(lambda n=node: _is(n, room_id, carol, "leave"))

    async def test_a_join_through_a_server_that_did_not_create_the_room(self) -> None:
        a, b, c, alice, bob, carol = await self._three()
        room_id = await self._room(a)
        await self._join(b, "bob", room_id, a)
        await eventually(lambda: _is(a, room_id, bob, "join"))
        # C asks B, not A: B serves make_join and send_join and must pass the join to A.
        await self._join(c, "carol", room_id, b)
        await self._all_joined([a, b, c], room_id, [alice, bob, carol])
        await self._everyone_hears_everyone(room_id, [(a, "alice"), (b, "bob"), (c, "carol")])

        # A's admin kicks C's user: all three see it.
        await a.request("POST", f"{V3}/rooms/{q(room_id)}/kick", {"user_id": carol}, user="alice")
        for node in (a, b, c):
            await eventually(lambda n=node: _is(n, room_id, carol, "leave"))
        # B's user leaves: A and B see it (C has nobody left in the room).
        await b.request("POST", f"{V3}/rooms/{q(room_id)}/leave", {}, user="bob")
        for node in (a, b):
            await eventually(lambda n=node: _is(n, room_id, bob, "leave"))
        # A's line after both left reaches neither B nor C any more, but A has it.
        await self._say(a, "alice", room_id, "alone")
        await eventually(lambda: _contains(_bodies(a, "alice", room_id), "alone"))

    async def test_the_resident_server_relays_a_join_it_served(self) -> None:
        """C's own sender is stopped, so A can learn of C's join only from B, which served
        it: the resident server passes a join it took on to the rest of the room."""
        a, b, c, alice, bob, carol = await self._three()
        room_id = await self._room(a)
        await self._join(b, "bob", room_id, a)
        await eventually(lambda: _is(a, room_id, bob, "join"))
        assert c.server is not None and c.server.hs.federation is not None
        assert c.server.hs.federation.sender is not None
        await c.server.hs.federation.sender.stop()
        await self._join(c, "carol", room_id, b)
        await eventually(lambda: _is(a, room_id, carol, "join"))
        # A's next line reaches C: A counts C among the room's servers.
        await self._say(a, "alice", room_id, "welcome-carol")
        await eventually(lambda: _contains(_bodies(c, "carol", room_id), "welcome-carol"))

    async def test_the_resident_server_relays_a_leave_it_served(self) -> None:
        """The same for /send_leave: C (its sender stopped) rejects A's invite through A,
        and B learns of it from A."""
        a, b, c, alice, bob, carol = await self._three()
        created = await a.request("POST", f"{V3}/createRoom", {"preset": "private_chat"},
                                  user="alice")
        room_id = created["room_id"]
        await a.request("POST", f"{V3}/rooms/{q(room_id)}/invite", {"user_id": bob},
                        user="alice")
        await self._join(b, "bob", room_id, a)
        await a.request("POST", f"{V3}/rooms/{q(room_id)}/invite", {"user_id": carol},
                        user="alice")
        await eventually(lambda: _is(b, room_id, carol, "invite"))
        assert c.server is not None and c.server.hs.federation is not None
        assert c.server.hs.federation.sender is not None
        await c.server.hs.federation.sender.stop()
        # C knows the room only through the invite: it leaves through the inviter's server.
        await c.request("POST", f"{V3}/rooms/{q(room_id)}/leave", {}, user="carol")
        self.assertEqual(await _membership(a, room_id, carol), "leave")
        await eventually(lambda: _is(b, room_id, carol, "leave"))

    async def test_a_server_that_joined_later_serves_history_to_a_third(self) -> None:
        """C joins through B after messages were sent on A and B: C reads them back."""
        a, b, c, alice, bob, carol = await self._three()
        room_id = await self._room(a)
        await self._join(b, "bob", room_id, a)
        await eventually(lambda: _is(a, room_id, bob, "join"))
        await self._say(a, "alice", room_id, "early-a")
        await eventually(lambda: _contains(_bodies(b, "bob", room_id), "early-a"))
        await self._say(b, "bob", room_id, "early-b")
        await eventually(lambda: _contains(_bodies(a, "alice", room_id), "early-b"))
        await self._join(c, "carol", room_id, b)
        await eventually(lambda: _contains(_bodies(c, "carol", room_id), "early-a"))
        await eventually(lambda: _contains(_bodies(c, "carol", room_id), "early-b"))


async def _contains(values: Any, wanted: str) -> bool:
    return wanted in await values
