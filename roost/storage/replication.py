"""The replication bus: one Redis pub/sub channel that every Roost process shares.

Several processes on one database learn of each other's writes here: stream
positions (a writer's persisted-up-to position and the rooms and users its
writes concern), cache invalidations, typing and presence. Messages are plain
JSON objects `{"k": kind, "i": sender instance, ...body}`, so an operator can
watch them with `redis-cli subscribe`. A message is a hint, never the only
record: positions are also stored (storage/stream_positions.py), so a process
that starts, or that lost Redis for a while, catches up from the database and
then asks the writers to announce again (`on_connect`), and no wake-up is
lost for good.

The subscriber is its own connection (a subscribed Redis connection can do
nothing else); txredisapi reconnects it with backoff after Redis restarts and
this class subscribes again and calls the `on_connect` hooks each time.
Publishing goes through the ordinary pool (storage/redis.py). While the
subscriber is down, publishing is skipped rather than queued: a backlog would
only repeat positions the catch-up reads anyway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.internet.endpoints import HostnameEndpoint

from roost.storage.redis import RedisConnection

logger = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]


class _Subscriber(txredisapi.SubscriberProtocol):
    """The subscribed connection: hands messages and (re)connections to its bus."""

    bus: ReplicationBus

    def connectionMade(self) -> Any:
        d = defer.maybeDeferred(super().connectionMade)
        d.addCallback(lambda _: self.factory.bus._subscribe(self) if self.connected else None)
        return d

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.bus._received(message)

    def connectionLost(self, why: Any) -> None:
        super().connectionLost(why)
        self.factory.bus._lost(self)


class ReplicationBus:
    """Publishes and dispatches this deployment's replication messages.

    `instance` names this process (its worker name); a process never hears
    its own messages. Handlers run on the reactor, in the order subscribed.
    """

    def __init__(self, publisher: RedisConnection, host: str, port: int,
                 password: str | None, channel: str, instance: str) -> None:
        self._publisher = publisher
        self._host, self._port, self._password = host, port, password
        self.channel = channel
        self.instance = instance
        self._handlers: dict[str, list[Handler]] = {}
        self._own_handlers: dict[str, list[Handler]] = {}
        self._on_connect: list[Callable[[], None]] = []
        self._factory: Any = None
        self._protocol: _Subscriber | None = None
        self._first: defer.Deferred[None] | None = None
        self.published = 0
        self.received = 0

    @property
    def connected(self) -> bool:
        """Whether messages flow both ways: subscribed, and the publishing pool is up."""
        return self._protocol is not None and self._publisher.connected

    def subscribe(self, kind: str, handler: Handler, own: bool = False) -> None:
        """Call `handler(sender_instance, message)` for every message of `kind` from others;
        with `own`, for this process's own messages of that kind too (their return tells
        that every message published before them has been delivered here)."""
        self._handlers.setdefault(kind, []).append(handler)
        if own:
            self._own_handlers.setdefault(kind, []).append(handler)

    def on_connect(self, hook: Callable[[], None]) -> None:
        """Call `hook` after every (re)subscription: what was missed meanwhile is caught up there."""
        self._on_connect.append(hook)

    def publish(self, kind: str, body: dict[str, Any]) -> defer.Deferred[Any]:
        """Send a message to every other process; dropped while Redis is unreachable.
        The result fires with Redis's answer once it has taken the message, or with
        None when it was dropped or failed (callers may ignore it)."""
        if not self.connected:
            return defer.succeed(None)
        message = json.dumps({**body, "k": kind, "i": self.instance}, separators=(",", ":"))
        self.published += 1
        d = defer.ensureDeferred(self._publisher.execute("PUBLISH", self.channel, message))
        d.addErrback(lambda f: logger.warning("replication publish failed: %s", f.value))
        return d

    async def start(self, timeout: float = 10.0, required: bool = True) -> None:
        """Connect and subscribe; fails if Redis does not answer within `timeout`, unless
        not `required`: then the subscriber goes on connecting in the background (the
        process polls stored positions meanwhile) and subscribes when Redis appears."""
        factory = txredisapi.RedisFactory(
            f"{self._host}:{self._port}", None, 1, isLazy=True, password=self._password,
            convertNumbers=False)
        factory.protocol = _Subscriber
        factory.bus = self
        factory.maxDelay = 2  # a restarted Redis is found within a few seconds
        self._factory = factory
        self._first = defer.Deferred()
        factory.startConnecting(HostnameEndpoint(global_reactor, self._host, self._port,
                                                 timeout=timeout))
        try:
            await self._first.addTimeout(timeout, global_reactor)
        except defer.TimeoutError:
            if required:
                await self.stop()
                raise
            logger.warning("replication bus: Redis is not reachable; polling stored positions"
                           " until it is")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Unsubscribe for good: no reconnection after this."""
        factory, self._factory = self._factory, None
        if factory is not None:
            await factory.disconnect()
        self._protocol = None

    # -- the subscriber's side ---------------------------------------------------

    def _subscribe(self, protocol: _Subscriber) -> None:
        d = protocol.subscribe(self.channel)
        d.addCallback(lambda _: self._subscribed(protocol))
        d.addErrback(lambda f: logger.warning("replication subscribe failed: %s", f.value))

    def _subscribed(self, protocol: _Subscriber) -> None:
        if self._factory is None or not protocol.connected:
            return
        self._protocol = protocol
        logger.info("replication bus subscribed to %s as %s", self.channel, self.instance)
        for hook in list(self._on_connect):
            try:
                hook()
            except Exception:
                logger.exception("replication on_connect hook failed")
        first, self._first = self._first, None
        if first is not None and not first.called:
            first.callback(None)

    def _lost(self, protocol: _Subscriber) -> None:
        if self._protocol is protocol:
            self._protocol = None
            if self._factory is not None:  # not our own stop
                logger.warning("replication bus lost Redis; reconnecting")

    def _received(self, raw: Any) -> None:
        try:
            message = json.loads(raw)
            kind, sender = message["k"], message["i"]
        except (ValueError, TypeError, KeyError):
            logger.warning("replication: ignored a malformed message %r", raw)
            return
        if sender == self.instance:
            handlers = self._own_handlers.get(kind, ())
        else:
            self.received += 1
            handlers = self._handlers.get(kind, ())
        for handler in handlers:
            try:
                handler(sender, message)
            except Exception:
                logger.exception("replication handler for %s failed", kind)
