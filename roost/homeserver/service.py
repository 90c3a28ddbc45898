"""The root service: starts the parts in order and stops them one by one in reverse.

Twisted's MultiService stops its children concurrently; a homeserver must
instead stop listening first, let requests drain, and only then close the
database pool, so the stop here is sequenced by hand.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer

from roost.homeserver.config import RoostConfig
from roost.homeserver.wiring import Homeserver, build_homeserver
from roost.homeserver.wiring_roles import listens_for_clients, listens_for_servers

logger = logging.getLogger(__name__)


class RoostService(Service):
    def __init__(self, config: RoostConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.homeserver: Homeserver | None = None
        self._ports: list[Any] = []
        self.started: defer.Deferred[None] = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        d = defer.ensureDeferred(self._start())
        d.addCallbacks(self.started.callback, self._failed)

    def _failed(self, failure: Any) -> None:
        logger.error("Roost failed to start: %s", failure.getErrorMessage())
        if not self.started.called:
            self.started.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

    async def _start(self) -> None:
        hs = await build_homeserver(self.config, self.reactor)
        self.homeserver = hs
        if self.config.worker is not None:
            logger.info("Roost instance %s: roles %s", self.config.worker,
                        ", ".join(sorted(self.config.roles)))
        if listens_for_clients(self.config):
            listener = self.config.listeners.client
            port = self.reactor.listenTCP(listener.port, hs.client_site,
                                          interface=listener.bind_address)
            self._ports.append(port)
            logger.info("Roost %s listening for clients on http://%s:%d",
                        self.config.server_name, listener.bind_address, port.getHost().port)
        if hs.internal_site is not None:
            internal = self.config.workers.instances[self.config.worker or ""].internal
            internal_port = self.reactor.listenTCP(internal.port, hs.internal_site,
                                                   interface=internal.bind_address)
            self._ports.append(internal_port)
            logger.info("room writes from other instances on http://%s:%d",
                        internal.bind_address, internal_port.getHost().port)
        federation = self.config.listeners.federation
        if federation.enabled and hs.federation is not None and listens_for_servers(self.config):
            from roost.federation.transport.server import tls_context_factory

            context = tls_context_factory(self.config.path(federation.tls_certificate_path or ""),
                                          self.config.path(federation.tls_private_key_path or ""))
            fed_port = self.reactor.listenSSL(federation.port, hs.federation.site, context,
                                              interface=federation.bind_address)
            self._ports.append(fed_port)
            logger.info("listening for other servers on https://%s:%d",
                        federation.bind_address, fed_port.getHost().port)
        metrics = self.config.listeners.metrics
        if metrics.enabled:
            from roost.homeserver.metrics import metrics_site  # prometheus_client: only if on

            metrics_port = self.reactor.listenTCP(metrics.port, metrics_site(hs.metrics),
                                                  interface=metrics.bind_address)
            self._ports.append(metrics_port)
            logger.info("metrics on http://%s:%d/metrics", metrics.bind_address,
                        metrics_port.getHost().port)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        for port in reversed(self._ports):
            await port.stopListening()
        self._ports.clear()
        if self.homeserver is not None:
            await stop_homeserver(self.homeserver)


async def stop_homeserver(hs: Homeserver) -> None:
    """Run the closers one by one, last registered first."""
    while hs.closers:
        name, close = hs.closers.pop()
        try:
            result = close()
            if isinstance(result, defer.Deferred):
                await result
            elif hasattr(result, "__await__"):
                await result
        except Exception:
            logger.exception("failed to stop %s", name)
