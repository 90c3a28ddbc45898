"""The notary endpoints, POST and GET /_matrix/key/v2/query: one Roost vouches for another's
keys (the other's self-signature kept, its own added)."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.federation.transport.client import HttpResponseError
from tests.federation.two_servers import start_pair


class NotaryTests(TestCase):
    timeout = 120

    async def test_post_and_get_query_vouch_for_another_servers_keys(self) -> None:
        hs1, hs2 = await start_pair(self)
        assert hs1.server and hs2.server
        client = hs2.server.hs.federation.client
        keyring = hs2.server.hs.federation.keyring
        target = hs2.name
        # A notary vouches only for servers it already has keys from (an unauthenticated
        # query must not make it connect to arbitrary hosts): hs2 talks to hs1 first.
        with self.assertRaises(HttpResponseError):
            await client.get_json(hs1.name, "/_matrix/federation/v1/query/directory",
                                  {"room_alias": f"#nothing:{hs1.name}"})
        posted = await client.post_json(hs1.name, "/_matrix/key/v2/query",
                                        {"server_keys": {target: {}}}, sign=False)
        got = await client.get_json(hs1.name, f"/_matrix/key/v2/query/{target}", sign=False)
        for answer in (posted, got):
            (keys,) = answer["server_keys"]
            self.assertEqual(keys["server_name"], target)
            self.assertEqual(set(keys["signatures"]), {target, hs1.name})
            await keyring.verify_json_for_server(target, keys, 0)
            await keyring.verify_json_for_server(hs1.name, keys, 0)
        own = await client.get_json(hs1.name, f"/_matrix/key/v2/query/{hs1.name}", sign=False)
        self.assertEqual(own["server_keys"][0]["server_name"], hs1.name)
        with self.assertRaises(HttpResponseError) as caught:
            await client.post_json(hs1.name, "/_matrix/key/v2/query", {"server_keys": []},
                                   sign=False)
        self.assertEqual((caught.exception.status, caught.exception.errcode), (400, "M_BAD_JSON"))
