"""Session revocations across processes: over the replication bus, exact.

A process that caches sessions (storage/session_cache.py) may trust its
cache only while it is sure to hear every revocation another process makes.
Redis delivers the messages of one channel to each subscriber in the order
it took them, which gives two tools:

- **A lease.** Every caching process publishes a `lease` message to itself
  every LEASE_S / 4. When its own message comes back, every message Redis
  took before it (every revocation published earlier) has been handled here,
  so the cache is trusted until LEASE_S after that message was *sent*. A
  process cut off from Redis (or too slow to read it) stops trusting its
  cache within LEASE_S and reads session rows instead; when its lease comes
  back after having lapsed, it empties its cache first (it may have missed
  revocations meanwhile). A (re)subscription ends the lease at once, however
  short the gap was: what was published meanwhile never arrives.
- **Acknowledgements.** A revocation is published after its transaction has
  committed, with a nonce; every caching process drops the users' sessions and
  answers `revoke_ack`. The revoking process waits for its own message to come
  back (it has then heard every lease message sent before its revocation),
  then for an acknowledgement from every caching process it heard from in the
  last LEASE_S. A process it did not hear from for that long cannot hold a
  lease taken before the revocation (its lease messages would have arrived);
  one that holds a later lease has handled the revocation before it. If
  anything goes wrong (Redis away, a process that does not answer, this
  process subscribed too recently to know who caches), the revoking request
  waits until LEASE_S after the revocation: every lease that could have missed
  it has run out by then.

So a revoked token is refused by every process once the revoking request has
answered, Redis or not; without Redis that answer takes LEASE_S longer.
Leases compare time spans measured by each process's monotonic clock, never
the clocks' values.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task

from roost.storage.session_cache import MAX_AGE_S, SessionCache

logger = logging.getLogger(__name__)

LEASE_S = 2.0
# Monotonic clocks of two processes may run at very slightly different rates.
MARGIN_S = 0.1


class BusRevocations:
    """The revocation protocol of one process on the replication bus (see the module doc).

    `caches`: whether this process serves requests from its session cache (a
    command run beside the instances revokes but does not cache)."""

    def __init__(self, bus: Any, cache: SessionCache, reactor: Any, caches: bool,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._bus = bus
        self._cache = cache
        self._reactor = reactor
        self._caches = caches
        self._monotonic = monotonic
        self._lease_until = 0.0
        self._subscribed_at: float | None = None
        self._heard: dict[str, float] = {}  # caching instance -> when its lease was heard
        self._waiting: dict[str, _Revocation] = {}
        self._loop: task.LoopingCall | None = None
        bus.subscribe("revoke", self._on_revoke, own=True)
        bus.subscribe("revoke_ack", self._on_ack)
        bus.subscribe("lease", self._on_lease, own=True)
        bus.on_connect(self._connected)
        cache.trusted = self.trusted if caches else (lambda: False)
        cache.announce = self.announce

    def trusted(self) -> bool:
        return self._monotonic() < self._lease_until

    def start(self) -> None:
        if self._caches:
            self._loop = task.LoopingCall(self._send_lease)
            self._loop.clock = self._reactor
            self._loop.start(LEASE_S / 4, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._lease_until = 0.0

    # -- leases ------------------------------------------------------------------

    def _connected(self) -> None:
        """(Re)subscribed. Messages published while the subscription was down never
        arrive, revocations among them; a lease still running from before would make the
        cache trusted again as soon as the next lease returned, with a missed revocation's
        sessions in it (until MAX_AGE_S). So the lease ends here: the next one to come
        back finds it lapsed and empties the cache."""
        self._subscribed_at = self._monotonic()
        self._lease_until = 0.0
        if self._caches:
            self._send_lease()

    def _send_lease(self) -> None:
        self._bus.publish("lease", {"t": self._monotonic()})

    def _on_lease(self, sender: str, message: dict[str, Any]) -> None:
        now = self._monotonic()
        if sender != self._bus.instance:
            self._heard[sender] = now
            return
        if not self._caches:
            return
        if now >= self._lease_until:
            # Lapsed (or the first): a revocation may have gone by unheard.
            self._cache.clear()
        self._lease_until = max(self._lease_until, float(message["t"]) + LEASE_S)

    # -- revocations -------------------------------------------------------------

    async def announce(self, users: list[str]) -> None:
        """Tell every process; return once none can still accept these users' sessions."""
        deadline = self._monotonic() + LEASE_S + MARGIN_S
        nonce = secrets.token_hex(8)
        revocation = _Revocation()
        self._waiting[nonce] = revocation
        try:
            publishing = self._bus.publish("revoke", {"n": nonce, "u": users})
            try:
                taken = await publishing.addTimeout(LEASE_S, self._reactor)
            except defer.TimeoutError:
                taken = None
            if taken is not None:
                remaining = deadline - self._monotonic()
                if remaining > 0:
                    try:
                        await revocation.done.addTimeout(remaining, self._reactor)
                        return
                    except defer.TimeoutError:
                        logger.warning(
                            "session revocation: %s; waiting out the leases",
                            f"no answer from {sorted(revocation.pending)}" if revocation.echoed
                            else "not yet sure which processes cache sessions")
            remaining = deadline - self._monotonic()
            if remaining > 0:
                await task.deferLater(self._reactor, remaining)
        finally:
            self._waiting.pop(nonce, None)

    def _on_revoke(self, sender: str, message: dict[str, Any]) -> None:
        users, nonce = message.get("u"), message.get("n")
        if not isinstance(users, list) or not isinstance(nonce, str):
            return
        if sender != self._bus.instance:
            self._cache.drop_users(u for u in users if isinstance(u, str))
            if self._caches:
                self._bus.publish("revoke_ack", {"n": nonce, "to": sender})
            return
        revocation = self._waiting.get(nonce)
        if revocation is None or revocation.done.called:
            return
        now = self._monotonic()
        if self._subscribed_at is None or now - self._subscribed_at < LEASE_S:
            return  # too new to know every caching process: wait out the leases
        revocation.echoed = True
        revocation.pending = {i for i, heard in self._heard.items() if now - heard < LEASE_S}
        revocation.settle()

    def _on_ack(self, sender: str, message: dict[str, Any]) -> None:
        if message.get("to") != self._bus.instance:
            return
        revocation = self._waiting.get(str(message.get("n")))
        if revocation is not None and revocation.echoed:
            revocation.pending.discard(sender)
            revocation.settle()


class _Revocation:
    """One revocation this process announced, waiting for its answers."""

    def __init__(self) -> None:
        self.done: defer.Deferred[None] = defer.Deferred()
        self.echoed = False
        self.pending: set[str] = set()

    def settle(self) -> None:
        if self.echoed and not self.pending and not self.done.called:
            self.done.callback(None)


def outlive_cached_entries(cache: SessionCache, reactor: Any) -> None:
    """A command run beside one process (no bus between them): its revocations answer
    once every entry the server may have cached before them is too old to be used."""

    async def wait(users: list[str]) -> None:
        await task.deferLater(reactor, MAX_AGE_S)

    cache.announce = wait
