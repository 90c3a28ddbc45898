"""The outbound client: discovery, blocklist, backoff, and signed requests over real TLS.

Discovery runs against injected DNS (a table of SRV records and addresses)
and an in-memory well-known server, so no test touches real DNS.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet import defer, reactor
from twisted.internet._resolver import HostResolution
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from zope.interface import implementer

from roost.federation.transport.client import (
    BlockedAddressError,
    FederationKeyFetcher,
    HttpResponseError,
    IpBlocklist,
    NotRetryingDestinationError,
    RequestFailedError,
    build_federation_client,
)
from roost.federation.transport.discovery import (
    HttpWellKnownFetcher,
    Route,
    ServerDiscovery,
    SrvRecord,
    Target,
    cache_period_ms,
)
from tests.federation.transport.harness import ECHO, OPEN_ECHO, start_fed_server
from tests.keys.test_remote import make_key

HOUR_S = 3600
DEFAULT_BLOCKLIST = [
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "169.254.0.0/16", "0.0.0.0/8", "::1/128", "fe80::/10", "fc00::/7",
]


class FakeSrv:
    def __init__(self, records: dict[str, list[SrvRecord]] | None = None) -> None:
        self.records = records or {}
        self.asked: list[str] = []

    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        self.asked.append(name)
        return self.records.get(name, [])


@implementer(IHostnameResolver)
class FakeNames:
    """A hosts file: every name not listed resolves to nothing."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    def resolveHostName(self, receiver: Any, hostName: str, portNumber: int = 0,
                        addressTypes: Any = None, transportSemantics: str = "TCP") -> Any:
        resolution = HostResolution(hostName)
        receiver.resolutionBegan(resolution)
        for address in self.table.get(hostName, []):
            receiver.addressResolved(IPv4Address("TCP", address, portNumber))
        receiver.resolutionComplete()
        return resolution


class WellKnownSite(Resource):
    """Answers /.well-known/matrix/server per Host, as configured; counts requests."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.hits: list[str] = []

    def render_GET(self, request: Any) -> bytes:
        host = request.getHeader(b"host").decode()
        self.hits.append(host)
        status, body, headers = self.answers.get(host, (404, b"{}", {}))
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode())
        return body


def well_known(server: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    return 200, json.dumps({"m.server": server}).encode(), headers


class DiscoveryTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.site = WellKnownSite()
        self.srv = FakeSrv()
        fetcher = HttpWellKnownFetcher(RequestTraversalAgent(self.site), self.clock)
        self.discovery = ServerDiscovery(self.clock, fetcher, self.srv)

    async def test_ip_literals_connect_directly(self) -> None:
        self.assertEqual(await self.discovery.resolve("1.2.3.4"),
                         Route("1.2.3.4", "1.2.3.4", (Target("1.2.3.4", 8448),)))
        self.assertEqual(await self.discovery.resolve("[2001:db8::1]:9000"),
                         Route("[2001:db8::1]:9000", "2001:db8::1", (Target("2001:db8::1", 9000),)))
        self.assertEqual((self.site.hits, self.srv.asked), ([], []))

    async def test_explicit_port_connects_directly(self) -> None:
        self.assertEqual(await self.discovery.resolve("example.test:1234"),
                         Route("example.test:1234", "example.test", (Target("example.test", 1234),)))
        self.assertEqual((self.site.hits, self.srv.asked), ([], []))

    async def test_well_known_with_port(self) -> None:
        self.site.answers["example.test"] = well_known("delegated.test:4443")
        self.assertEqual(await self.discovery.resolve("example.test"),
                         Route("delegated.test:4443", "delegated.test",
                               (Target("delegated.test", 4443),)))
        self.assertEqual(self.srv.asked, [])

    async def test_well_known_to_ip_literal(self) -> None:
        self.site.answers["example.test"] = well_known("10.1.2.3")
        self.assertEqual(await self.discovery.resolve("example.test"),
                         Route("10.1.2.3", "10.1.2.3", (Target("10.1.2.3", 8448),)))

    async def test_well_known_without_port_uses_srv_of_the_delegated_name(self) -> None:
        self.site.answers["example.test"] = well_known("delegated.test")
        self.srv.records["_matrix-fed._tcp.delegated.test"] = [
            SrvRecord(20, 0, "backup.test.", 8000), SrvRecord(10, 5, "primary.test.", 8001)]
        self.assertEqual(await self.discovery.resolve("example.test"),
                         Route("delegated.test", "delegated.test",
                               (Target("primary.test", 8001), Target("backup.test", 8000))))

    async def test_well_known_without_port_or_srv_uses_8448(self) -> None:
        self.site.answers["example.test"] = well_known("delegated.test")
        self.assertEqual(await self.discovery.resolve("example.test"),
                         Route("delegated.test", "delegated.test", (Target("delegated.test", 8448),)))
        self.assertEqual(self.srv.asked, ["_matrix-fed._tcp.delegated.test",
                                          "_matrix._tcp.delegated.test"])

    async def test_no_well_known_then_srv_then_legacy_srv_then_8448(self) -> None:
        self.srv.records["_matrix-fed._tcp.a.test"] = [SrvRecord(0, 0, "fed.a.test", 443)]
        self.srv.records["_matrix._tcp.b.test"] = [SrvRecord(0, 0, "old.b.test", 8449)]
        self.assertEqual(await self.discovery.resolve("a.test"),
                         Route("a.test", "a.test", (Target("fed.a.test", 443),)))
        self.assertEqual(await self.discovery.resolve("b.test"),
                         Route("b.test", "b.test", (Target("old.b.test", 8449),)))
        self.assertEqual(await self.discovery.resolve("c.test"),
                         Route("c.test", "c.test", (Target("c.test", 8448),)))

    async def test_well_known_redirect_is_followed(self) -> None:
        self.site.answers["example.test"] = (
            302, b"", {"Location": "https://www.example.test/.well-known/matrix/server"})
        self.site.answers["www.example.test"] = well_known("d.test:8000")
        route = await self.discovery.resolve("example.test")
        self.assertEqual(route.host_header, "d.test:8000")
        self.assertEqual(self.site.hits, ["example.test", "www.example.test"])

    async def test_invalid_well_known_falls_back(self) -> None:
        self.site.answers["a.test"] = (200, b"not json", {})
        self.site.answers["b.test"] = (200, b'{"m.server": "bad name!"}', {})
        for name in ("a.test", "b.test"):
            self.assertEqual(await self.discovery.resolve(name),
                             Route(name, name, (Target(name, 8448),)))

    async def test_well_known_is_cached_as_its_headers_say(self) -> None:
        self.site.answers["example.test"] = well_known("d.test:1", **{"Cache-Control": "max-age=7200"})
        await self.discovery.resolve("example.test")
        await self.discovery.resolve("example.test")
        self.assertEqual(len(self.site.hits), 1)
        self.clock.advance(2 * HOUR_S - 1)
        await self.discovery.resolve("example.test")
        self.assertEqual(len(self.site.hits), 1)
        self.clock.advance(2)
        self.site.answers["example.test"] = well_known("d.test:2")
        route = await self.discovery.resolve("example.test")
        self.assertEqual((len(self.site.hits), route.host_header), (2, "d.test:2"))

    async def test_failures_are_cached_shorter(self) -> None:
        await self.discovery.resolve("gone.test")  # 404: cached for an hour
        self.site.answers["flaky.test"] = (503, b"", {})
        await self.discovery.resolve("flaky.test")  # 5xx: cached for two minutes
        self.clock.advance(121)
        await self.discovery.resolve("gone.test")
        await self.discovery.resolve("flaky.test")
        self.assertEqual(self.site.hits, ["gone.test", "flaky.test", "flaky.test"])
        self.clock.advance(HOUR_S)
        await self.discovery.resolve("gone.test")
        self.assertEqual(self.site.hits.count("gone.test"), 2)

    def test_cache_period_bounds(self) -> None:
        now = 1_700_000_000_000

        def period(**headers: str) -> int:
            return cache_period_ms(Headers({k: [v] for k, v in headers.items()}), now)

        self.assertEqual(period(), 24 * HOUR_S * 1000)
        self.assertEqual(period(**{"Cache-Control": "public, max-age=7200"}), 2 * HOUR_S * 1000)
        self.assertEqual(period(**{"Cache-Control": "max-age=10"}), 5 * 60_000)
        self.assertEqual(period(**{"Cache-Control": "no-store"}), 5 * 60_000)
        self.assertEqual(period(**{"Cache-Control": "max-age=9999999"}), 48 * HOUR_S * 1000)
        self.assertEqual(period(Expires="Wed, 15 Nov 2023 01:13:20 GMT"), 3 * HOUR_S * 1000)


class BlocklistTests(TestCase):
    def test_ranges(self) -> None:
        blocklist = IpBlocklist(DEFAULT_BLOCKLIST)
        for address in ("127.0.0.1", "10.1.1.1", "192.168.0.5", "::1", "::ffff:127.0.0.1", "fd00::1"):
            self.assertTrue(blocklist.blocks(address), address)
        for address in ("8.8.8.8", "2001:4860::1"):
            self.assertFalse(blocklist.blocks(address), address)
        self.assertFalse(IpBlocklist([]).blocks("127.0.0.1"))

    def test_the_default_blocks_every_special_purpose_range(self) -> None:
        import ipaddress

        from roost.homeserver.config import SPECIAL_PURPOSE_RANGES, FederationConfig

        blocklist = IpBlocklist(FederationConfig().ip_range_blocklist)
        for cidr in SPECIAL_PURPOSE_RANGES:
            net = ipaddress.ip_network(cidr)
            for address in (net[0], net[-1], net[net.num_addresses // 2]):
                self.assertTrue(blocklist.blocks(str(address)), f"{address} in {cidr}")
        named = ("198.18.0.1", "198.19.255.255", "64:ff9b::7f00:1", "64:ff9b::a00:1",
                 "::ffff:10.0.0.1", "::ffff:198.18.0.1", "2002:7f00:1::", "2001::1",
                 "100.64.0.1", "192.0.0.8", "224.0.0.1", "255.255.255.255", "::", "ff02::1",
                 "fe80::1%eth0", "not an address")
        for address in named:
            self.assertTrue(blocklist.blocks(address), address)
        for address in ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2606:4700::1111",
                        "::ffff:8.8.8.8", "198.20.0.1", "100.128.0.1"):
            self.assertFalse(blocklist.blocks(address), address)

    async def test_default_blocklist_refuses_loopback(self) -> None:
        server = await start_fed_server(self)
        client = _client(self, make_key("me.test"), blocklist=DEFAULT_BLOCKLIST)
        for destination in (f"127.0.0.1:{server.port}", server.name):
            with self.assertRaises(BlockedAddressError):
                await client.get_json(destination, "/_matrix/federation/v1/version", sign=False)
        # A refused address is a configuration matter, not a failing server: no backoff.
        self.assertIsNone(client.backoff.retry_at(server.name))


def _client(testcase: TestCase, key: Any, *, blocklist: list[str] | None = None,
            verify: bool = False, ca_file: str | None = None, clock: Any = None,
            well_known_agent: Any = None) -> Any:
    client = build_federation_client(
        reactor, key, verify_certificates=verify, ca_file=ca_file,
        ip_range_blocklist=[] if blocklist is None else blocklist,
        min_retry_interval_ms=10_000, max_retry_interval_ms=60_000, clock=clock,
        name_resolver=FakeNames({"localhost": ["127.0.0.1"]}), srv_resolver=FakeSrv(),
        well_known_agent=well_known_agent,
    )
    testcase.addCleanup(client.pool.closeCachedConnections)
    return client


class RoundTripTests(TestCase):
    """A real client signs; a real listener checks, fetching the signer's keys with a real client."""

    async def setUp(self) -> None:
        self.sender = await start_fed_server(self)
        fetching = _client(self, make_key("fetcher.test"))
        self.receiver = await start_fed_server(self, fetcher=FederationKeyFetcher(fetching))

    async def test_signed_get_without_certificate_checks(self) -> None:
        client = _client(self, self.sender.local_key)
        body = await client.get_json(self.receiver.name, ECHO + "/x", {"v": ["1", "2"]})
        self.assertEqual(body["origin"], self.sender.name)
        self.assertEqual(body["args"], {"v": ["1", "2"]})
        self.assertEqual(body["host"], self.receiver.name)
        body = await client.put_json(self.receiver.name, ECHO + "/t", {"pdus": []})
        self.assertEqual((body["origin"], body["content"]), (self.sender.name, {"pdus": []}))
        self.assertTrue(client.pool._connections, "the connection is kept for reuse")

    async def test_signed_post_with_a_private_ca(self) -> None:
        client = _client(self, self.sender.local_key, verify=True, ca_file=self.receiver.cert_path)
        body = await client.post_json(self.receiver.name, ECHO + "/p", {"k": "v"})
        self.assertEqual((body["origin"], body["content"]), (self.sender.name, {"k": "v"}))

    async def test_delegation_through_well_known_reaches_the_delegated_server(self) -> None:
        site = WellKnownSite()
        site.answers["deleg.test"] = well_known(self.receiver.name)
        client = _client(self, self.sender.local_key, verify=True, ca_file=self.receiver.cert_path,
                         well_known_agent=RequestTraversalAgent(site))
        body = await client.get_json("deleg.test", OPEN_ECHO + "/x", sign=False)
        # Host and certificate name are the delegated server's, as the spec says.
        self.assertEqual(body["host"], self.receiver.name)
        self.assertEqual(site.hits, ["deleg.test"])

    async def test_untrusted_or_misnamed_certificate_is_refused(self) -> None:
        untrusted = _client(self, self.sender.local_key, verify=True)
        with self.assertRaises(RequestFailedError):
            await untrusted.get_json(self.receiver.name, ECHO + "/x")
        # Trusted, but issued for "localhost", not for the IP address asked for.
        misnamed = _client(self, self.sender.local_key, verify=True, ca_file=self.receiver.cert_path)
        with self.assertRaises(RequestFailedError):
            await misnamed.get_json(f"127.0.0.1:{self.receiver.port}", ECHO + "/x")

    async def test_error_answers_carry_status_and_errcode(self) -> None:
        client = _client(self, self.sender.local_key)
        with self.assertRaises(HttpResponseError) as cm:
            await client.get_json(self.receiver.name, "/_matrix/federation/v1/fail/404")
        self.assertEqual((cm.exception.status, cm.exception.errcode), (404, "M_TEST"))
        with self.assertRaises(HttpResponseError) as cm:
            await client.get_json(self.receiver.name, "/_matrix/federation/v1/nothing")
        self.assertEqual((cm.exception.status, cm.exception.errcode), (404, "M_UNRECOGNIZED"))

    async def test_key_fetcher_direct_and_through_a_notary(self) -> None:
        fetcher = FederationKeyFetcher(_client(self, make_key("asker.test")))
        direct = await fetcher.fetch_server_keys(self.sender.name)
        self.assertIn(self.sender.local_key.key_id, direct["verify_keys"])
        # The notary answers for servers it has dealt with (a signed request from the sender
        # makes it fetch the sender's keys); it never fetches a server a query merely names.
        await _client(self, self.sender.local_key).get_json(self.receiver.name, ECHO + "/x")
        via = await fetcher.query_notary(
            self.receiver.name, {self.sender.name: {self.sender.local_key.key_id: 0}})
        self.assertEqual(len(via), 1)
        self.assertEqual(set(via[0]["signatures"]), {self.sender.name, self.receiver.name})


class TimeoutTests(TestCase):
    async def test_a_server_that_never_answers_times_out_and_backs_off(self) -> None:
        server = await start_fed_server(self)
        clock = Clock()
        client = _client(self, make_key("me.test"), clock=clock)
        pending = defer.ensureDeferred(client.get_json(server.name, "/_matrix/federation/v1/hang"))
        reached, never = server.hanging[0]
        await reached
        clock.advance(59)
        self.assertFalse(pending.called)
        clock.advance(2)
        with self.assertRaises(RequestFailedError):
            await pending
        self.assertIsNotNone(client.backoff.retry_at(server.name))
        # The listener noticed the client going away and cancelled the handler.
        with self.assertRaises(defer.CancelledError):
            await never


class BackoffTests(TestCase):
    async def test_failures_back_off_doubling_to_the_cap_and_success_resets(self) -> None:
        server = await start_fed_server(self)
        clock = Clock()
        client = _client(self, make_key("me.test"), clock=clock)
        dead = "localhost:1"
        intervals = []
        for _ in range(5):
            with self.assertRaises(RequestFailedError):
                await client.get_json(dead, "/x")
            retry_at = client.backoff.retry_at(dead)
            intervals.append(retry_at - int(clock.seconds() * 1000))
            with self.assertRaises(NotRetryingDestinationError):
                await client.get_json(dead, "/x")
            clock.advance(intervals[-1] / 1000)
        self.assertEqual(intervals, [10_000, 20_000, 40_000, 60_000, 60_000])

        # A 5xx counts as a failure; any lower answer clears the backoff.
        with self.assertRaises(HttpResponseError):
            await client.get_json(server.name, "/_matrix/federation/v1/fail/502")
        self.assertIsNotNone(client.backoff.retry_at(server.name))
        await client.get_json(server.name, "/_matrix/federation/v1/version", ignore_backoff=True)
        self.assertIsNone(client.backoff.retry_at(server.name))
        # An authenticated request from the destination clears it too.
        with self.assertRaises(HttpResponseError):
            await client.get_json(server.name, "/_matrix/federation/v1/fail/500")
        client.reset_backoff(server.name)
        await client.get_json(server.name, "/_matrix/federation/v1/version")
