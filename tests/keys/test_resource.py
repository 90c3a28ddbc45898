"""KeyServer: our published keys across a rotation, and notary answers (HTTP in federation tests)."""

from __future__ import annotations

import signedjson.key
import signedjson.sign
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from roost.keys.local import LocalKey
from roost.keys.remote import KeyRing
from roost.keys.resource import KEY_RESPONSE_VALIDITY_MS, KeyQueryError, KeyServer
from roost.storage.database import Database
from roost.storage.server_keys import ServerKeyStore
from tests.keys.test_remote import DAY, START_MS, FakeFetcher, key_response, make_key, signed
from tests.postgres_harness import fresh_database


class KeyServerTests(TestCase):
    async def setUp(self) -> None:
        self.db = Database(reactor, await fresh_database(self), 1, 3)
        self.addCleanup(self.db.close)
        self.store = ServerKeyStore(self.db)
        self.clock = Clock()
        self.clock.advance(START_MS / 1000)
        self.fetcher = FakeFetcher()

    async def server(self, key: LocalKey) -> tuple[KeyServer, KeyRing]:
        ring = KeyRing(self.clock, self.store, key, self.fetcher)
        key_server = KeyServer(self.clock, key, self.store, ring)
        await key_server.start()
        return key_server, ring

    async def test_rotation_publishes_the_old_key_and_old_signatures_still_verify(self) -> None:
        first = make_key("me.test", "first")
        key_server, _ = await self.server(first)
        before = key_server.own_keys()
        self.assertEqual(before["old_verify_keys"], {})
        self.assertEqual(before["valid_until_ts"], START_MS + KEY_RESPONSE_VALIDITY_MS)
        old_event = signed(first, n=1)

        self.clock.advance(3600)
        second = LocalKey("me.test", signedjson.key.generate_signing_key("second"))
        key_server, ring = await self.server(second)
        after = key_server.own_keys()
        self.assertEqual(after["verify_keys"], {second.key_id: {"key": second.verify_key_base64}})
        self.assertEqual(after["old_verify_keys"], {
            first.key_id: {"key": first.verify_key_base64, "expired_ts": START_MS + 3_600_000}})
        signedjson.sign.verify_signed_json(after, "me.test",
                                           signedjson.key.get_verify_key(second.signing_key))
        # Our own key ring accepts the old key for what it signed before it expired.
        await ring.verify_json_for_server("me.test", old_event, START_MS)

    async def test_restart_with_the_same_key_changes_nothing(self) -> None:
        key = make_key("me.test")
        await self.server(key)
        key_server, _ = await self.server(key)
        self.assertEqual(key_server.own_keys()["old_verify_keys"], {})

    async def test_query_honours_past_minimum_valid_until(self) -> None:
        remote = make_key("remote.test")
        self.fetcher.servers["remote.test"] = key_response(remote, START_MS + DAY)
        key_server, ring = await self.server(make_key("me.test"))
        past = {"server_keys": {"remote.test": {remote.key_id: {"minimum_valid_until_ts": 5}}}}
        # Never heard of: the unauthenticated query makes this server fetch nothing.
        self.assertEqual((await key_server.query(past))["server_keys"], [])
        self.assertEqual(self.fetcher.direct_calls, [])
        await ring.verify_json_for_server(  # a server this one federates with
            "remote.test", remote.sign_json({"a": 1}), START_MS)
        answer = await key_server.query(past)
        self.assertEqual(len(answer["server_keys"]), 1)
        self.assertEqual(set(answer["server_keys"][0]["signatures"]), {"remote.test", "me.test"})
        # The cache answers the same question again without another fetch.
        await key_server.query(past)
        self.assertEqual(self.fetcher.direct_calls, ["remote.test"])

    async def test_query_refuses_too_many_servers(self) -> None:
        key_server, _ = await self.server(make_key("me.test"))
        many = {"server_keys": {f"s{i}.test": {} for i in range(101)}}
        with self.assertRaises(KeyQueryError):
            await key_server.query(many)
        self.assertEqual(self.fetcher.direct_calls, [])
