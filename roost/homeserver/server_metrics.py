"""What the metrics listener reports about the server's work (docs/deployment.md).

Imported only when the metrics listener is on (prometheus_client costs memory a
server without it should not carry). The parts being measured know nothing
of Prometheus: the client resource and the database take a small observer,
the events stream is watched through the notifier, and the rest (WebSocket
connections, the database pool, federation queues, application service
backlogs) is read when Prometheus scrapes or refreshed every few seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet import defer, task
from twisted.web import server

from roost.storage.database import Database
from roost.storage.notifier import Notifier, StreamChange

logger = logging.getLogger(__name__)
REFRESH_S = 10.0
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)


class RequestMetrics:
    """A RequestObserver (client_api.resource): counts and latencies by route and status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.total = Counter("roost_http_requests", "Client API requests answered",
                             ["method", "route", "status"], registry=registry)
        self.seconds = Histogram("roost_http_request_duration_seconds",
                                 "Client API request latency", ["method", "route"],
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge("roost_http_requests_in_flight",
                               "Requests being served (a /sync here is a waiting long-poll)",
                               ["route"], registry=registry)

    def matched(self, request: server.Request, method: str, route: str) -> None:
        request.roost_route = (method, route)  # type: ignore[attr-defined]
        self.in_flight.labels(route).inc()

    def finished(self, request: server.Request, status: int, seconds: float) -> None:
        method, route = getattr(request, "roost_route", (request.method.decode(), "unmatched"))
        if route != "unmatched":
            self.in_flight.labels(route).dec()
        self.total.labels(method, route, str(status)).inc()
        self.seconds.labels(method, route).observe(seconds)


class DatabaseMetrics(Collector):
    """Transaction time by description, failures, and the connection pool's use."""

    def __init__(self, registry: CollectorRegistry, db: Database) -> None:
        self._db = db
        self.seconds = Histogram("roost_db_transaction_duration_seconds",
                                 "Database transaction time", ["desc"],
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.failed = Counter("roost_db_transactions_failed", "Database transaction attempts"
                              " that failed (retried or not)", ["desc"], registry=registry)
        registry.register(self)
        db.observer = self.observe

    def observe(self, desc: str, seconds: float, committed: bool) -> None:
        if committed:
            self.seconds.labels(desc).observe(seconds)
        else:
            self.failed.labels(desc).inc()

    def collect(self) -> Iterator[Any]:
        busy, size, waiting = self._db.pool_state()
        pool = GaugeMetricFamily("roost_db_pool_connections", "Database pool connections",
                                 labels=["state"])
        pool.add_metric(["busy"], busy)
        pool.add_metric(["open"], size)
        yield pool
        yield GaugeMetricFamily("roost_db_pool_waiting", "Transactions waiting for a"
                                " connection", value=waiting)


class StreamMetrics:
    """Events persisted (local and remote), from the events stream's advances."""

    def __init__(self, registry: CollectorRegistry, notifier: Notifier, start: int) -> None:
        self.persisted = Counter("roost_events_persisted", "Events persisted",
                                 registry=registry)
        self._position = start
        notifier.add_listener(self._on_change)

    def _on_change(self, change: StreamChange) -> None:
        if change.stream == "events" and change.position > self._position:
            self.persisted.inc(change.position - self._position)
            self._position = change.position


class ReadOnScrape(Collector):
    """Figures read from the parts at scrape time: open WebSockets, federation sends."""

    def __init__(self, registry: CollectorRegistry, sockets: Callable[[], int],
                 federation_stats: Any) -> None:
        self._sockets = sockets
        self._federation = federation_stats
        registry.register(self)

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("roost_websocket_connections", "Open WebSocket push streams",
                                value=self._sockets())
        if self._federation is not None:
            yield CounterMetricFamily("roost_federation_transactions",
                                      "Federation transactions delivered",
                                      value=self._federation.transactions)
            yield CounterMetricFamily("roost_federation_transaction_failures",
                                      "Federation transactions that failed",
                                      value=self._federation.failures)


class QueueMetrics:
    """Queue depths that need a database read, refreshed every REFRESH_S seconds."""

    def __init__(self, registry: CollectorRegistry, clock: Any,
                 federation_pending: Callable[[], Awaitable[dict[str, int]]] | None,
                 appservice_backlog: Callable[[], Awaitable[dict[str, int]]] | None) -> None:
        self.federation = Gauge("roost_federation_queue_depth", "PDUs and EDUs waiting per"
                                " destination", ["destination"], registry=registry)
        self.appservices = Gauge("roost_appservice_backlog", "Unacknowledged application"
                                 " service transactions", ["service"], registry=registry)
        self._federation_pending = federation_pending
        self._appservice_backlog = appservice_backlog
        self._loop = task.LoopingCall(lambda: defer.ensureDeferred(self.refresh()))
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(REFRESH_S, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    async def refresh(self) -> None:
        try:
            if self._federation_pending is not None:
                self._set(self.federation, await self._federation_pending())
            if self._appservice_backlog is not None:
                self._set(self.appservices, await self._appservice_backlog())
        except Exception:
            logger.exception("metrics: refreshing queue depths failed")

    @staticmethod
    def _set(gauge: Gauge, values: dict[str, int]) -> None:
        gauge.clear()
        for label, value in values.items():
            gauge.labels(label).set(value)
