"""An HTTP agent for outbound requests to URLs users or other servers name (push gateways):
every connection is checked against the IP range blocklist after DNS.

The host is resolved here, each address is put to `blocks(address)` before a connection
is tried, and only allowed addresses are connected to; a redirect is a new connection and
goes through the same check. Federation has its own connector (federation/transport) with
the same rule; this one is for plain http(s) URLs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IResolutionReceiver, IStreamClientEndpoint
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent, IAgentEndpointFactory
from zope.interface import implementer

CONNECT_TIMEOUT_S = 10


class IpBlocklist:
    """Address ranges outbound federation must never connect to."""

    def __init__(self, ranges: Sequence[str]) -> None:
        self._networks = [ipaddress.ip_network(r, strict=False) for r in ranges]

    def blocks(self, address: str) -> bool:
        """Whether `address` (as DNS gave it) is refused. An IPv4-mapped IPv6 address is
        checked as its IPv4 address; anything that does not parse as an address (a
        scoped `fe80::1%eth0`) is refused."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self._networks)


class BlockedAddressError(ConnectionError):
    """Every address of the host is in the IP range blocklist."""


@implementer(IResolutionReceiver)
class AddressCollector:
    """Collects every address a name resolves to (`done` fires with them), so each can be
    checked against the blocklist before any connection is made."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.done: defer.Deferred[list[str]] = defer.Deferred()

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address.host)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


@implementer(IStreamClientEndpoint)
class _CheckedEndpoint:
    def __init__(self, reactor: Any, resolver: Any, blocks: Callable[[str], bool],
                 scheme: bytes, host: str, port: int) -> None:
        self._reactor, self._resolver, self._blocks = reactor, resolver, blocks
        self._scheme, self._host, self._port = scheme, host, port

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        try:
            ipaddress.ip_address(self._host)
            found = [self._host]
        except ValueError:
            receiver = AddressCollector()
            self._resolver.resolveHostName(receiver, self._host, 0)
            found = await receiver.done
        allowed = [a for a in found if not self._blocks(a)]
        if found and not allowed:
            raise BlockedAddressError(f"{self._host} is in the IP range blocklist")
        if not allowed:
            raise ConnectionError(f"no address for {self._host}")
        last: Exception | None = None
        for address in allowed:
            tcp_class = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
            endpoint: IStreamClientEndpoint = tcp_class(self._reactor, address, self._port,
                                                        timeout=CONNECT_TIMEOUT_S)
            if self._scheme == b"https":
                endpoint = wrapClientTLS(ssl.optionsForClientTLS(self._host), endpoint)
            try:
                return await endpoint.connect(factory)
            except Exception as e:
                last = e
        raise ConnectionError(f"could not connect to {self._host}: {last}")


@implementer(IAgentEndpointFactory)
class _Endpoints:
    def __init__(self, reactor: Any, resolver: Any, blocks: Callable[[str], bool]) -> None:
        self._args = (reactor, resolver, blocks)

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return _CheckedEndpoint(*self._args, uri.scheme, uri.host.decode("ascii").strip("[]"),
                                uri.port)


def checked_agent(reactor: Any, blocks: Callable[[str], bool],
                  pool: HTTPConnectionPool | None = None, resolver: Any = None) -> IAgent:
    """An Agent that connects only to addresses `blocks` allows (give it to treq as
    `agent=`)."""
    return Agent.usingEndpointFactory(
        reactor, _Endpoints(reactor, resolver or reactor.nameResolver, blocks),
        pool or HTTPConnectionPool(reactor, persistent=True))
