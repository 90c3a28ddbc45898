"""Behind a proxy (`x_forwarded`): the client's address is the last X-Forwarded-For entry."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from roost.client_api.resource import JsonResource, RoostSite, Router


class ForwardedAddressTests(unittest.TestCase):
    def _addresses(self, heads: list[bytes], x_forwarded: bool = True) -> list[Any]:
        seen: list[Any] = []

        async def handler(api: Any) -> dict[str, Any]:
            seen.append(api.http.getClientAddress())
            return {}

        router = Router()
        router.add("GET", "/_matrix/client/v3/who", handler, auth=False)
        site = RoostSite(JsonResource(router, None), 1024 * 1024, x_forwarded=x_forwarded)
        proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        proto.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.9", 4),
                                             hostAddress=IPv4Address("TCP", "127.0.0.1", 80)))
        for head in heads:
            proto.dataReceived(b"GET /_matrix/client/v3/who HTTP/1.1\r\nHost: x\r\n"
                               + head + b"\r\n")
        proto.connectionLost(Failure(ConnectionDone()))
        return seen

    def test_the_last_forwarded_entry_is_the_client(self) -> None:
        seen = self._addresses([
            b"X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n",
            b"X-Forwarded-For: 198.51.100.2\r\n",
            b"X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n",
            b"X-Forwarded-For: 2001:db8::5\r\n",
            b"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 203.0.113.9 \r\n",
            b"",
            b"X-Forwarded-For: ,\r\n",
        ])
        self.assertEqual(seen, [
            IPv4Address("TCP", "192.0.2.7", 0),
            IPv4Address("TCP", "198.51.100.2", 0),
            IPv4Address("TCP", "192.0.2.7", 0),
            IPv6Address("TCP", "2001:db8::5", 0),
            IPv4Address("TCP", "203.0.113.9", 0),  # the last header's value
            IPv4Address("TCP", "127.0.0.9", 4),  # none: the peer
            IPv4Address("TCP", "127.0.0.9", 4),  # an empty entry: the peer
        ])

    def test_without_x_forwarded_the_header_is_ignored(self) -> None:
        seen = self._addresses([b"X-Forwarded-For: 192.0.2.7\r\n"], x_forwarded=False)
        self.assertEqual(seen, [IPv4Address("TCP", "127.0.0.9", 4)])


class BearerHeaderTests(unittest.TestCase):
    """The token is read from `Authorization: Bearer ...` (kept by the header's bytes)."""

    async def test_bearer_headers(self) -> None:
        from tests.server_harness import start_server

        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        path = "/_matrix/client/v3/account/whoami"
        for header in (f"Bearer {token}", f"Bearer {token}", f"bearer {token}",
                       f"BEARER   {token}  "):
            resp = await server.request("GET", path, headers={"Authorization": header})
            self.assertEqual((resp.status, resp.body.get("user_id")),
                             (200, "@alice:test.roost"), header)
        for header in (f"Basic {token}", "Bearer ", "Bearer", f"Bearer{token}"):
            for _ in range(2):  # a refused header is not kept as a token either
                resp = await server.request("GET", path, headers={"Authorization": header})
                self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_MISSING_TOKEN"),
                                 header)
        resp = await server.request("GET", path, headers={"Authorization": f"Bearer {token}x"})
        self.assertEqual((resp.status, resp.body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
