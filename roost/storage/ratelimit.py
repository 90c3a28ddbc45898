"""Token-bucket rate limits, in this process or shared by all processes through Redis.

A bucket holds up to `burst` tokens and gains `per_second` tokens a second;
an action costs `cost` tokens. `take` answers 0.0 when the action may go
ahead (and spends the tokens), else the seconds until it would be allowed
(and spends nothing, so a client that keeps retrying too early is not pushed
further back). A bucket that has refilled to `burst` is the same as no bucket
at all, which is what lets both implementations forget idle buckets without
changing any answer.

Time comes from the clock passed in, never from the Redis server, so the two
implementations give the same answers and tests drive both with a fake Clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IReactorTime

if TYPE_CHECKING:  # txredisapi is imported only by a server that has Redis enabled
    from roost.storage.redis import RedisConnection


class RateLimiter(Protocol):
    """What the HTTP layer needs: may this action on this key happen now?"""

    async def take(self, key: str, per_second: float, burst: int, cost: float = 1.0) -> float:
        """Spend `cost` tokens and return 0.0, or return the seconds to wait."""
        ...


def check_limits(per_second: float, burst: int, cost: float) -> None:
    """Refuse settings under which an action could never be allowed."""
    if not (math.isfinite(per_second) and per_second > 0):
        raise ValueError(f"per_second must be positive and finite, not {per_second!r}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, not {burst!r}")
    if not 0 < cost <= burst:
        raise ValueError(f"cost must be in (0, burst={burst}], not {cost!r}")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    full_at: float


def _take(
    bucket: _Bucket | None, now: float, per_second: float, burst: int, cost: float
) -> tuple[_Bucket, float]:
    """The bucket after an attempt, and the wait; mirrored line by line in _TAKE_LUA."""
    if bucket is None:
        tokens, updated = float(burst), now
    else:
        elapsed = max(0.0, now - bucket.updated)
        tokens = min(float(burst), bucket.tokens + elapsed * per_second)
        updated = max(bucket.updated, now)
    wait = 0.0
    if tokens >= cost:
        tokens -= cost
    else:
        wait = (cost - tokens) / per_second
    return _Bucket(tokens, updated, updated + (burst - tokens) / per_second), wait


class InMemoryRateLimiter:
    """Buckets in a dict: right for one process, and the default without Redis.

    At most `max_buckets` are kept. When a new key finds the dict full, the
    buckets that have refilled are dropped (that changes no answer), then, if
    more than three quarters of the bound remain, the least recently used ones
    down to that mark; so the O(n) sweep runs at most once per
    `max_buckets // 4` new keys. Dropping a bucket that was still draining
    gives its key a fresh burst: under a flood of distinct keys we choose
    bounded memory over exactness.
    """

    def __init__(self, clock: IReactorTime, max_buckets: int = 100_000) -> None:
        if max_buckets < 4:
            raise ValueError("max_buckets must be at least 4")
        self._clock = clock
        self._max = max_buckets
        self._buckets: dict[str, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, key: str, per_second: float, burst: int, cost: float = 1.0) -> float:
        check_limits(per_second, burst, cost)
        now = self._clock.seconds()
        old = self._buckets.pop(key, None)
        if old is None and len(self._buckets) >= self._max:
            self._prune(now)
        # popped and re-inserted, so the dict's order is least recently used first
        self._buckets[key], wait = _take(old, now, per_second, burst, cost)
        return wait

    def _prune(self, now: float) -> None:
        """Forget full buckets, then the least recently used ones if still needed."""
        for key in [k for k, b in self._buckets.items() if b.full_at <= now]:
            del self._buckets[key]
        excess = len(self._buckets) - self._max * 3 // 4
        for key in list(self._buckets)[: max(0, excess)]:
            del self._buckets[key]


# KEYS[1] the bucket; ARGV now, per_second, burst, cost. Returns the wait as a
# string, because Redis truncates Lua numbers to integers in replies.
_TAKE_LUA = """
local now = tonumber(ARGV[1])
local per_second = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens, updated = burst, now
else
  local elapsed = math.max(0, now - updated)
  tokens = math.min(burst, tokens + elapsed * per_second)
  updated = math.max(updated, now)
end
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / per_second
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'updated', string.format('%.17g', updated))
local ttl_ms = math.ceil((burst - tokens) / per_second * 1000)
redis.call('PEXPIRE', KEYS[1], math.max(ttl_ms, 1000))
return string.format('%.17g', wait)
"""


class RedisRateLimiter:
    """Buckets in Redis, so that every process of a deployment shares each limit.

    One Lua script reads, refills, spends and writes a bucket, so concurrent
    takes from several processes cannot both spend the same tokens. Each
    bucket expires once it would have refilled (at least a second later), so
    idle keys leave Redis by themselves.
    """

    def __init__(self, redis: RedisConnection, key_prefix: str, clock: IReactorTime) -> None:
        self.redis = redis  # also what /health pings
        self._redis = redis
        self._prefix = key_prefix
        self._clock = clock
        # While Redis is unreachable each process limits on its own (issue 17: keep
        # serving), rather than make every request wait for Redis to come back.
        self._local = InMemoryRateLimiter(clock)

    def redis_key(self, key: str) -> str:
        """The Redis key of a bucket; public so that tests and admins can find it."""
        return f"{self._prefix}ratelimit:{key}"

    async def take(self, key: str, per_second: float, burst: int, cost: float = 1.0) -> float:
        check_limits(per_second, burst, cost)
        # repr() keeps every bit of a float; txredisapi would round it to 6 places
        args = [repr(float(x)) for x in (self._clock.seconds(), per_second, burst, cost)]
        from roost.storage.redis import RedisUnavailable

        try:
            return float(await self._redis.eval_script(_TAKE_LUA, [self.redis_key(key)], args))
        except RedisUnavailable:
            return await self._local.take(key, per_second, burst, cost)
