"""The inbound federation listener over real TLS: X-Matrix checks, key endpoints, errors.

Server A serves; server B signs requests to it. A learns B's keys by fetching
them from B's own listener, so every signature check here crosses the network.
"""

from __future__ import annotations

import json
import time
from typing import Any

import signedjson.key
import signedjson.sign
import treq
from twisted.trial.unittest import TestCase

from roost.federation.transport.xmatrix import XMatrixAuth, build_header, parse_header, sign_request
from roost.keys.local import LocalKey
from tests.federation.transport.harness import (
    ECHO,
    DirectKeyFetcher,
    FedServer,
    start_fed_server,
    unchecked_agent,
)
from tests.keys.test_remote import make_key


class Client:
    """Raw HTTPS requests to a test listener, signed or not."""

    def __init__(self, testcase: TestCase, target: FedServer) -> None:
        self._http = treq.client.HTTPClient(unchecked_agent(testcase))
        self._target = target

    async def send(self, method: str, uri: str, body: Any = None, signer: LocalKey | None = None,
                   destination: str | None = None, auth: str | None = None,
                   raw: bytes | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": ["application/json"]}
        if signer is not None:
            auth = sign_request(signer, method, uri, destination or self._target.name, body)
        if auth is not None:
            headers["Authorization"] = [auth]
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = await self._http.request(method, self._target.url + uri, data=data,
                                            headers=headers)
        content = await response.content()
        return response.code, json.loads(content)


class ListenerTestBase(TestCase):
    async def setUp(self) -> None:
        self.b = await start_fed_server(self)
        self.a = await start_fed_server(self, fetcher=DirectKeyFetcher(self))
        self.client = Client(self, self.a)


class PublicEndpointTests(ListenerTestBase):
    async def test_version_needs_no_signature(self) -> None:
        status, body = await self.client.send("GET", "/_matrix/federation/v1/version")
        self.assertEqual((status, body), (200, {"server": {"name": "Roost", "version": "test"}}))

    async def test_own_keys_are_self_signed_and_valid_for_a_day(self) -> None:
        status, body = await self.client.send("GET", "/_matrix/key/v2/server")
        self.assertEqual(status, 200)
        self.assertEqual(body["server_name"], self.a.name)
        key = self.a.local_key
        self.assertEqual(body["verify_keys"], {key.key_id: {"key": key.verify_key_base64}})
        self.assertEqual(body["old_verify_keys"], {})
        signedjson.sign.verify_signed_json(body, self.a.name,
                                           signedjson.key.get_verify_key(key.signing_key))
        day_from_now = (time.time() + 86_400) * 1000
        self.assertLess(abs(body["valid_until_ts"] - day_from_now), 60_000)

    async def test_unknown_path_and_wrong_method(self) -> None:
        status, body = await self.client.send("GET", "/_matrix/federation/v1/nothing")
        self.assertEqual((status, body["errcode"]), (404, "M_UNRECOGNIZED"))
        status, body = await self.client.send("DELETE", "/_matrix/federation/v1/version")
        self.assertEqual((status, body["errcode"]), (405, "M_UNRECOGNIZED"))


class AuthenticationTests(ListenerTestBase):
    async def test_signed_requests_reach_the_handler_with_the_origin(self) -> None:
        status, body = await self.client.send("GET", ECHO + "/x?a=1&a=2", signer=self.b.local_key)
        self.assertEqual(status, 200)
        self.assertEqual(body, {"origin": self.b.name, "thing": "x", "content": None,
                                "host": f"127.0.0.1:{self.a.port}", "args": {"a": ["1", "2"]}})
        content = {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"ü": 1}}]}
        status, body = await self.client.send("PUT", ECHO + "/txn1", content, signer=self.b.local_key)
        self.assertEqual((status, body["content"]), (200, content))
        self.assertEqual(self.a.authenticated, [self.b.name, self.b.name])
        # A learnt B's key from B's own listener, once.
        stored = await self.a.store.get_keys(self.b.name, [self.b.local_key.key_id])
        self.assertEqual(stored[self.b.local_key.key_id].from_server, self.b.name)

    async def _assert_unauthorized(self, **kwargs: Any) -> None:
        kwargs.setdefault("method", "PUT")
        kwargs.setdefault("uri", ECHO + "/t")
        kwargs.setdefault("body", {"a": 1})
        status, body = await self.client.send(**kwargs)
        self.assertEqual((status, body["errcode"]), (401, "M_UNAUTHORIZED"), body)

    async def test_missing_or_foreign_header_is_401(self) -> None:
        await self._assert_unauthorized()
        await self._assert_unauthorized(auth="Bearer sometoken")
        await self._assert_unauthorized(auth='X-Matrix origin="x.test",key="ed25519:a"')
        self.assertEqual(self.a.authenticated, [])

    async def test_bad_signature_is_401(self) -> None:
        auth = sign_request(self.b.local_key, "PUT", ECHO + "/t", self.a.name, {"a": 2})
        await self._assert_unauthorized(auth=auth)
        parsed = parse_header(auth)
        garbled = build_header(XMatrixAuth(parsed.origin, parsed.destination, parsed.key, "AAAA"))
        await self._assert_unauthorized(auth=garbled)

    async def test_wrong_destination_is_401(self) -> None:
        await self._assert_unauthorized(signer=self.b.local_key, destination="elsewhere.test")

    async def test_unpublished_key_is_401(self) -> None:
        rogue = LocalKey(self.b.name, signedjson.key.generate_signing_key("rogue"))
        await self._assert_unauthorized(signer=rogue)

    async def test_unreachable_origin_is_401(self) -> None:
        await self._assert_unauthorized(signer=make_key("localhost:1"))

    async def test_body_not_json_is_400_and_too_large_is_413(self) -> None:
        status, body = await self.client.send("PUT", ECHO + "/t", raw=b"{nope",
                                              auth=sign_request(self.b.local_key, "PUT", ECHO + "/t",
                                                                self.a.name, None))
        self.assertEqual((status, body["errcode"]), (400, "M_NOT_JSON"))
        small = await start_fed_server(self, fetcher=DirectKeyFetcher(self), max_body_bytes=100)
        status, body = await Client(self, small).send("PUT", ECHO + "/t", {"x": "y" * 200},
                                                      signer=self.b.local_key)
        self.assertEqual((status, body["errcode"]), (413, "M_TOO_LARGE"))


class NotaryTests(ListenerTestBase):
    async def test_post_query_returns_keys_signed_by_server_and_notary(self) -> None:
        b_key = self.b.local_key
        await self.client.send("PUT", ECHO + "/t", {"x": 1}, signer=b_key)  # a learns b's keys
        criteria = {"server_keys": {
            self.b.name: {b_key.key_id: {"minimum_valid_until_ts": int(time.time() * 1000)}},
            self.a.name: {},
        }}
        status, body = await self.client.send("POST", "/_matrix/key/v2/query", criteria)
        self.assertEqual(status, 200)
        by_server = {r["server_name"]: r for r in body["server_keys"]}
        self.assertEqual(set(by_server), {self.a.name, self.b.name})
        about_b = by_server[self.b.name]
        self.assertEqual(about_b["verify_keys"], {b_key.key_id: {"key": b_key.verify_key_base64}})
        signedjson.sign.verify_signed_json(about_b, self.b.name,
                                           signedjson.key.get_verify_key(b_key.signing_key))
        signedjson.sign.verify_signed_json(about_b, self.a.name,
                                           signedjson.key.get_verify_key(self.a.local_key.signing_key))

    async def test_get_query_for_one_server(self) -> None:
        # The notary serves (and refreshes) keys of servers it has dealt with; a signed
        # request from b makes a fetch b's keys.
        await self.client.send("PUT", ECHO + "/t", {"x": 1}, signer=self.b.local_key)
        status, body = await self.client.send(
            "GET", f"/_matrix/key/v2/query/{self.b.name}?minimum_valid_until_ts=0")
        self.assertEqual(status, 200)
        (about_b,) = body["server_keys"]
        self.assertEqual(set(about_b["signatures"]), {self.a.name, self.b.name})

    async def test_unreachable_server_gives_an_empty_list(self) -> None:
        status, body = await self.client.send("GET", "/_matrix/key/v2/query/localhost:1")
        self.assertEqual((status, body), (200, {"server_keys": []}))

    async def test_malformed_query_is_400(self) -> None:
        for bad in ({}, {"server_keys": []}, {"server_keys": {"x": []}},
                    {"server_keys": {"x": {"k": {"minimum_valid_until_ts": "soon"}}}}):
            status, body = await self.client.send("POST", "/_matrix/key/v2/query", bad)
            self.assertEqual((status, body["errcode"]), (400, "M_BAD_JSON"), bad)
