"""X-Matrix headers: the spec's grammar, and signing and verifying requests."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from roost.federation.transport.xmatrix import (
    XMatrixAuth,
    XMatrixError,
    build_header,
    parse_header,
    sign_request,
    verify_request,
)
from roost.keys.remote import KeyRing
from roost.storage.database import Database
from roost.storage.server_keys import ServerKeyStore
from tests.keys.test_remote import DAY, START_MS, FakeFetcher, key_response, make_key
from tests.postgres_harness import fresh_database

SPEC_EXAMPLE = (
    'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",'
    'key="ed25519:key1",sig="ABCDEF..."'
)


class ParseTests(TestCase):
    def test_spec_example(self) -> None:
        self.assertEqual(
            parse_header(SPEC_EXAMPLE),
            XMatrixAuth("origin.hs.example.com", "destination.hs.example.com", "ed25519:key1",
                        "ABCDEF..."),
        )

    def test_rfc9110_forms(self) -> None:
        header = ('x-matrix   Origin=origin.example:8448 ,\tKEY="ed25519:a_b" , sig=AbC/+d,'
                  'destination="dest\\"x\\\\y",future="ignored, really"')
        self.assertEqual(parse_header(header),
                         XMatrixAuth("origin.example:8448", 'dest"x\\y', "ed25519:a_b", "AbC/+d"))

    def test_destination_may_be_absent(self) -> None:
        auth = parse_header('X-Matrix origin=o.example,key="ed25519:k",sig="s"')
        self.assertIsNone(auth.destination)

    def test_malformed_headers_are_refused(self) -> None:
        bad = [
            'Bearer abc',
            'X-Matrix origin="o",key="ed25519:k"',
            'X-Matrix origin="o,key="ed25519:k",sig="s"',
            'X-Matrix origin="o" key="ed25519:k",sig="s"',
            'X-Matrix origin=,key="ed25519:k",sig="s"',
            'X-Matrix origin="o",origin="p",key="ed25519:k",sig="s"',
            'X-Matrix =x',
        ]
        for header in bad:
            with self.assertRaises(XMatrixError, msg=header):
                parse_header(header)

    def test_build_then_parse_round_trips(self) -> None:
        auth = XMatrixAuth("a.example", "b.example:8448", "ed25519:k1", "c2lnbmF0dXJl")
        header = build_header(auth)
        self.assertEqual(header, 'X-Matrix origin="a.example",destination="b.example:8448",'
                                 'key="ed25519:k1",sig="c2lnbmF0dXJl"')
        self.assertEqual(parse_header(header), auth)


class SignVerifyTests(TestCase):
    async def setUp(self) -> None:
        db = Database(reactor, await fresh_database(self), 1, 2)
        self.addCleanup(db.close)
        clock = Clock()
        clock.advance(START_MS / 1000)
        self.origin = make_key("origin.test")
        fetcher = FakeFetcher()
        fetcher.servers["origin.test"] = key_response(self.origin, START_MS + DAY)
        self.fetcher = fetcher
        self.keyring = KeyRing(clock, ServerKeyStore(db), make_key("dest.test"), fetcher)

    async def _verify(self, header: str, method: str = "PUT", uri: str = "/_matrix/federation/v1/send/1",
                      content: object = None) -> str:
        return await verify_request(self.keyring, [header], method, uri, "dest.test", content)

    async def test_round_trip(self) -> None:
        body = {"pdus": [], "edus": [{"edu_type": "m.typing"}]}
        header = sign_request(self.origin, "PUT", "/_matrix/federation/v1/send/1", "dest.test", body)
        self.assertEqual(await self._verify(header, content=body), "origin.test")
        get = sign_request(self.origin, "GET", "/_matrix/federation/v1/version?x=1", "dest.test")
        self.assertEqual(await self._verify(get, "GET", "/_matrix/federation/v1/version?x=1"),
                         "origin.test")

    async def test_header_without_destination_is_accepted(self) -> None:
        header = sign_request(self.origin, "GET", "/p", "dest.test")
        auth = parse_header(header)
        old_style = build_header(XMatrixAuth(auth.origin, None, auth.key, auth.sig))
        self.assertEqual(await self._verify(old_style, "GET", "/p"), "origin.test")

    async def test_tampered_request_fails(self) -> None:
        header = sign_request(self.origin, "PUT", "/_matrix/federation/v1/send/1", "dest.test", {"a": 1})
        with self.assertRaises(XMatrixError):
            await self._verify(header, content={"a": 2})
        with self.assertRaises(XMatrixError):
            await self._verify(header, uri="/_matrix/federation/v1/send/2", content={"a": 1})
        with self.assertRaises(XMatrixError):
            await self._verify(header, method="POST", content={"a": 1})

    async def test_wrong_destination_fails(self) -> None:
        header = sign_request(self.origin, "GET", "/p", "elsewhere.test")
        with self.assertRaisesRegex(XMatrixError, "not dest.test"):
            await self._verify(header, "GET", "/p")

    async def test_unknown_key_fails(self) -> None:
        stranger = make_key("origin.test", "unknown")
        header = sign_request(stranger, "GET", "/p", "dest.test")
        with self.assertRaisesRegex(XMatrixError, "no key valid"):
            await self._verify(header, "GET", "/p")

    async def test_missing_header_and_bad_origin_fail(self) -> None:
        with self.assertRaises(XMatrixError):
            await verify_request(self.keyring, [], "GET", "/p", "dest.test", None)
        with self.assertRaises(XMatrixError):
            await verify_request(self.keyring, ["Bearer x"], "GET", "/p", "dest.test", None)
        with self.assertRaisesRegex(XMatrixError, "not a server name"):
            await self._verify('X-Matrix origin="a b",key="ed25519:k",sig="s"', "GET", "/p")
        self.assertEqual(self.fetcher.direct_calls, [])
