"""What the tests comparing /sync's answer paths share: a clock that moves only when a test
advances it (so every path serves the same ages) and a client call that must succeed."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task

from tests.server_harness import RunningServer

V3 = "/_matrix/client/v3"


def frozen_clock() -> task.Clock:
    """Served ages move only when the test advances it: every path serves the same ages."""
    clock = task.Clock()
    clock.advance(reactor.seconds())  # type: ignore[attr-defined]
    return clock


async def call(server: RunningServer, method: str, path: str, token: str,
               body: Any = None) -> Any:
    """`method path` (under /_matrix/client/v3) as the token's user; its body, which must be
    a 200's."""
    resp = await server.request(method, V3 + path, body if body is not None else {},
                                token=token)
    assert resp.status == 200, (path, resp.status, resp.body)
    return resp.body
