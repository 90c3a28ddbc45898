"""The JSON resource base: errors, CORS, body limit, rate limits and the request log."""

from __future__ import annotations

import logging

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.client_api.test_login import password_login
from tests.redis_harness import isolated_redis
from tests.server_harness import start_server

V3 = "/_matrix/client/v3"


class DiscoveryTests(TestCase):
    async def test_versions_well_known_and_health(self) -> None:
        server = await start_server(self, public_baseurl="https://chat.example.org/")
        versions = await server.request("GET", "/_matrix/client/versions")
        self.assertIn("v1.12", versions.body["versions"])
        wk = await server.request("GET", "/.well-known/matrix/client")
        self.assertEqual(wk.body, {"m.homeserver": {"base_url": "https://chat.example.org"}})
        health = await server.request("GET", "/health")
        self.assertEqual(health.status, 200)


class ErrorTests(TestCase):
    async def test_unknown_path_is_404_and_wrong_method_is_405(self) -> None:
        server = await start_server(self)
        resp = await server.request("GET", V3 + "/no/such/thing")
        self.assertEqual((resp.status, resp.body["errcode"]), (404, "M_UNRECOGNIZED"))
        resp = await server.request("DELETE", "/_matrix/client/versions")
        self.assertEqual((resp.status, resp.body["errcode"]), (405, "M_UNRECOGNIZED"))

    async def test_options_answers_with_cors_headers(self) -> None:
        server = await start_server(self)
        resp = await server.request("OPTIONS", V3 + "/login")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.headers.getRawHeaders("Access-Control-Allow-Origin"), ["*"])
        self.assertIn("Authorization", resp.headers.getRawHeaders("Access-Control-Allow-Headers")[0])
        err = await server.request("GET", V3 + "/account/whoami")
        self.assertEqual(err.headers.getRawHeaders("Access-Control-Allow-Origin"), ["*"])

    async def test_body_over_the_limit_is_too_large_and_nothing_is_created(self) -> None:
        server = await start_server(self, listeners={"client": {"bind_address": "127.0.0.1",
                                                                "port": 0, "max_body_bytes": 1000}})
        body = {"username": "alice", "password": "x" * 2000, "auth": {"type": "m.login.dummy"}}
        resp = await server.request("POST", V3 + "/register", body)
        self.assertEqual((resp.status, resp.body["errcode"]), (413, "M_TOO_LARGE"))
        self.assertFalse(await server.hs.accounts.users.user_exists("@alice:test.roost"))

    async def test_chunked_body_over_the_limit_is_refused_while_it_arrives(self) -> None:
        server = await start_server(self, listeners={"client": {"bind_address": "127.0.0.1",
                                                                "port": 0, "max_body_bytes": 1000}})
        chunk = b"x" * 800
        request = (
            b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 3 + b"0\r\n\r\n"
        )
        raw = await _raw_exchange(server.port.getHost().port, request)
        self.assertIn(b" 413 ", raw.split(b"\r\n")[0])
        self.assertIn(b"M_TOO_LARGE", raw)

    async def test_request_log_names_user_and_hides_token(self) -> None:
        server = await start_server(self)
        reg = await server.register("alice")
        records: list[str] = []
        handler = _ListHandler(records)
        log = logging.getLogger("roost.client_api.resource")
        log.addHandler(handler)
        old_level = log.level
        log.setLevel(logging.INFO)
        self.addCleanup(log.removeHandler, handler)
        self.addCleanup(log.setLevel, old_level)
        await server.request("GET", V3 + "/account/whoami?access_token=" + reg["access_token"])
        line = [r for r in records if "whoami" in r][-1]
        self.assertIn("GET", line)
        self.assertIn(" 200 ", line)
        self.assertIn("@alice:test.roost", line)
        self.assertIn("ms", line)
        self.assertNotIn(reg["access_token"], line)


class RateLimitTests(TestCase):
    async def _exercise(self, server, clock: Clock) -> None:
        await server.hs.register_user("alice", "hunter2-pw")
        for _ in range(3):
            resp = await server.request("POST", V3 + "/login", password_login("alice"))
            self.assertEqual(resp.status, 200)
        limited = await server.request("POST", V3 + "/login", password_login("alice"))
        self.assertEqual((limited.status, limited.body["errcode"]), (429, "M_LIMIT_EXCEEDED"))
        self.assertGreater(limited.body["retry_after_ms"], 0)
        self.assertLessEqual(limited.body["retry_after_ms"], 1001)
        self.assertTrue(limited.headers.getRawHeaders("Retry-After"))
        clock.advance(1.0)
        resp = await server.request("POST", V3 + "/login", password_login("alice"))
        self.assertEqual(resp.status, 200)

    async def test_login_is_rate_limited_in_process(self) -> None:
        clock = Clock()
        server = await start_server(self, clock=clock,
                                    rate_limits={"login": {"per_second": 1, "burst": 3}})
        await self._exercise(server, clock)

    async def test_login_is_rate_limited_through_redis(self) -> None:
        redis = await isolated_redis(self)
        host, port, prefix = redis.host, redis.port, redis.prefix
        clock = Clock()
        clock.advance(1_800_000_000)
        server = await start_server(
            self, clock=clock, rate_limits={"login": {"per_second": 1, "burst": 3}},
            redis={"enabled": True, "host": host, "port": port, "key_prefix": prefix},
        )
        await self._exercise(server, clock)
        # A second process on the same Redis shares the bucket.
        other = await start_server(
            self, clock=clock, dsn=server.hs.db.dsn,
            rate_limits={"login": {"per_second": 1, "burst": 3}},
            redis={"enabled": True, "host": host, "port": port, "key_prefix": prefix},
        )
        resp = await other.request("POST", V3 + "/login", password_login("alice"))
        self.assertEqual(resp.status, 429)


class _ListHandler(logging.Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


class _Collect(protocol.Protocol):
    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self.done = done
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object) -> None:
        self.done.callback(self.data)


async def _raw_exchange(port: int, payload: bytes) -> bytes:
    done: defer.Deferred[bytes] = defer.Deferred()
    endpoint = protocol.ClientCreator(reactor, _Collect, done)
    proto = await endpoint.connectTCP("127.0.0.1", port)
    proto.transport.write(payload)
    return await done
