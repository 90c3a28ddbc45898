"""A real push gateway on loopback for tests: a twisted.web server that records what
arrives at /_matrix/push/v1/notify, can reject pushkeys, and can fail on purpose."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web import resource, server


class _Notify(resource.Resource):
    isLeaf = True

    def __init__(self, gateway: PushGateway) -> None:
        super().__init__()
        self._gateway = gateway

    def render_POST(self, request: server.Request) -> bytes:
        gw = self._gateway
        body = json.loads(request.content.read())
        request.setHeader(b"Content-Type", b"application/json")
        if gw.fail_next > 0:
            gw.fail_next -= 1
            gw.failed += 1
            request.setResponseCode(500)
            return b'{"error": "down for a moment"}'
        gw.received.append(body)
        keys = [d["pushkey"] for d in body["notification"].get("devices", [])]
        rejected = [k for k in keys if k in gw.reject]
        gw._check_waiters()
        return json.dumps({"rejected": rejected}).encode()


class PushGateway:
    """Start with `await PushGateway.start(testcase)`; `url` is its notify endpoint."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.reject: set[str] = set()
        self.fail_next = 0
        self.failed = 0
        self._waiters: list[tuple[int, defer.Deferred[None]]] = []
        self.url = ""

    @classmethod
    async def start(cls, testcase: TestCase) -> PushGateway:
        gateway = cls()
        root = resource.Resource()
        matrix = resource.Resource()
        push = resource.Resource()
        v1 = resource.Resource()
        root.putChild(b"_matrix", matrix)
        matrix.putChild(b"push", push)
        push.putChild(b"v1", v1)
        v1.putChild(b"notify", _Notify(gateway))
        site = server.Site(root)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        testcase.addCleanup(port.stopListening)
        gateway.url = f"http://127.0.0.1:{port.getHost().port}/_matrix/push/v1/notify"
        return gateway

    def notifications(self) -> list[dict[str, Any]]:
        return [body["notification"] for body in self.received]

    async def wait_for(self, count: int, timeout_s: float = 30) -> list[dict[str, Any]]:
        """Wait until `count` notifications have arrived in all."""
        if len(self.received) < count:
            done: defer.Deferred[None] = defer.Deferred()
            self._waiters.append((count, done))
            done.addTimeout(timeout_s, reactor)
            await done
        return self.notifications()

    def _check_waiters(self) -> None:
        waiting, self._waiters = self._waiters, []
        for count, done in waiting:
            if len(self.received) >= count:
                done.callback(None)
            else:
                self._waiters.append((count, done))
