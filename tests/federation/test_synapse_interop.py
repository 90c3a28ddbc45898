"""Roost and a real Synapse 1.163 on loopback: keys, signed requests, and (when the
replication side is wired) rooms across the two."""

from __future__ import annotations

import time

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from roost.keys.remote import KeyVerificationError
from tests.federation.synapse_harness import start_synapse
from tests.federation.two_servers import start_node


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
