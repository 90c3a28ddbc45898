"""Roost and a real Synapse: invites both ways (accepted and rejected), kicks and bans
of a Synapse user by a Roost moderator."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.federation.synapse_harness import SynapseNode, start_synapse
from tests.federation.two_servers import V3, FedNode, eventually_slow, start_node


async def _synapse(synapse: SynapseNode, method: str, path: str, body: Any = None,
                   token: str | None = None) -> tuple[int, Any]:
    return await threads.deferToThread(synapse.client, method, path, body, token)


async def _roost_membership(roost: FedNode, user: str, room_id: str, member: str) -> str | None:
    resp = await roost.request("GET", f"{V3}/rooms/{quote(room_id)}/state/m.room.member/"
                               f"{quote(member)}", user=user, expect=None)
    return resp.body.get("membership") if resp.status == 200 else None


async def _synapse_membership(synapse: SynapseNode, token: str, room_id: str,
                              member: str) -> str | None:
    status, body = await _synapse(synapse, "GET", f"{V3}/rooms/{quote(room_id)}/state/"
                                  f"m.room.member/{quote(member)}", None, token)
    return body.get("membership") if status == 200 else None


_sync_calls = iter(range(1, 1 << 30))


async def _synapse_sync_rooms(synapse: SynapseNode, token: str, section: str,
                              include_leave: bool = False) -> dict[str, Any]:
    # Synapse answers a repeated sync request from a cache for a while: each call
    # differs (the timeline limit) so that every poll sees the present.
    room_filter: dict[str, Any] = {"timeline": {"limit": 10 + next(_sync_calls) % 1000}}
    if include_leave:  # else an initial sync leaves out rooms the user has left
        room_filter["include_leave"] = True
    filt = quote(json.dumps({"room": room_filter}))
    status, body = await _synapse(synapse, "GET", f"{V3}/sync?timeout=0&filter={filt}", None,
                                  token)
    return body.get("rooms", {}).get(section, {}) if status == 200 else {}


class InvitesWithSynapseTests(TestCase):
    timeout = 300

    async def test_roost_user_invites_a_synapse_user_who_joins(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("bob")
        alice, token = await threads.deferToThread(synapse.register, "alice")
        created = await roost.request("POST", f"{V3}/createRoom",
                                      {"preset": "private_chat", "name": "Private"}, user="bob")
        room_id = created["room_id"]
        await roost.request("POST", f"{V3}/rooms/{quote(room_id)}/invite", {"user_id": alice},
                            user="bob")
        self.assertEqual(await _roost_membership(roost, "bob", room_id, alice), "invite")

        async def invited() -> bool:
            return room_id in await _synapse_sync_rooms(synapse, token, "invite")

        await eventually_slow(invited)
        status, body = await _synapse(synapse, "POST", f"{V3}/join/{quote(room_id)}", {}, token)
        self.assertEqual(status, 200, body)

        async def joined() -> bool:
            return await _roost_membership(roost, "bob", room_id, alice) == "join"

        await eventually_slow(joined)

    async def _synapse_invites_roost_user(self) -> tuple[SynapseNode, FedNode, str, str, str]:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        bob = await roost.register("bob")
        _, token = await threads.deferToThread(synapse.register, "alice")
        status, created = await _synapse(synapse, "POST", f"{V3}/createRoom",
                                         {"preset": "private_chat", "name": "From Synapse"}, token)
        self.assertEqual(status, 200, created)
        room_id = created["room_id"]
        status, body = await _synapse(synapse, "POST", f"{V3}/rooms/{quote(room_id)}/invite",
                                      {"user_id": bob}, token)
        self.assertEqual(status, 200, body)
        return synapse, roost, bob, token, room_id

    async def _roost_invite(self, roost: FedNode, room_id: str) -> dict[str, Any]:
        async def invite() -> dict[str, Any] | None:
            sync = await roost.request("GET", f"{V3}/sync?timeout=0", user="bob")
            return sync.get("rooms", {}).get("invite", {}).get(room_id)

        return await _eventually_value(invite)

    async def test_synapse_user_invites_a_roost_user_who_sees_it_in_sync_and_joins(self) -> None:
        synapse, roost, bob, token, room_id = await self._synapse_invites_roost_user()
        invite = await self._roost_invite(roost, room_id)
        events = invite["invite_state"]["events"]
        own = [e for e in events if e["type"] == "m.room.member" and e["state_key"] == bob]
        self.assertEqual([e["content"]["membership"] for e in own], ["invite"])
        # The stripped state Synapse sent with the invite: the room's name, before joining.
        names = [e["content"].get("name") for e in events if e["type"] == "m.room.name"]
        self.assertEqual(names, ["From Synapse"])

        await roost.request("POST", f"{V3}/join/{quote(room_id)}", {}, user="bob")

        async def joined_on_synapse() -> bool:
            return await _synapse_membership(synapse, token, room_id, bob) == "join"

        await eventually_slow(joined_on_synapse)
        name = await roost.request("GET", f"{V3}/rooms/{quote(room_id)}/state/m.room.name/",
                                   user="bob")
        self.assertEqual(name["name"], "From Synapse")
        sync = await roost.request("GET", f"{V3}/sync?timeout=0", user="bob")
        self.assertIn(room_id, sync["rooms"]["join"])

    async def test_a_roost_user_rejects_a_synapse_invite(self) -> None:
        synapse, roost, bob, token, room_id = await self._synapse_invites_roost_user()
        await self._roost_invite(roost, room_id)
        await roost.request("POST", f"{V3}/rooms/{quote(room_id)}/leave", {}, user="bob")

        async def rejected_on_synapse() -> bool:
            return await _synapse_membership(synapse, token, room_id, bob) == "leave"

        await eventually_slow(rejected_on_synapse)

        async def gone_from_invites() -> bool:
            sync = await roost.request("GET", f"{V3}/sync?timeout=0", user="bob")
            return room_id not in sync.get("rooms", {}).get("invite", {})

        await eventually_slow(gone_from_invites)


class KicksAndBansWithSynapseTests(TestCase):
    timeout = 300

    async def test_roost_moderator_kicks_then_bans_a_synapse_user(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("bob")
        alice, token = await threads.deferToThread(synapse.register, "alice")
        created = await roost.request("POST", f"{V3}/createRoom",
                                      {"preset": "public_chat", "name": "Moderated"}, user="bob")
        room_id = created["room_id"]
        join_path = f"{V3}/join/{quote(room_id)}?server_name={quote(roost.name)}"
        status, body = await _synapse(synapse, "POST", join_path, {}, token)
        self.assertEqual(status, 200, body)

        async def roost_sees(membership: str) -> bool:
            return await _roost_membership(roost, "bob", room_id, alice) == membership

        await eventually_slow(lambda: roost_sees("join"))

        # Kick: Synapse sees the room among alice's left rooms.
        await roost.request("POST", f"{V3}/rooms/{quote(room_id)}/kick",
                            {"user_id": alice, "reason": "cool off"}, user="bob")

        # A user who left reads the room's state as it was when they left.
        async def synapse_sees(membership: str) -> bool:
            return await _synapse_membership(synapse, token, room_id, alice) == membership

        await eventually_slow(lambda: synapse_sees("leave"))
        self.assertEqual(await _roost_membership(roost, "bob", room_id, alice), "leave")

        # A kicked user may come back.
        status, body = await _synapse(synapse, "POST", join_path, {}, token)
        self.assertEqual(status, 200, body)
        await eventually_slow(lambda: roost_sees("join"))

        # Ban: Synapse's copy of the room shows alice banned, and she cannot rejoin.
        await roost.request("POST", f"{V3}/rooms/{quote(room_id)}/ban",
                            {"user_id": alice, "reason": "enough"}, user="bob")
        self.assertEqual(await _roost_membership(roost, "bob", room_id, alice), "ban")

        # Synapse refuses a banned user the room's state; its sync shows the ban.
        async def synapse_banned() -> bool:
            left = await _synapse_sync_rooms(synapse, token, "leave", include_leave=True)
            events = left.get(room_id, {}).get("timeline", {}).get("events", [])
            return any(e["type"] == "m.room.member" and e.get("state_key") == alice
                       and e["content"].get("membership") == "ban" for e in events)

        await eventually_slow(synapse_banned)
        status, body = await _synapse(synapse, "POST", join_path, {}, token)
        self.assertEqual(status, 403, body)
        self.assertEqual(await _roost_membership(roost, "bob", room_id, alice), "ban")


async def _eventually_value(check: Any, timeout_s: float = 60.0) -> Any:
    found: list[Any] = []

    async def probe() -> bool:
        value = await check()
        if value:
            found.append(value)
        return bool(value)

    await eventually_slow(probe, timeout_s)
    return found[0]
