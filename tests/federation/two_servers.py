"""Two full Roost homeservers federating over real TLS on 127.0.0.1.

Each server is named `127.0.0.1:<port>`: an IP literal with an explicit port,
which discovery connects to directly (no well-known, no SRV, no DNS). The
federation port is bound first (the name carries it) and the homeserver is
built behind it; a restart binds the same port again, so the server keeps its
name, its signing key (same data_dir) and its database (same DSN).

Certificates are self-signed and not checked, and the IP blocklist is empty:
settings for tests on loopback only.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, reactor
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from roost.federation.transport.server import federation_site, tls_context_factory
from roost.homeserver.tlsgen import write_self_signed
from tests.postgres_harness import fresh_database
from tests.server_harness import RunningServer, start_server

V3 = "/_matrix/client/v3"


def federation_overrides(min_retry: str = "100ms", max_retry: str = "1s") -> dict[str, Any]:
    return {"federation": {"verify_certificates": False, "ip_range_blocklist": [],
                           "min_retry_interval": min_retry, "max_retry_interval": max_retry}}


@dataclass
class FedNode:
    """One homeserver of the pair; `server` is replaced by each (re)start."""

    testcase: TestCase
    name: str
    port: int
    folder: str
    dsn: str
    site: Any
    listening: Any
    overrides: dict[str, Any]
    server: RunningServer | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    connections: Any = None

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.name}"

    async def start(self) -> RunningServer:
        """Build the homeserver (again) behind the federation port, listening if it is not."""
        if self.listening is None:
            self.listening = reactor.listenSSL(self.port, self._wrapped(), self._tls(),
                                               interface="127.0.0.1")
        self.server = await start_server(self.testcase, dsn=self.dsn, data_dir=self.folder,
                                         server_name=self.name, **self.overrides)
        assert self.server.hs.federation is not None
        self.site.resource = self.server.hs.federation.site.resource
        return self.server

    async def stop(self) -> None:
        """Stop both listeners and the homeserver: other servers now fail to connect."""
        if self.listening is not None:
            await self.listening.stopListening()
            self.listening = None
        # Pooled connections from the other server outlive the listener: cut them.
        for protocol in list(self.connections.protocols):
            protocol.transport.abortConnection()
        if self.server is not None:
            await self.server.stop()
        self.site.resource = Resource()

    async def restart(self) -> RunningServer:
        await self.stop()
        return await self.start()

    def _wrapped(self) -> WrappingFactory:
        self.connections = WrappingFactory(self.site)
        return self.connections

    def _tls(self) -> Any:
        cert = os.path.join(self.folder, "tls", "tls.crt")
        key = os.path.join(self.folder, "tls", "tls.key")
        return tls_context_factory(cert, key)

    # -- client API helpers ------------------------------------------------------

    async def request(self, method: str, path: str, body: Any = None, user: str | None = None,
                      expect: int | None = 200) -> Any:
        assert self.server is not None
        token = self.tokens[user] if user is not None else None
        resp = await self.server.request(method, path, body, token=token)
        if expect is not None:
            assert resp.status == expect, (method, path, resp.status, resp.body)
        return resp.body if expect is not None else resp

    async def register(self, localpart: str) -> str:
        assert self.server is not None
        body = await self.server.register(localpart)
        self.tokens[localpart] = body["access_token"]
        return body["user_id"]


async def start_node(testcase: TestCase, **overrides: Any) -> FedNode:
    folder = os.path.abspath(testcase.mktemp())
    os.makedirs(folder)
    write_self_signed(folder, "tls", "localhost")
    site = federation_site(Resource())  # type: ignore[arg-type]
    node = FedNode(testcase, "", 0, folder, await fresh_database(testcase), site, None,
                   {**federation_overrides(), **overrides})
    node.listening = reactor.listenSSL(0, node._wrapped(), node._tls(), interface="127.0.0.1")
    node.port = node.listening.getHost().port
    node.name = f"127.0.0.1:{node.port}"

    async def cleanup() -> None:
        if node.listening is not None:
            await node.listening.stopListening()
            node.listening = None
        for protocol in list(node.connections.protocols):
            protocol.transport.abortConnection()

    testcase.addCleanup(lambda: defer.ensureDeferred(cleanup()))
    await node.start()
    return node


async def start_pair(testcase: TestCase, **overrides: Any) -> tuple[FedNode, FedNode]:
    """Two federating servers."""
    first = await start_node(testcase, **overrides)
    return first, await start_node(testcase, **overrides)


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 15.0,
                     interval_s: float = 0.05) -> Any:
    """Poll `check` until it returns a truthy value (returned) or the time runs out."""
    import time

    from twisted.internet import task

    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await task.deferLater(reactor, interval_s, lambda: None)
    raise AssertionError(f"condition not met within {timeout_s}s (last: {last!r})")


async def eventually_slow(check: Callable[[], Awaitable[Any]], timeout_s: float = 60.0) -> Any:
    """`eventually` at a real Synapse's pace (or a remote join's): longer, polled less often,
    so the polling does not itself load the server it waits for."""
    return await eventually(check, timeout_s, interval_s=0.3)


async def room_events(node: FedNode, user: str, room_id: str, limit: int = 100) -> list[Any]:
    """The room's timeline as `user` sees it through /messages (oldest first)."""
    from tests.server_harness import q

    resp = await node.request("GET", f"{V3}/rooms/{q(room_id)}/messages?dir=b&limit={limit}",
                              user=user, expect=None)
    if resp.status != 200:
        return []
    return list(reversed(resp.body.get("chunk", [])))
