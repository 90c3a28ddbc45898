"""Roost and a real Synapse 1.163 on loopback: keys, signed requests, and (when the
replication side is wired) rooms across the two."""

from __future__ import annotations

import time
from urllib.parse import quote

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from roost.keys.remote import KeyVerificationError
from tests.federation.synapse_harness import start_synapse
from tests.federation.two_servers import eventually_slow, start_node


class KeyAndSigningInteropTests(TestCase):
    timeout = 300

    async def test_synapse_accepts_roosts_signed_requests_and_roost_verifies_synapses_keys(
        self,
    ) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        server = roost.server
        assert server is not None and server.hs.federation is not None
        alice, token = await threads.deferToThread(synapse.register, "alice")
        status, _ = await threads.deferToThread(
            synapse.client, "PUT", f"/_matrix/client/v3/profile/{alice}/displayname",
            {"displayname": "Alice on Synapse"}, token)
        self.assertEqual(status, 200)

        # Signed with Roost's key: Synapse fetches Roost's keys from its /_matrix/key/v2
        # over TLS and checks the X-Matrix signature before it answers.
        client = server.hs.federation.client
        profile = await client.get_json(synapse.name, "/_matrix/federation/v1/query/profile",
                                        {"user_id": alice})
        self.assertEqual(profile.get("displayname"), "Alice on Synapse")

        # Roost fetches Synapse's keys directly and verifies Synapse's self-signed key response.
        keys = await client.get_json(synapse.name, "/_matrix/key/v2/server", sign=False)
        keyring = server.hs.federation.keyring
        await keyring.verify_json_for_server(synapse.name, keys, int(time.time() * 1000))
        keys["server_name"] = "tampered"
        with self.assertRaises(KeyVerificationError):
            await keyring.verify_json_for_server(synapse.name, keys, int(time.time() * 1000))

    async def test_synapse_reads_roost_profiles_over_federation(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        bob = await roost.register("bob")
        await roost.request("PUT", f"/_matrix/client/v3/profile/{bob}/displayname",
                            {"displayname": "Bob on Roost"}, user="bob")
        _, token = await threads.deferToThread(synapse.register, "carol")
        status, body = await threads.deferToThread(
            synapse.client, "GET", f"/_matrix/client/v3/profile/{bob}", None, token)
        self.assertEqual((status, body.get("displayname")), (200, "Bob on Roost"), body)


class RoomInteropTests(TestCase):
    timeout = 300

    async def test_roost_user_joins_a_synapse_room_and_messages_cross_both_ways(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        bob = await roost.register("bob")
        alice, token = await threads.deferToThread(synapse.register, "alice")
        status, created = await threads.deferToThread(
            synapse.client, "POST", "/_matrix/client/v3/createRoom",
            {"preset": "public_chat", "name": "Mixed"}, token)
        self.assertEqual(status, 200, created)
        room_id = created["room_id"]

        joined = await roost.request(
            "POST", f"/_matrix/client/v3/join/{quote(room_id)}?server_name={synapse.name}", {},
            user="bob")
        self.assertEqual(joined["room_id"], room_id)
        state = await roost.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state",
                                    user="bob")
        self.assertIn({"name": "Mixed"}, [e["content"] for e in state if e["type"] == "m.room.name"])

        # Synapse -> Roost
        status, _ = await threads.deferToThread(
            synapse.client, "PUT",
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/s1",
            {"msgtype": "m.text", "body": "hello from synapse"}, token)
        self.assertEqual(status, 200)
        await eventually_slow(lambda: _roost_sees(roost, room_id, "hello from synapse"))

        # Roost -> Synapse
        await roost.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/"
                            "m.room.message/r1", {"msgtype": "m.text", "body": "hello from roost"},
                            user="bob")

        async def synapse_sees() -> bool:
            status, body = await threads.deferToThread(
                synapse.client, "GET",
                f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=20", None, token)
            return status == 200 and any(e.get("content", {}).get("body") == "hello from roost"
                                         for e in body.get("chunk", []))

        await eventually_slow(synapse_sees)
        status, members = await threads.deferToThread(
            synapse.client, "GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members",
            None, token)
        self.assertIn(bob, members["joined"])
        self.assertIn(alice, members["joined"])


async def _roost_sees(node, room_id: str, body: str) -> bool:
    resp = await node.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/messages"
                              "?dir=b&limit=20", user="bob")
    return any(e.get("content", {}).get("body") == body for e in resp["chunk"])



class SynapseJoinsRoostTests(TestCase):
    timeout = 300

    async def test_synapse_user_joins_a_roost_room_and_messages_cross_both_ways(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        bob = await roost.register("bob")
        alice, token = await threads.deferToThread(synapse.register, "alice")
        created = await roost.request("POST", "/_matrix/client/v3/createRoom",
                                      {"preset": "public_chat", "name": "On Roost"}, user="bob")
        room_id = created["room_id"]
        status, body = await threads.deferToThread(
            synapse.client, "POST",
            f"/_matrix/client/v3/join/{quote(room_id)}?server_name={quote(roost.name)}", {}, token)
        self.assertEqual(status, 200, body)

        await roost.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/"
                            "m.room.message/r1", {"msgtype": "m.text", "body": "hi from roost"},
                            user="bob")

        async def synapse_sees() -> bool:
            status, body = await threads.deferToThread(
                synapse.client, "GET",
                f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=20", None, token)
            return status == 200 and any(e.get("content", {}).get("body") == "hi from roost"
                                         for e in body.get("chunk", []))

        await eventually_slow(synapse_sees)
        status, _ = await threads.deferToThread(
            synapse.client, "PUT",
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/s1",
            {"msgtype": "m.text", "body": "hi from synapse"}, token)
        self.assertEqual(status, 200)
        await eventually_slow(lambda: _roost_sees(roost, room_id, "hi from synapse"))
        members = await roost.request(
            "GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members", user="bob")
        self.assertIn(alice, members["joined"])
        self.assertIn(bob, members["joined"])
