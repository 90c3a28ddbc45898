"""The one place that talks to Redis: a thin wrapper over a txredisapi pool.

Roost uses Redis for state that several processes must share (rate limits,
and later the notifier's positions). The wrapper exists so that the rest of
storage depends on three methods rather than on txredisapi's large surface, and
so that scripts always run as EVALSHA with a fallback to EVAL: the script is
sent in full only the first time a server (or a restarted one) sees it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

logger = logging.getLogger(__name__)


class RedisUnavailable(ConnectionError):
    """Redis is not reachable now (the pool is reconnecting): callers fall back."""


class RedisConnection:
    """A pool of connections to one Redis database."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    @property
    def connected(self) -> bool:
        """Whether any connection of the pool is up (else a command would wait for one)."""
        return bool(self._handler._factory.size)

    async def execute(self, *args: str | int | bytes) -> Any:
        """Run one command; bulk replies come back as str, integers as int.

        Raises RedisUnavailable at once while no connection is up, rather than
        waiting for the pool to reconnect: a request must not hang on Redis.
        """
        if not self.connected:
            raise RedisUnavailable("Redis is not connected")
        try:
            return await self._handler.execute_command(*args)
        except txredisapi.ConnectionError as e:
            raise RedisUnavailable(str(e)) from e

    async def eval_script(self, script: str, keys: list[str], args: list[str]) -> Any:
        """Run a Lua script, by its hash when the server already knows it."""
        sha = hashlib.sha1(script.encode()).hexdigest()
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except txredisapi.ResponseError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script, len(keys), *keys, *args)

    async def close(self) -> None:
        """Stop reconnecting and close every connection of the pool."""
        await self._handler.disconnect()


async def connect_redis(
    reactor_or_none: IReactorTime | None,
    host: str,
    port: int,
    db: int,
    password: str | None,
    *,
    poolsize: int = 4,
    connect_timeout: float = 10.0,
    max_delay: float | None = None,
    required: bool = True,
) -> RedisConnection:
    """Open a pool and wait until all of it is connected, so a bad address fails startup.

    A wrong password or db number fails at once; an unreachable server after
    `connect_timeout`. Later, lost connections are re-established, and
    commands wait for one. txredisapi schedules its own work on the global
    reactor, so `reactor_or_none` must be None or that reactor: wiring passes
    it explicitly, and a different one is refused rather than ignored.

    `required=False` (several processes, issue 17: they keep serving without
    Redis): an unreachable server does not fail the start. After
    `connect_timeout` the pool is returned still connecting in the background
    (its commands raise RedisUnavailable until a connection is up); a server
    that answers and refuses (a wrong password or db) still fails.
    """
    if reactor_or_none is not None and reactor_or_none is not global_reactor:
        raise ValueError("txredisapi only runs on the global reactor")
    factory = txredisapi.RedisFactory(
        f"{host}:{port}", db, poolsize, isLazy=True, password=password, convertNumbers=False
    )
    if max_delay is not None:  # the longest wait between reconnection attempts
        factory.maxDelay = max_delay
    factory.startConnecting(HostnameEndpoint(global_reactor, host, port, timeout=connect_timeout))
    conn = RedisConnection(factory.handler)
    ready: defer.Deferred[None] = defer.Deferred()
    # the factory's Deferred has no canceller, so it is relayed rather than timed out itself
    factory.deferred.addBoth(_relay, ready)
    try:
        await ready.addTimeout(connect_timeout, global_reactor)
    except defer.TimeoutError:
        if not required:
            logger.warning("Redis at %s:%s is not reachable; serving without it and"
                           " connecting in the background", host, port)
            return conn
        await conn.close()
        raise ConnectionError(f"Redis at {host}:{port} did not answer in {connect_timeout}s") from None
    except BaseException:
        await conn.close()
        raise
    return conn


def _relay(result: Any, ready: defer.Deferred[None]) -> None:
    """Pass the pool's outcome on, unless the wait for it has already timed out."""
    if ready.called:
        if isinstance(result, Failure):  # a late refusal of a pool started without Redis
            logger.error("Redis refused the connection: %s", result.value)
        return
    if isinstance(result, Failure):
        ready.errback(result)
    else:
        ready.callback(None)
