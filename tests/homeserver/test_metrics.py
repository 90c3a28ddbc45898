"""The metrics listener: off by default; when on, this homeserver's registry at /metrics."""

from __future__ import annotations

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from roost.homeserver.service import RoostService
from tests.postgres_harness import fresh_database
from tests.server_harness import test_config


class MetricsListenerTests(TestCase):
    async def _service(self, metrics: dict[str, object]) -> RoostService:
        dsn = await fresh_database(self)
        config = test_config(self.mktemp(), database={"dsn": dsn},
                             listeners={"metrics": metrics})
        service = RoostService(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        await service.started
        return service

    async def test_served_when_enabled(self) -> None:
        service = await self._service({"enabled": True, "bind_address": "127.0.0.1",
                                       "port": 0})
        assert service.homeserver is not None and service.homeserver.federation is not None
        service.homeserver.federation.fetches.received("event", ["$x"])
        port = service._ports[-1].getHost().port
        pool = HTTPConnectionPool(reactor, persistent=False)
        resp = await treq.get(f"http://127.0.0.1:{port}/metrics", pool=pool)
        body = (await resp.text()).splitlines()
        self.assertEqual(resp.code, 200)
        self.assertIn('roost_federation_events_fetched_total{endpoint="event"} 1.0', body)
        self.assertIn("# TYPE roost_federation_events_fetched_again_total counter", body)

    async def test_off_by_default(self) -> None:
        service = await self._service({})
        self.assertEqual(len(service._ports), 1)  # the client listener alone
        assert service.homeserver is not None
        self.assertIsNone(service.homeserver.metrics)  # no registry kept for nobody
