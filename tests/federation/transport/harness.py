"""A federation listener for tests: real TLS on 127.0.0.1:0, real PostgreSQL, real keys.

Each server is named `localhost:<port>`, so discovery connects straight to it
(an explicit port), and its certificate (from roost.homeserver.tlsgen) is for
`localhost`. Besides /version and the key endpoints it serves an echo route
that returns what the handler saw, the authenticated origin above all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import treq
from twisted.internet import defer, reactor, ssl
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.resource import Resource
from zope.interface import implementer

from roost.federation.transport import key_resource
from roost.federation.transport.server import (
    FederationRequest,
    FederationResource,
    FederationRouter,
    federation_site,
    register_version,
    tls_context_factory,
)
from roost.homeserver.tlsgen import write_self_signed
from roost.keys.local import LocalKey
from roost.keys.remote import KeyFetcher, KeyRing, Notary
from roost.keys.resource import KeyServer
from roost.storage.database import Database
from roost.storage.server_keys import ServerKeyStore
from tests.keys.test_remote import make_key
from tests.postgres_harness import fresh_database

ECHO = "/_matrix/federation/v1/echo"
OPEN_ECHO = "/_matrix/federation/v1/open_echo"


@dataclass
class FedServer:
    name: str
    port: int
    local_key: LocalKey
    keyring: KeyRing
    key_server: KeyServer
    store: ServerKeyStore
    cert_path: str
    key_path: str
    authenticated: list[str] = field(default_factory=list)
    # (reached, never): /hang fires the first and waits on the second for ever;
    # a cancelled wait (the client went away) errbacks `never` with CancelledError.
    hanging: list[Any] = field(default_factory=lambda: [(defer.Deferred(), defer.Deferred())])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def _echo_routes(router: FederationRouter, hanging: list[Any]) -> None:
    async def echo(req: FederationRequest) -> dict[str, Any]:
        return {"origin": req.origin, "thing": req.params["thing"], "content": req.content,
                "host": req.http.getHeader(b"Host").decode(),
                "args": {k.decode(): [v.decode() for v in vs] for k, vs in req.http.args.items()}}

    async def fail(req: FederationRequest) -> tuple[int, dict[str, Any]]:
        return int(req.params["status"]), {"errcode": "M_TEST", "error": "asked to fail"}

    async def hang(req: FederationRequest) -> dict[str, Any]:
        reached, never = hanging[0]
        reached.callback(None)
        await never
        return {}

    for method in ("GET", "PUT", "POST"):
        router.add(method, ECHO + "/{thing}", echo)
    router.add("GET", OPEN_ECHO + "/{thing}", echo, auth=False)
    router.add("GET", "/_matrix/federation/v1/fail/{status}", fail, auth=False)
    router.add("GET", "/_matrix/federation/v1/hang", hang, auth=False)


async def start_fed_server(
    testcase: TestCase,
    fetcher: KeyFetcher | None = None,
    notaries: list[Notary] | None = None,
    max_body_bytes: int | None = None,
) -> FedServer:
    """Listen first (the name carries the port), then build the parts behind the site."""
    folder = testcase.mktemp()
    os.makedirs(folder)
    cert_rel, key_rel = write_self_signed(folder, "tls", "localhost")
    cert_path, key_path = os.path.join(folder, cert_rel), os.path.join(folder, key_rel)
    site = federation_site(Resource())  # type: ignore[arg-type]
    listening = reactor.listenSSL(0, site, tls_context_factory(cert_path, key_path),
                                  interface="127.0.0.1")
    testcase.addCleanup(listening.stopListening)
    port = listening.getHost().port
    name = f"localhost:{port}"

    db = Database(reactor, await fresh_database(testcase), 1, 3)
    testcase.addCleanup(db.close)
    store = ServerKeyStore(db)
    local = make_key(name)
    keyring = KeyRing(reactor, store, local, fetcher, notaries or [])
    key_server = KeyServer(reactor, local, store, keyring)
    await key_server.start()
    server = FedServer(name, port, local, keyring, key_server, store, cert_path, key_path)

    router = FederationRouter()
    register_version(router, "test")
    key_resource.register(router, key_server)
    _echo_routes(router, server.hanging)
    extra = {"max_body_bytes": max_body_bytes} if max_body_bytes else {}
    site.resource = FederationResource(router, keyring, name, server.authenticated.append, **extra)
    return server


@implementer(IPolicyForHTTPS)
class _Unchecked:
    def __init__(self) -> None:
        self._options = ssl.CertificateOptions(verify=False)

    def creatorForNetloc(self, hostname: bytes, port: int) -> ssl.CertificateOptions:
        return self._options


def unchecked_agent(testcase: TestCase) -> Agent:
    """An HTTPS agent that does not check certificates, for talking to test listeners."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    return Agent(reactor, contextFactory=_Unchecked(), pool=pool)


class DirectKeyFetcher:
    """A minimal KeyFetcher over HTTPS to test listeners, independent of the real client."""

    def __init__(self, testcase: TestCase) -> None:
        self._http = treq.client.HTTPClient(unchecked_agent(testcase))

    async def fetch_server_keys(self, server_name: str) -> dict[str, Any]:
        port = server_name.rsplit(":", 1)[1]
        response = await self._http.get(f"https://127.0.0.1:{port}/_matrix/key/v2/server")
        return json.loads(await response.content())

    async def query_notary(self, notary: str, server_keys: Any) -> list[dict[str, Any]]:
        raise ConnectionRefusedError("no notaries in these tests")
