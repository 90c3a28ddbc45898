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


class ServerMetricsTests(TestCase):
    """What an operator's Prometheus sees after some ordinary traffic."""

    async def test_requests_events_database_and_queues_are_reported(self) -> None:
        from tests.server_harness import start_server

        server = await start_server(self, listeners={"metrics": {
            "enabled": True, "bind_address": "127.0.0.1", "port": 0}})
        alice = await server.register("alice")
        room = (await server.request("POST", "/_matrix/client/v3/createRoom", {},
                                     token=alice["access_token"])).body["room_id"]
        for n in range(3):
            await server.request("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{n}",
                                 {"msgtype": "m.text", "body": "hi"}, token=alice["access_token"])
        await server.request("GET", "/_matrix/client/v3/nowhere")
        from prometheus_client import generate_latest

        text = generate_latest(server.hs.metrics).decode()
        lines = text.splitlines()
        send = ('roost_http_requests_total{method="PUT",route="/_matrix/client/(?:v3|r0|v1)'
                '/rooms/{room_id}/send/{event_type}/{txn_id}",status="200"} 3.0')
        self.assertIn(send, lines)
        unmatched = [ln for ln in lines if 'route="unmatched"' in ln and "_total" in ln]
        self.assertEqual(unmatched,
                         ['roost_http_requests_total{method="GET",route="unmatched",status="404"}'
                          ' 1.0'])
        self.assertIn("roost_http_request_duration_seconds_bucket", text)
        persisted = [ln for ln in lines if ln.startswith("roost_events_persisted_total ")]
        self.assertGreaterEqual(float(persisted[0].split()[1]), 9.0)  # room creation + 3 sends
        self.assertIn('roost_db_transaction_duration_seconds_count{desc="create_user"} 1.0', lines)
        self.assertIn('roost_db_pool_connections{state="open"}', text)
        self.assertIn("roost_websocket_connections 0.0", lines)
        self.assertIn("roost_federation_transactions_total 0.0", lines)
        self.assertIn("# TYPE roost_federation_queue_depth gauge", lines)
