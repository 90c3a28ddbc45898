"""Both rate limiters against one table of cases, plus what only one of them promises.

Time is a fake Clock for both: the Redis limiter takes "now" from its clock,
so refills are exact and nothing here waits on the wall clock.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.trial import unittest

from roost.storage.ratelimit import InMemoryRateLimiter, RateLimiter, RedisRateLimiter
from tests.redis_harness import (
    _free_port,
    _spawn,
    _stop,
    _wait_until_up,
    answers_ping,
    isolated_redis,
    redis_connection,
    start_private_redis,
)


@dataclass(frozen=True)
class Step:
    """Advance the clock by `advance`, take, and expect `wait` seconds back."""

    advance: float
    key: str
    per_second: float
    burst: int
    cost: float
    wait: float


CASES: dict[str, list[Step]] = {
    "burst allowed, then refused until one token is back": [
        Step(0, "a", 1, 3, 1, 0.0),
        Step(0, "a", 1, 3, 1, 0.0),
        Step(0, "a", 1, 3, 1, 0.0),
        Step(0, "a", 1, 3, 1, 1.0),
    ],
    "a refused attempt spends nothing": [
        Step(0, "a", 2, 1, 1, 0.0),
        Step(0, "a", 2, 1, 1, 0.5),
        Step(0, "a", 2, 1, 1, 0.5),
        Step(0.25, "a", 2, 1, 1, 0.25),
        Step(0.25, "a", 2, 1, 1, 0.0),
    ],
    "refill over time": [
        Step(0, "a", 0.5, 2, 1, 0.0),
        Step(0, "a", 0.5, 2, 1, 0.0),
        Step(0, "a", 0.5, 2, 1, 2.0),
        Step(1, "a", 0.5, 2, 1, 1.0),
        Step(1, "a", 0.5, 2, 1, 0.0),
        Step(0, "a", 0.5, 2, 1, 2.0),
    ],
    "refill stops at burst": [
        Step(0, "a", 1, 2, 1, 0.0),
        Step(1000, "a", 1, 2, 1, 0.0),
        Step(0, "a", 1, 2, 1, 0.0),
        Step(0, "a", 1, 2, 1, 1.0),
    ],
    "separate keys are independent": [
        Step(0, "a", 1, 1, 1, 0.0),
        Step(0, "a", 1, 1, 1, 1.0),
        Step(0, "b", 1, 1, 1, 0.0),
        Step(0, "b", 1, 1, 1, 1.0),
        Step(0.5, "a", 1, 1, 1, 0.5),
    ],
    "cost above one": [
        Step(0, "a", 2, 5, 3, 0.0),
        Step(0, "a", 2, 5, 3, 0.5),
        Step(0, "a", 2, 5, 2, 0.0),
        Step(0.5, "a", 2, 5, 3, 1.0),
        Step(1, "a", 2, 5, 3, 0.0),
    ],
    "fractional rate and cost": [
        Step(0, "a", 0.1, 1, 0.5, 0.0),
        Step(0, "a", 0.1, 1, 0.5, 0.0),
        Step(0, "a", 0.1, 1, 0.5, 5.0),
        Step(4, "a", 0.1, 1, 1, 6.0),
    ],
}


async def run_steps(limiter: RateLimiter, clock: Clock, steps: list[Step]) -> list[float]:
    """The wait returned at each step."""
    waits = []
    for step in steps:
        clock.advance(step.advance)
        waits.append(await limiter.take(step.key, step.per_second, step.burst, step.cost))
    return waits


def async_test(f: Callable[..., Awaitable[Any]]) -> Callable[..., defer.Deferred[Any]]:
    """Let trial run an `async def` test."""

    def wrapper(self: unittest.TestCase) -> defer.Deferred[Any]:
        return defer.ensureDeferred(f(self))

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


class TableTests(unittest.TestCase):
    """The same cases, the same answers, in memory and in Redis."""

    async def check_table(self, make: Callable[[Clock, str], RateLimiter]) -> None:
        for name, steps in CASES.items():
            clock = Clock()
            clock.advance(1_700_000_000)  # an epoch-like now, as the reactor gives
            waits = await run_steps(make(clock, name), clock, steps)
            for i, (got, step) in enumerate(zip(waits, steps, strict=True)):
                self.assertAlmostEqual(got, step.wait, places=9, msg=f"{name}, step {i}")

    @async_test
    async def test_in_memory(self) -> None:
        await self.check_table(lambda clock, name: InMemoryRateLimiter(clock))

    @async_test
    async def test_redis(self) -> None:
        redis = await isolated_redis(self)
        await self.check_table(
            lambda clock, name: RedisRateLimiter(redis.conn, f"{redis.prefix}{name}:", clock)
        )


class ValidationTests(unittest.TestCase):
    """Settings under which an action could never pass are refused, not answered."""

    @async_test
    async def test_impossible_limits_raise(self) -> None:
        limiter = InMemoryRateLimiter(Clock())
        for per_second, burst, cost in [(0, 1, 1), (1, 0, 1), (1, 2, 3), (1, 2, 0), (float("inf"), 1, 1)]:
            with self.assertRaises(ValueError):
                await limiter.take("a", per_second, burst, cost)
        self.assertEqual(len(limiter), 0)


class InMemoryBoundTests(unittest.TestCase):
    """The dict of buckets never grows past its bound."""

    @async_test
    async def test_many_keys_stay_within_bound(self) -> None:
        limiter = InMemoryRateLimiter(Clock(), max_buckets=8)
        for i in range(100):
            await limiter.take(f"key-{i}", 0.001, 1)
            self.assertLessEqual(len(limiter), 8)
        # the most recent key keeps its state
        self.assertGreater(await limiter.take("key-99", 0.001, 1), 0)

    @async_test
    async def test_full_buckets_are_dropped_before_draining_ones(self) -> None:
        clock = Clock()
        limiter = InMemoryRateLimiter(clock, max_buckets=8)
        for i in range(4):
            await limiter.take(f"busy-{i}", 0.001, 1)
            await limiter.take(f"idle-{i}", 100, 1)
        clock.advance(1)  # idle buckets are full again, busy ones still drain
        await limiter.take("new", 1, 1)
        self.assertEqual(len(limiter), 5)
        for i in range(4):
            self.assertGreater(await limiter.take(f"busy-{i}", 0.001, 1), 0)


class RedisTests(unittest.TestCase):
    """What only the Redis limiter promises: sharing, atomicity, expiry."""

    @async_test
    async def test_two_processes_share_buckets(self) -> None:
        redis = await isolated_redis(self)
        other_conn = await redis_connection(self, redis.host, redis.port)
        clock = Clock()
        first = RedisRateLimiter(redis.conn, redis.prefix, clock)
        second = RedisRateLimiter(other_conn, redis.prefix, clock)
        self.assertEqual(await first.take("user", 1, 2), 0.0)
        self.assertEqual(await second.take("user", 1, 2), 0.0)
        self.assertEqual(await first.take("user", 1, 2), 1.0)
        self.assertEqual(await second.take("user", 1, 2), 1.0)
        clock.advance(1)
        self.assertEqual(await second.take("user", 1, 2), 0.0)
        self.assertEqual(await first.take("user", 1, 2), 1.0)

    @async_test
    async def test_concurrent_takes_never_overspend(self) -> None:
        redis = await isolated_redis(self)
        other_conn = await redis_connection(self, redis.host, redis.port)
        clock = Clock()
        limiters = [RedisRateLimiter(c, redis.prefix, clock) for c in (redis.conn, other_conn)]
        takes = [defer.ensureDeferred(limiters[i % 2].take("k", 1, 10)) for i in range(40)]
        waits = await defer.gatherResults(takes, consumeErrors=True)
        self.assertEqual(waits.count(0.0), 10)

    @async_test
    async def test_other_prefix_is_another_bucket(self) -> None:
        redis = await isolated_redis(self)
        clock = Clock()
        first = RedisRateLimiter(redis.conn, redis.prefix + "one:", clock)
        second = RedisRateLimiter(redis.conn, redis.prefix + "two:", clock)
        self.assertEqual(await first.take("user", 1, 1), 0.0)
        self.assertEqual(await second.take("user", 1, 1), 0.0)

    @async_test
    async def test_bucket_key_expires_once_it_would_be_full(self) -> None:
        redis = await isolated_redis(self)
        limiter = RedisRateLimiter(redis.conn, redis.prefix, Clock())
        await limiter.take("user", 0.1, 3, 2)
        key = f"{redis.prefix}ratelimit:user"
        self.assertEqual(limiter.redis_key("user"), key)
        ttl_ms = await redis.conn.execute("PTTL", key)
        # two tokens at 0.1 a second come back in 20 s; PTTL only counts down
        self.assertGreater(ttl_ms, 0)
        self.assertLessEqual(ttl_ms, 20_000)


class PrivateRedisTests(unittest.TestCase):
    """The fallback for machines without Redis, exercised even where one runs."""

    @async_test
    async def test_private_server_starts_works_and_stops(self) -> None:
        cleanups = Cleanups()
        host, port = await start_private_redis(cleanups)
        self.addCleanup(lambda: defer.ensureDeferred(cleanups.run()))  # if it fails half-way
        self.assertTrue(answers_ping(host, port))
        conn = await redis_connection(cleanups, host, port)
        limiter = RedisRateLimiter(conn, "p:", Clock())
        self.assertEqual(await limiter.take("k", 1, 1), 0.0)
        # a server that has forgotten the script gets it again in full
        await conn.execute("SCRIPT", "FLUSH")
        self.assertEqual(await limiter.take("k", 1, 1), 1.0)
        await cleanups.run()
        self.assertFalse(answers_ping(host, port))


class Cleanups:
    """A stand-in for a TestCase's cleanups, so a test can run them itself."""

    def __init__(self) -> None:
        self._calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def addCleanup(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._calls.append((f, args, kwargs))

    async def run(self) -> None:
        """Last in, first out, like trial; Deferreds are waited for."""
        while self._calls:
            f, args, kwargs = self._calls.pop()
            result = f(*args, **kwargs)
            if isinstance(result, defer.Deferred):
                await result



class RedisDownTests(unittest.TestCase):
    """Issue 17: while Redis is unreachable each process limits on its own, at once."""

    async def test_limits_hold_in_process_while_redis_is_down(self) -> None:
        port, workdir = _free_port(), Path(tempfile.mkdtemp(prefix="roost-redis-"))
        self.addCleanup(shutil.rmtree, workdir, True)
        server = _spawn(workdir, port, workdir / "redis.log")
        self.addCleanup(_stop, server)
        self.assertTrue(await _wait_until_up(server, port))
        conn = await redis_connection(self, "127.0.0.1", port)
        limiter = RedisRateLimiter(conn, "p:", Clock())
        self.assertEqual(await limiter.take("k", 1, 1), 0.0)
        _stop(server)
        while conn.connected:  # the pool notices its connections closing
            await task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(await limiter.take("other", 1, 1), 0.0)  # answered, not waiting
        self.assertEqual(await limiter.take("other", 1, 1), 1.0)  # and still limited
