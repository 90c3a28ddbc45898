"""A TCP proxy on loopback that a test can cut, as a network partition would.

The fault tests of issue 17 need one process cut off from PostgreSQL and
Redis while it keeps running: `partition()` closes the proxy's connections
to the server (the server sees the client gone: its backends end, its locks
are released) but leaves the process's side open and silent, as a cable
pulled out would; connections made meanwhile hang unanswered. `heal()` then
resets the held connections (the process sees them fail, as after the
network came back) and forwards new ones again.
"""

from __future__ import annotations

from typing import Any

import psycopg2.extensions
from twisted.internet import protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol


class _Upstream(protocol.Protocol):
    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream

    def dataReceived(self, data: bytes) -> None:
        if not self.downstream.held:
            self.downstream.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.downstream.held:
            self.downstream.transport.loseConnection()


class _Downstream(protocol.Protocol):
    def __init__(self, proxy: PartitionProxy) -> None:
        self.proxy = proxy
        self.held = False
        self.upstream: _Upstream | None = None
        self.buffer: list[bytes] = []

    def connectionMade(self) -> None:
        self.proxy.connections.add(self)
        if self.proxy.partitioned:
            self.held = True
            return
        d = connectProtocol(self.proxy.endpoint(), _Upstream(self))
        d.addCallbacks(self._up, lambda _: self.transport.loseConnection())

    def _up(self, upstream: _Upstream) -> None:
        if self.held:
            upstream.transport.loseConnection()
            return
        self.upstream = upstream
        for data in self.buffer:
            upstream.transport.write(data)
        self.buffer = []

    def dataReceived(self, data: bytes) -> None:
        if self.held:
            return
        if self.upstream is None:
            self.buffer.append(data)
        else:
            self.upstream.transport.write(data)

    def cut(self) -> None:
        self.held = True
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.proxy.connections.discard(self)
        if self.upstream is not None and not self.held:
            self.upstream.transport.loseConnection()


class PartitionProxy(protocol.Factory):
    """Listens on a free loopback port and forwards to (host, port) or a UNIX socket."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.partitioned = False
        self.connections: set[_Downstream] = set()
        self.listening = reactor.listenTCP(0, self, interface="127.0.0.1")  # type: ignore[attr-defined]

    @property
    def local_port(self) -> int:
        return int(self.listening.getHost().port)

    def endpoint(self) -> Any:
        if self.host.startswith("/"):  # a socket directory, as libpq names it
            return UNIXClientEndpoint(reactor, f"{self.host}/.s.PGSQL.{self.port}")
        return TCP4ClientEndpoint(reactor, self.host, self.port)

    def buildProtocol(self, addr: Any) -> _Downstream:
        return _Downstream(self)

    def partition(self) -> None:
        self.partitioned = True
        for connection in list(self.connections):
            connection.cut()

    def heal(self) -> None:
        self.partitioned = False
        for connection in [c for c in self.connections if c.held]:
            connection.transport.abortConnection()

    async def close(self) -> None:
        for connection in list(self.connections):
            connection.transport.abortConnection()
        await self.listening.stopListening()


def database_proxy(dsn: str) -> tuple[PartitionProxy, str]:
    """A proxy to the PostgreSQL server of `dsn`, and the DSN that goes through it."""
    params = psycopg2.extensions.parse_dsn(dsn)
    proxy = PartitionProxy(params.get("host") or "127.0.0.1", int(params.get("port") or 5432))
    params.update(host="127.0.0.1", port=str(proxy.local_port))
    return proxy, psycopg2.extensions.make_dsn(**params)
