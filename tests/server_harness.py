"""A real homeserver for tests: real PostgreSQL, a real listener on 127.0.0.1:0.

Tests that need time to pass pass a `twisted.internet.task.Clock` as `clock`:
token lifetimes, rate limits and timeouts then follow that clock, while the
network and the database still run on the real reactor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from roost.homeserver.config import RoostConfig, parse_config
from roost.homeserver.service import stop_homeserver
from roost.homeserver.wiring import Homeserver, build_homeserver
from tests.postgres_harness import fresh_database

# Generous limits so that tests not about rate limiting are never throttled.
_UNLIMITED = {"per_second": 1000.0, "burst": 1000}


def test_config(data_dir: str, server_name: str = "test.roost", **overrides: Any) -> RoostConfig:
    raw: dict[str, Any] = {
        "server_name": server_name,
        "data_dir": data_dir,
        "listeners": {"client": {"bind_address": "127.0.0.1", "port": 0}},
        "registration": {"enabled": True},
        "passwords": {"bcrypt_rounds": 4},
        "rate_limits": {"login": _UNLIMITED, "registration": _UNLIMITED, "message": _UNLIMITED},
        "logging": {"level": "WARNING"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_config(raw, data_dir)


@dataclass
class Response:
    status: int
    headers: Any
    body: Any  # parsed JSON, or the raw bytes if not JSON


@dataclass
class RunningServer:
    hs: Homeserver
    base_url: str
    port: Any
    pool: HTTPConnectionPool
    stopped: bool = False

    async def stop(self) -> None:
        """Stop listening and shut the homeserver down, as a restart would; idempotent."""
        if self.stopped:
            return
        self.stopped = True
        await self.port.stopListening()
        await stop_homeserver(self.hs)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        resp = await treq.request(
            method, self.base_url + path, data=data, headers=all_headers, pool=self.pool
        )
        content = await resp.content()
        try:
            parsed: Any = json.loads(content)
        except ValueError:
            parsed = content
        return Response(resp.code, resp.headers, parsed)

    async def register(self, username: str, password: str = "hunter2-pw", **extra: Any) -> Any:
        """Register through the dummy flow; returns the login body."""
        body = {"username": username, "password": password,
                "auth": {"type": "m.login.dummy"}, **extra}
        resp = await self.request("POST", "/_matrix/client/v3/register", body)
        assert resp.status == 200, (resp.status, resp.body)
        return resp.body


def q(value: str) -> str:
    return quote(value, safe="")


async def start_server(
    testcase: TestCase,
    clock: IReactorTime | None = None,
    dsn: str | None = None,
    data_dir: str | None = None,
    **overrides: Any,
) -> RunningServer:
    """Build and start a homeserver on a fresh database; stopped when the test ends."""
    dsn = dsn or await fresh_database(testcase)
    config = test_config(data_dir or testcase.mktemp(), **overrides)
    hs = await build_homeserver(config, reactor, clock=clock, dsn=dsn)
    port = reactor.listenTCP(0, hs.client_site, interface="127.0.0.1")
    pool = HTTPConnectionPool(reactor, persistent=False)
    server = RunningServer(hs, f"http://127.0.0.1:{port.getHost().port}", port, pool)
    testcase.addCleanup(lambda: _as_deferred(server.stop()))
    return server


def _as_deferred(coro: Any) -> Any:
    from twisted.internet import defer

    return defer.ensureDeferred(coro)
