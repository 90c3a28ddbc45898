"""GET /health: the database, and Redis when it is on, answer (200) or not (503)."""

from __future__ import annotations

import json

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from roost.client_api import versions
from roost.client_api.resource import JsonResource, RoostSite, Router
from roost.homeserver.operations import health_checks
from roost.storage.database import Database
from tests.redis_harness import redis_for_tests
from tests.server_harness import start_server


class HealthTests(TestCase):
    async def test_healthy_with_the_database_and_redis(self) -> None:
        host, port = await redis_for_tests(self)
        server = await start_server(self, redis={"enabled": True, "host": host, "port": port,
                                                 "key_prefix": "roost-health-test:"})
        resp = await server.request("GET", "/health")
        self.assertEqual((resp.status, resp.body),
                         (200, {"status": "ok", "database": "ok", "redis": "ok"}))

    async def test_a_database_that_does_not_answer_is_reported_with_503(self) -> None:
        """A real pool pointed at a port where no PostgreSQL listens."""
        unreachable = Database(reactor, "host=127.0.0.1 port=1 dbname=none connect_timeout=1",
                               pool_min=1, pool_max=1)
        self.addCleanup(unreachable.close)
        router = Router()
        versions.register(router, "http://localhost", health_checks(unreachable, None))
        port = reactor.listenTCP(0, RoostSite(JsonResource(router, None), 1024),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        resp = await treq.get(f"http://127.0.0.1:{port.getHost().port}/health",
                              pool=HTTPConnectionPool(reactor, persistent=False))
        body = json.loads(await resp.content())
        self.assertEqual(resp.code, 503, body)
        self.assertEqual(body["status"], "degraded")
        self.assertTrue(body["database"].startswith("unreachable"))
