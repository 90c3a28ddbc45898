"""The blocklist-checking agent for plain http(s) URLs (push gateways), against a real
listener on loopback: checked after DNS and again on each redirect."""

from __future__ import annotations

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web import resource, server
from twisted.web.client import HTTPConnectionPool

from roost.federation.transport.client import IpBlocklist
from roost.homeserver.config import SPECIAL_PURPOSE_RANGES
from roost.http.outbound import BlockedAddressError, checked_agent


class _Target(resource.Resource):
    isLeaf = True

    def __init__(self, port_of: list[int]) -> None:
        super().__init__()
        self._port_of = port_of

    def render(self, request: server.Request) -> bytes:
        if request.path == b"/redirect":
            request.redirect(f"http://127.0.0.2:{self._port_of[0]}/final".encode())
            return b""
        return b"ok"


class CheckedAgentTests(TestCase):
    def setUp(self) -> None:
        port_of: list[int] = []
        self.port = reactor.listenTCP(0, server.Site(_Target(port_of)), interface="127.0.0.1")
        port_of.append(self.port.getHost().port)
        self.base = f"http://127.0.0.1:{port_of[0]}"
        self.addCleanup(self.port.stopListening)
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    async def _get(self, agent: object, url: str) -> object:
        response = await treq.get(url, agent=agent)
        return await response.content()

    async def test_the_default_ranges_refuse_loopback_by_address_and_by_name(self) -> None:
        agent = checked_agent(reactor, IpBlocklist(SPECIAL_PURPOSE_RANGES).blocks, self.pool)
        port = self.port.getHost().port
        for url in (f"{self.base}/", f"http://localhost:{port}/"):
            with self.assertRaises(BlockedAddressError):
                await self._get(agent, url)

    async def test_allowed_addresses_connect(self) -> None:
        agent = checked_agent(reactor, lambda address: False, self.pool)
        self.assertEqual(await self._get(agent, f"{self.base}/"), b"ok")

    async def test_a_redirect_is_checked_again(self) -> None:
        agent = checked_agent(reactor, lambda address: address == "127.0.0.2", self.pool)
        with self.assertRaises(BlockedAddressError):
            await self._get(agent, f"{self.base}/redirect")
