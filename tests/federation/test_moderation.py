"""Kicks and bans across two Roost servers: the kicked or banned server learns it, and a
banned user cannot rejoin."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.federation.two_servers import V3, FedNode, eventually, start_pair
from tests.server_harness import q


async def _membership(node: FedNode, room_id: str, user_id: str) -> str | None:
    assert node.server is not None
    return await node.server.hs.engine.membership(room_id, user_id)


class KicksAndBansTests(TestCase):
    timeout = 120

    async def _joined_pair(self) -> tuple[FedNode, FedNode, str, str]:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        bob = await hs2.register("bob")
        created = await hs1.request("POST", f"{V3}/createRoom",
                                    {"preset": "public_chat", "name": "Moderated"}, user="alice")
        room_id = created["room_id"]
        await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                          user="bob")
        await eventually(lambda: self._is(hs1, room_id, bob, "join"))
        return hs1, hs2, room_id, bob

    async def _is(self, node: FedNode, room_id: str, user_id: str, membership: str) -> bool:
        return await _membership(node, room_id, user_id) == membership

    async def test_a_kicked_remote_user_learns_it_and_may_rejoin(self) -> None:
        hs1, hs2, room_id, bob = await self._joined_pair()
        await hs1.request("POST", f"{V3}/rooms/{q(room_id)}/kick",
                          {"user_id": bob, "reason": "cool off"}, user="alice")
        self.assertEqual(await _membership(hs1, room_id, bob), "leave")
        await eventually(lambda: self._is(hs2, room_id, bob, "leave"))
        joined = await hs2.request("GET", f"{V3}/joined_rooms", user="bob")
        self.assertNotIn(room_id, joined["joined_rooms"])

        await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                          user="bob")
        await eventually(lambda: self._is(hs1, room_id, bob, "join"))

    async def test_a_banned_remote_user_learns_it_and_cannot_rejoin(self) -> None:
        hs1, hs2, room_id, bob = await self._joined_pair()
        await hs1.request("POST", f"{V3}/rooms/{q(room_id)}/ban",
                          {"user_id": bob, "reason": "enough"}, user="alice")
        self.assertEqual(await _membership(hs1, room_id, bob), "ban")
        await eventually(lambda: self._is(hs2, room_id, bob, "ban"))

        refused: Any = await hs2.request(
            "POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {}, user="bob",
            expect=None)
        self.assertEqual(refused.status, 403, refused.body)
        self.assertEqual(await _membership(hs1, room_id, bob), "ban")

        # Unbanned, the user may come back at once: the rejoin is judged on the state the
        # resident returns from send_join, whether or not the unban has reached the
        # user's server yet (its copy may still say "ban").
        await hs1.request("POST", f"{V3}/rooms/{q(room_id)}/unban", {"user_id": bob},
                          user="alice")
        await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                          user="bob")
        await eventually(lambda: self._is(hs1, room_id, bob, "join"))

    async def test_a_rejoin_after_an_unban_that_never_reached_the_users_server(self) -> None:
        """The banned user's server still holds the ban (the resident's sender is stopped,
        so the unban never leaves it): the rejoin goes by the resident's state."""
        hs1, hs2, room_id, bob = await self._joined_pair()
        await hs1.request("POST", f"{V3}/rooms/{q(room_id)}/ban", {"user_id": bob},
                          user="alice")
        await eventually(lambda: self._is(hs2, room_id, bob, "ban"))
        assert hs1.server is not None and hs1.server.hs.federation is not None
        assert hs1.server.hs.federation.sender is not None
        await hs1.server.hs.federation.sender.stop()
        await hs1.request("POST", f"{V3}/rooms/{q(room_id)}/unban", {"user_id": bob},
                          user="alice")
        self.assertEqual(await _membership(hs2, room_id, bob), "ban")

        await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                          user="bob")
        self.assertEqual(await _membership(hs2, room_id, bob), "join")
        self.assertEqual(await _membership(hs1, room_id, bob), "join")
