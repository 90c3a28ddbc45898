"""Fetching a server's keys does not wait out the send backoff towards it: a server
that was unreachable and is back can be verified (and so join) at once."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.federation.transport.client import NotRetryingDestinationError
from tests.federation.two_servers import V3, start_pair
from tests.server_harness import q


class KeyFetchBackoffTests(TestCase):
    timeout = 120

    async def test_a_backed_off_server_is_still_verified_and_can_join(self) -> None:
        hs1, hs2 = await start_pair(self)
        await hs1.register("alice")
        await hs2.register("bob")
        room_id = (await hs1.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     user="alice"))["room_id"]
        fed1 = hs1.server.hs.federation
        # hs1 failed to reach hs2 many times: sending to hs2 is backed off for a while.
        for _ in range(8):
            fed1.client.backoff.failed(hs2.name)
        self.assertIsNotNone(fed1.client.backoff.retry_at(hs2.name))
        with self.assertRaises(NotRetryingDestinationError):
            await fed1.client.get_json(hs2.name, "/_matrix/federation/v1/version")
        # hs2 is back and asks hs1 to make a join: hs1 must fetch hs2's key to check the
        # request's signature, backoff or not.
        joined = await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}",
                                   {}, user="bob")
        self.assertEqual(joined["room_id"], room_id)
