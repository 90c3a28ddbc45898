"""Older room versions with a real Synapse on loopback: Roost users join and talk in
v1, v5 and v9 rooms created on Synapse, and Synapse users in Roost's rooms of those
versions (v1's server-made event ids and [id, hashes] references, v5's key validity,
v9's redaction rules, each with a redaction crossing over)."""

from __future__ import annotations

from collections.abc import Awaitable
from urllib.parse import quote

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.federation.synapse_harness import SynapseNode, start_synapse
from tests.federation.two_servers import FedNode, eventually_slow, start_node

C = "/_matrix/client/v3"
VERSIONS = ("1", "5", "9")


async def _synapse(synapse: SynapseNode, method: str, path: str, body: object = None,
                   token: str | None = None) -> tuple[int, dict]:
    return await threads.deferToThread(synapse.client, method, path, body, token)



async def _roost_bodies(roost: FedNode, user: str, room_id: str) -> list[str]:
    resp = await roost.request("GET", f"{C}/rooms/{quote(room_id)}/messages?dir=b&limit=50",
                               user=user)
    return [e["content"].get("body") for e in resp["chunk"] if e["type"] == "m.room.message"]


async def _synapse_bodies(synapse: SynapseNode, token: str, room_id: str) -> list[str]:
    status, body = await _synapse(
        synapse, "GET", f"{C}/rooms/{quote(room_id)}/messages?dir=b&limit=50", None, token)
    if status != 200:
        return []
    return [e.get("content", {}).get("body") for e in body.get("chunk", [])
            if e.get("type") == "m.room.message"]


class SynapseRoomVersionTests(TestCase):
    timeout = 600

    async def test_roost_joins_synapse_rooms_of_v1_v5_and_v9(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("bob")
        alice, token = await threads.deferToThread(synapse.register, "alice")
        for version in VERSIONS:
            status, created = await _synapse(synapse, "POST", f"{C}/createRoom",
                                             {"preset": "public_chat", "room_version": version,
                                              "name": f"Synapse v{version}"}, token)
            self.assertEqual(status, 200, created)
            room_id = created["room_id"]
            joined = await roost.request(
                "POST", f"{C}/join/{quote(room_id)}?server_name={synapse.name}", {}, user="bob")
            self.assertEqual(joined["room_id"], room_id)
            create = await roost.request(
                "GET", f"{C}/rooms/{quote(room_id)}/state/m.room.create/", user="bob")
            self.assertEqual(create["room_version"], version)
            await _synapse(synapse, "PUT",
                           f"{C}/rooms/{quote(room_id)}/send/m.room.message/s{version}",
                           {"msgtype": "m.text", "body": f"from synapse v{version}"}, token)
            await eventually_slow(lambda: _has(_roost_bodies(roost, "bob", room_id),  # noqa: B023
                                           f"from synapse v{version}"))  # noqa: B023
            sent = await roost.request(
                "PUT", f"{C}/rooms/{quote(room_id)}/send/m.room.message/r{version}",
                {"msgtype": "m.text", "body": f"from roost v{version}"}, user="bob")
            await eventually_slow(lambda: _has(_synapse_bodies(synapse, token, room_id),  # noqa: B023
                                           f"from roost v{version}"))  # noqa: B023
            if version == "1":
                self.assertTrue(sent["event_id"].endswith(":" + roost.name), sent)
            # Bob redacts his own message; Synapse applies it.
            await roost.request("PUT", f"{C}/rooms/{quote(room_id)}/redact/"
                                f"{quote(sent['event_id'])}/x{version}", {}, user="bob")

            async def redacted_on_synapse() -> bool:
                status, event = await _synapse(
                    synapse, "GET",
                    f"{C}/rooms/{quote(room_id)}/event/{quote(sent['event_id'])}",  # noqa: B023
                    None, token)
                return status == 200 and "body" not in event.get("content", {})

            await eventually_slow(redacted_on_synapse)
            status, members = await _synapse(
                synapse, "GET", f"{C}/rooms/{quote(room_id)}/joined_members", None, token)
            self.assertIn(alice, members["joined"])

    async def test_synapse_joins_roost_rooms_of_v1_v5_and_v9(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        await roost.register("bob")
        carol, token = await threads.deferToThread(synapse.register, "carol")
        for version in VERSIONS:
            created = await roost.request("POST", f"{C}/createRoom",
                                          {"preset": "public_chat", "room_version": version,
                                           "name": f"Roost v{version}"}, user="bob")
            room_id = created["room_id"]
            status, joined = await _synapse(
                synapse, "POST", f"{C}/join/{quote(room_id)}?server_name={roost.name}", {},
                token)
            self.assertEqual(status, 200, (version, joined))
            status, name = await _synapse(
                synapse, "GET", f"{C}/rooms/{quote(room_id)}/state/m.room.name/", None, token)
            self.assertEqual((status, name.get("name")), (200, f"Roost v{version}"))
            await roost.request("PUT", f"{C}/rooms/{quote(room_id)}/send/m.room.message/b{version}",
                                {"msgtype": "m.text", "body": f"hi from roost v{version}"},
                                user="bob")
            await eventually_slow(lambda: _has(_synapse_bodies(synapse, token, room_id),  # noqa: B023
                                           f"hi from roost v{version}"))  # noqa: B023
            status, sent = await _synapse(
                synapse, "PUT", f"{C}/rooms/{quote(room_id)}/send/m.room.message/c{version}",
                {"msgtype": "m.text", "body": f"hi from synapse v{version}"}, token)
            self.assertEqual(status, 200, sent)
            await eventually_slow(lambda: _has(_roost_bodies(roost, "bob", room_id),  # noqa: B023
                                           f"hi from synapse v{version}"))  # noqa: B023
            members = await roost.request(
                "GET", f"{C}/rooms/{quote(room_id)}/joined_members", user="bob")
            self.assertIn(carol, members["joined"])


async def _has(bodies: Awaitable[list[str]], body: str) -> bool:
    return body in await bodies
