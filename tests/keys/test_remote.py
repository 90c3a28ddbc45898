"""The key ring: memory, database, direct fetch and notaries, with validity honoured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import signedjson.key
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from roost.keys.local import LocalKey
from roost.keys.remote import (
    KeyRing,
    KeyVerificationError,
    Notary,
    VerifyRequest,
    parse_key_response,
)
from roost.storage.database import Database
from roost.storage.server_keys import ServerKeyStore
from tests.postgres_harness import fresh_database

DAY = 86_400_000
START_MS = 1_700_000_000_000


def make_key(server_name: str, version: str = "k1") -> LocalKey:
    return LocalKey(server_name, signedjson.key.generate_signing_key(version))


def key_response(key: LocalKey, valid_until: int, old: Mapping[LocalKey, int] | None = None,
                 signers: list[LocalKey] | None = None) -> dict[str, Any]:
    """A /_matrix/key/v2/server body for `key`, self-signed unless `signers` says otherwise."""
    body: dict[str, Any] = {
        "server_name": key.server_name,
        "verify_keys": {key.key_id: {"key": key.verify_key_base64}},
        "old_verify_keys": {
            k.key_id: {"key": k.verify_key_base64, "expired_ts": ts} for k, ts in (old or {}).items()
        },
        "valid_until_ts": valid_until,
    }
    for signer in signers if signers is not None else [key]:
        body = LocalKey(key.server_name, signer.signing_key).sign_json(body)
    return body


class FakeFetcher:
    """The network, as a table: server -> key response, notary -> responses it gives."""

    def __init__(self) -> None:
        self.servers: dict[str, Any] = {}
        self.notaries: dict[str, list[dict[str, Any]]] = {}
        self.direct_calls: list[str] = []
        self.notary_calls: list[tuple[str, dict[str, Any]]] = []
        self.gate: defer.Deferred[None] | None = None

    async def fetch_server_keys(self, server_name: str) -> dict[str, Any]:
        self.direct_calls.append(server_name)
        if self.gate is not None:
            await self.gate
        if server_name not in self.servers:
            raise ConnectionRefusedError(server_name)
        return self.servers[server_name]

    async def query_notary(self, notary: str, server_keys: Mapping[str, Mapping[str, int]]
                           ) -> list[dict[str, Any]]:
        self.notary_calls.append((notary, {k: dict(v) for k, v in server_keys.items()}))
        if notary not in self.notaries:
            raise ConnectionRefusedError(notary)
        return self.notaries[notary]


def signed(key: LocalKey, **content: Any) -> dict[str, Any]:
    return key.sign_json({"content": content})


class KeyRingTestBase(TestCase):
    async def setUp(self) -> None:
        self.db = Database(reactor, await fresh_database(self), 1, 3)
        self.addCleanup(self.db.close)
        self.store = ServerKeyStore(self.db)
        self.clock = Clock()
        self.clock.advance(START_MS / 1000)
        self.fetcher = FakeFetcher()
        self.local = make_key("local.test")
        self.remote = make_key("remote.test")
        self.fetcher.servers["remote.test"] = key_response(self.remote, START_MS + DAY)

    def ring(self, notaries: list[Notary] | None = None) -> KeyRing:
        return KeyRing(self.clock, self.store, self.local, self.fetcher, notaries or [])

    def now(self) -> int:
        return int(self.clock.seconds() * 1000)


class DirectFetchTests(KeyRingTestBase):
    async def test_fetched_once_then_memory_then_database(self) -> None:
        ring = self.ring()
        await ring.verify_json_for_server("remote.test", signed(self.remote, n=1), self.now())
        await ring.verify_json_for_server("remote.test", signed(self.remote, n=2), self.now())
        self.assertEqual(self.fetcher.direct_calls, ["remote.test"])
        # A restarted server finds the key in the database.
        await self.ring().verify_json_for_server("remote.test", signed(self.remote, n=3), self.now())
        self.assertEqual(self.fetcher.direct_calls, ["remote.test"])
        stored = await self.store.get_keys("remote.test", [self.remote.key_id])
        self.assertEqual(stored[self.remote.key_id].verify_key, self.remote.verify_key_base64)
        self.assertEqual(stored[self.remote.key_id].from_server, "remote.test")

    async def test_bad_signature_is_refused(self) -> None:
        obj = signed(self.remote, n=1)
        obj["content"]["n"] = 2
        with self.assertRaises(KeyVerificationError) as cm:
            await self.ring().verify_json_for_server("remote.test", obj, self.now())
        self.assertIn("bad signature", cm.exception.reason)

    async def test_object_not_signed_by_the_server_is_refused(self) -> None:
        with self.assertRaises(KeyVerificationError):
            await self.ring().verify_json_for_server("remote.test", {"content": {}}, self.now())
        impostor = LocalKey("elsewhere.test", self.remote.signing_key)
        with self.assertRaises(KeyVerificationError):
            await self.ring().verify_json_for_server("remote.test", signed(impostor), self.now())

    async def test_key_other_than_the_served_one_is_refused(self) -> None:
        other = LocalKey("remote.test", signedjson.key.generate_signing_key("k1"))
        with self.assertRaises(KeyVerificationError):
            await self.ring().verify_json_for_server("remote.test", signed(other), self.now())

    async def test_own_signatures_need_no_fetch(self) -> None:
        await self.ring().verify_json_for_server("local.test", signed(self.local), self.now() + 99 * DAY)
        self.assertEqual(self.fetcher.direct_calls, [])

    async def test_unknown_key_id_is_asked_for_at_most_once_a_minute(self) -> None:
        ring = self.ring()
        stranger = make_key("remote.test", "nope")
        for _ in range(3):
            with self.assertRaises(KeyVerificationError):
                await ring.verify_json_for_server("remote.test", signed(stranger), self.now())
        self.assertEqual(self.fetcher.direct_calls, ["remote.test"])
        self.clock.advance(61)
        with self.assertRaises(KeyVerificationError):
            await ring.verify_json_for_server("remote.test", signed(stranger), self.now())
        self.assertEqual(len(self.fetcher.direct_calls), 2)

    async def test_concurrent_lookups_share_one_fetch(self) -> None:
        ring = self.ring()
        self.fetcher.gate = defer.Deferred()
        checks = [defer.ensureDeferred(ring.verify_json_for_server(
            "remote.test", signed(self.remote, n=i), self.now())) for i in range(5)]
        self.fetcher.gate.callback(None)
        await defer.gatherResults(checks)
        self.assertEqual(self.fetcher.direct_calls, ["remote.test"])


class ResponseCheckTests(KeyRingTestBase):
    async def test_response_for_another_server_or_unsigned_or_by_unlisted_key_is_refused(self) -> None:
        ring = self.ring()
        bad = [
            key_response(make_key("other.test"), START_MS + DAY),
            key_response(self.remote, START_MS + DAY, signers=[]),
            key_response(self.remote, START_MS + DAY, signers=[make_key("remote.test", "x")]),
            {**key_response(self.remote, START_MS + DAY), "valid_until_ts": START_MS + 2 * DAY},
            "not an object",
        ]
        for i, response in enumerate(bad):
            self.clock.advance(120)
            self.fetcher.servers["remote.test"] = response
            with self.assertRaises(KeyVerificationError, msg=f"response {i}"):
                await ring.verify_json_for_server("remote.test", signed(self.remote), self.now())
        self.assertEqual(await self.store.get_keys("remote.test", [self.remote.key_id]), {})

    def test_parse_keeps_only_the_servers_own_signatures_and_caps_validity(self) -> None:
        response = key_response(self.remote, START_MS + 30 * DAY)
        response = make_key("notary.test").sign_json(response)
        own, keys = parse_key_response(response, "remote.test", START_MS)
        self.assertEqual(list(own["signatures"]), ["remote.test"])
        self.assertEqual(keys[0].valid_until_ts, START_MS + 7 * DAY)


class ValidityTests(KeyRingTestBase):
    async def test_expired_key_is_refetched_for_requests_but_good_for_older_events(self) -> None:
        ring = self.ring()
        await ring.verify_json_for_server("remote.test", signed(self.remote), self.now())
        self.clock.advance(2 * DAY / 1000)
        # The server is gone; its key (valid until START+1d) cannot vouch for now.
        del self.fetcher.servers["remote.test"]
        with self.assertRaises(KeyVerificationError):
            await ring.verify_json_for_server("remote.test", signed(self.remote), self.now())
        self.assertEqual(len(self.fetcher.direct_calls), 2)
        # An event sent before the key's valid_until_ts still verifies.
        await ring.verify_json_for_server("remote.test", signed(self.remote), START_MS + 1000)

    async def test_refetch_extends_validity(self) -> None:
        ring = self.ring()
        await ring.verify_json_for_server("remote.test", signed(self.remote), self.now())
        self.clock.advance(2 * DAY / 1000)
        self.fetcher.servers["remote.test"] = key_response(self.remote, self.now() + DAY)
        await ring.verify_json_for_server("remote.test", signed(self.remote), self.now())
        self.assertEqual(len(self.fetcher.direct_calls), 2)

    async def test_validity_is_capped_at_seven_days(self) -> None:
        self.fetcher.servers["remote.test"] = key_response(self.remote, START_MS + 365 * DAY)
        ring = self.ring()
        await ring.verify_json_for_server("remote.test", signed(self.remote), START_MS + 6 * DAY)
        with self.assertRaises(KeyVerificationError):
            await ring.verify_json_for_server("remote.test", signed(self.remote), START_MS + 8 * DAY)

    async def test_old_key_is_good_only_for_events_before_it_expired(self) -> None:
        old = make_key("remote.test", "old")
        expired = START_MS - DAY
        self.fetcher.servers["remote.test"] = key_response(self.remote, START_MS + DAY, {old: expired})
        ring = self.ring()
        await ring.verify_json_for_server("remote.test", signed(old), expired - 5000)
        with self.assertRaises(KeyVerificationError):
            await ring.verify_json_for_server("remote.test", signed(old), self.now())

    async def test_late_response_never_shortens_stored_validity(self) -> None:
        ring = self.ring()
        self.fetcher.servers["remote.test"] = key_response(self.remote, START_MS + 5 * DAY)
        await ring.verify_json_for_server("remote.test", signed(self.remote), self.now())
        self.fetcher.servers["remote.test"] = key_response(self.remote, START_MS + DAY)
        await ring._accept("remote.test", "remote.test", self.fetcher.servers["remote.test"])
        stored = await self.store.get_keys("remote.test", [self.remote.key_id])
        self.assertEqual(stored[self.remote.key_id].valid_until_ts, START_MS + 5 * DAY)


class NotaryTests(KeyRingTestBase):
    async def setUp(self) -> None:
        await super().setUp()
        del self.fetcher.servers["remote.test"]
        self.notary_key = make_key("notary.test", "n1")
        self.notary = Notary.from_base64("notary.test", {"ed25519:n1": self.notary_key.verify_key_base64})
        self.fetcher.notaries["notary.test"] = [
            self.notary_key.sign_json(key_response(self.remote, START_MS + DAY))
        ]

    async def test_notary_is_asked_when_the_server_is_unreachable(self) -> None:
        ring = self.ring([self.notary])
        obj = signed(self.remote)
        await ring.verify_json_for_server("remote.test", obj, self.now())
        self.assertEqual(self.fetcher.direct_calls, ["remote.test"])
        self.assertEqual(self.fetcher.notary_calls,
                         [("notary.test", {"remote.test": {self.remote.key_id: self.now()}})])
        stored = await self.store.get_keys("remote.test", [self.remote.key_id])
        self.assertEqual(stored[self.remote.key_id].from_server, "notary.test")
        # What is kept is the server's own response, without the notary's signature.
        (kept,) = await self.store.get_responses("remote.test")
        self.assertEqual(list(kept["signatures"]), ["remote.test"])

    async def test_notary_answer_not_signed_with_the_configured_key_is_refused(self) -> None:
        wrong = Notary.from_base64("notary.test", {"ed25519:n1": make_key("x").verify_key_base64})
        with self.assertRaises(KeyVerificationError):
            await self.ring([wrong]).verify_json_for_server("remote.test", signed(self.remote), self.now())

    async def test_notary_cannot_invent_keys_for_a_server(self) -> None:
        forged = make_key("remote.test", "forged")
        self.fetcher.notaries["notary.test"] = [
            self.notary_key.sign_json(key_response(forged, START_MS + DAY, signers=[]))
        ]
        with self.assertRaises(KeyVerificationError):
            await self.ring([self.notary]).verify_json_for_server("remote.test", signed(forged), self.now())

    async def test_second_notary_is_tried_when_the_first_fails(self) -> None:
        dead = Notary.from_base64("dead.test", {"ed25519:d": make_key("dead.test").verify_key_base64})
        await self.ring([dead, self.notary]).verify_json_for_server(
            "remote.test", signed(self.remote), self.now())
        self.assertEqual([c[0] for c in self.fetcher.notary_calls], ["dead.test", "notary.test"])


class BatchTests(KeyRingTestBase):
    async def test_many_objects_cost_one_lookup_per_server(self) -> None:
        second = make_key("second.test")
        self.fetcher.servers["second.test"] = key_response(second, START_MS + DAY)
        requests = []
        for i in range(40):
            key = self.remote if i % 2 else second
            requests.append(VerifyRequest(key.server_name, signed(key, n=i), self.now()))
        tampered = signed(second, n=99)
        tampered["content"]["n"] = 100
        requests.append(VerifyRequest("second.test", tampered, self.now()))
        requests.append(VerifyRequest("remote.test", signed(second), self.now()))
        results = await self.ring().verify_many(requests)
        self.assertEqual(results[:40], [None] * 40)
        self.assertIsInstance(results[40], KeyVerificationError)
        self.assertIsInstance(results[41], KeyVerificationError)
        self.assertEqual(sorted(self.fetcher.direct_calls), ["remote.test", "second.test"])


class NotaryResponsesTests(KeyRingTestBase):
    async def test_cached_responses_served_when_the_server_is_down(self) -> None:
        ring = self.ring()
        await ring.verify_json_for_server("remote.test", signed(self.remote), self.now())
        self.clock.advance(2 * DAY / 1000)
        del self.fetcher.servers["remote.test"]
        responses = await ring.notary_responses("remote.test", [], self.now())
        self.assertEqual(len(responses), 1)
        self.assertEqual(responses[0]["valid_until_ts"], START_MS + DAY)
        self.assertEqual(len(self.fetcher.direct_calls), 2)

    async def test_a_server_never_heard_of_is_not_fetched(self) -> None:
        ring = self.ring()
        self.assertEqual(await ring.notary_responses("remote.test", [], self.now()), [])
        self.assertEqual(await ring.notary_responses("127.0.0.1:1", [], self.now()), [])
        self.assertEqual(self.fetcher.direct_calls, [])

    async def test_fresh_cache_answers_without_a_fetch(self) -> None:
        ring = self.ring()
        await ring.verify_json_for_server("remote.test", signed(self.remote), self.now())
        responses = await ring.notary_responses("remote.test", [self.remote.key_id], self.now())
        self.assertEqual(len(responses), 1)
        self.assertEqual(self.fetcher.direct_calls, ["remote.test"])
