"""The revocation protocol on an ordered bus, with a fake clock: leases, acknowledgements,
and a revoking process that waits out the leases of a process that does not answer."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from roost.storage.session_cache import SessionCache
from roost.storage.session_revocations import LEASE_S, MARGIN_S, BusRevocations


class _Hub:
    """Redis's part: every message reaches every subscriber in the order published."""

    def __init__(self) -> None:
        self.buses: list[_Bus] = []
        self._queue: deque[tuple[str, str, dict[str, Any]]] = deque()
        self._draining = False
        self.up = True

    def publish(self, sender: str, kind: str, body: dict[str, Any]) -> None:
        self._queue.append((sender, kind, body))
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue:
                sender, kind, body = self._queue.popleft()
                for bus in self.buses:
                    if bus.listening:
                        bus.deliver(sender, kind, body)
        finally:
            self._draining = False


class _Bus:
    """ReplicationBus's interface, on the hub."""

    def __init__(self, hub: _Hub, instance: str) -> None:
        self.hub, self.instance = hub, instance
        self.listening = True
        self._handlers: dict[str, list[tuple[Callable[..., None], bool]]] = {}
        self._on_connect: list[Callable[[], None]] = []
        hub.buses.append(self)

    def subscribe(self, kind: str, handler: Callable[..., None], own: bool = False) -> None:
        self._handlers.setdefault(kind, []).append((handler, own))

    def on_connect(self, hook: Callable[[], None]) -> None:
        self._on_connect.append(hook)

    def connect(self) -> None:
        for hook in self._on_connect:
            hook()

    def publish(self, kind: str, body: dict[str, Any]) -> defer.Deferred[Any]:
        if not self.hub.up:
            return defer.succeed(None)
        self.hub.publish(self.instance, kind, body)
        return defer.succeed(1)

    def deliver(self, sender: str, kind: str, body: dict[str, Any]) -> None:
        for handler, own in self._handlers.get(kind, ()):
            if sender != self.instance or own:
                handler(sender, body)


class RevocationTests(TestCase):
    def _process(self, hub: _Hub, clock: Clock, name: str, caches: bool = True
                 ) -> tuple[_Bus, SessionCache, BusRevocations]:
        bus = _Bus(hub, name)
        cache = SessionCache(monotonic=clock.seconds)
        revocations = BusRevocations(bus, cache, clock, caches=caches, monotonic=clock.seconds)
        bus.connect()
        revocations.start()
        self.addCleanup(revocations.stop)
        return bus, cache, revocations

    def _settled(self, clock: Clock) -> None:
        """Past the time a process must have been subscribed to trust its view."""
        for _ in range(int(LEASE_S / 0.25) + 2):
            clock.advance(0.25)

    def test_a_revocation_answers_once_every_caching_process_dropped_it(self) -> None:
        hub, clock = _Hub(), Clock()
        _, writer_cache, writer = self._process(hub, clock, "writer")
        _, reader_cache, _ = self._process(hub, clock, "reader")
        self._settled(clock)
        self.assertTrue(reader_cache.trusted())
        reader_cache.put("s1", ("@a:hs", "D", False), reader_cache.begin_load())
        self.assertIsNotNone(reader_cache.get("s1"))
        done = defer.ensureDeferred(writer_cache.revoked(["@a:hs"]))
        self.assertTrue(done.called)  # acknowledged at once: no lease waited out
        self.assertIsNone(reader_cache.get("s1"))

    def test_a_process_that_does_not_answer_is_waited_out(self) -> None:
        hub, clock = _Hub(), Clock()
        _, writer_cache, _ = self._process(hub, clock, "writer")
        reader_bus, reader_cache, _ = self._process(hub, clock, "reader")
        self._settled(clock)
        reader_cache.put("s1", ("@a:hs", "D", False), reader_cache.begin_load())
        reader_bus.listening = False  # cut off: hears nothing more, but still holds a lease
        self.assertTrue(reader_cache.trusted())
        done = defer.ensureDeferred(writer_cache.revoked(["@a:hs"]))
        clock.advance(LEASE_S - 0.3)
        self.assertFalse(done.called)
        clock.advance(0.3 + MARGIN_S)
        self.assertTrue(done.called)
        # By then the silent process no longer trusts what it holds.
        self.assertFalse(reader_cache.trusted())
        self.assertIsNone(reader_cache.get("s1"))

    def test_without_the_bus_the_revocation_waits_out_the_leases(self) -> None:
        hub, clock = _Hub(), Clock()
        _, writer_cache, _ = self._process(hub, clock, "writer")
        _, reader_cache, _ = self._process(hub, clock, "reader")
        self._settled(clock)
        reader_cache.put("s1", ("@a:hs", "D", False), reader_cache.begin_load())
        hub.up = False
        done = defer.ensureDeferred(writer_cache.revoked(["@a:hs"]))
        clock.advance(LEASE_S / 2)
        self.assertFalse(done.called)
        clock.advance(LEASE_S / 2 + MARGIN_S)
        self.assertTrue(done.called)
        self.assertIsNone(reader_cache.get("s1"))

    def test_a_lease_that_lapsed_empties_the_cache_when_it_returns(self) -> None:
        hub, clock = _Hub(), Clock()
        reader_bus, reader_cache, _ = self._process(hub, clock, "reader")
        self._settled(clock)
        reader_cache.put("s1", ("@a:hs", "D", False), reader_cache.begin_load())
        ticket = reader_cache.begin_load()  # a row read in flight across the gap
        reader_bus.listening = False
        clock.advance(LEASE_S + 0.1)
        self.assertFalse(reader_cache.trusted())
        reader_bus.listening = True  # a revocation may have gone by meanwhile
        clock.advance(LEASE_S / 4)
        self.assertTrue(reader_cache.trusted())
        self.assertEqual(len(reader_cache), 0)
        reader_cache.put("s2", ("@b:hs", "D", False), ticket)
        self.assertIsNone(reader_cache.get("s2"))

    def test_a_revocation_missed_during_a_short_reconnection_is_not_served(self) -> None:
        """Redis drops a subscriber's messages only with its connection: back within the
        lease, the process must still forget what it held."""
        hub, clock = _Hub(), Clock()
        _, writer_cache, _ = self._process(hub, clock, "writer")
        reader_bus, reader_cache, _ = self._process(hub, clock, "reader")
        self._settled(clock)
        reader_cache.put("s1", ("@a:hs", "D", False), reader_cache.begin_load())
        reader_bus.listening = False  # the subscription drops
        done = defer.ensureDeferred(writer_cache.revoked(["@a:hs"]))
        clock.advance(0.5)
        reader_bus.listening = True
        reader_bus.connect()  # resubscribed well within the lease
        for _ in range(int((LEASE_S + MARGIN_S) / 0.25) + 1):
            clock.advance(0.25)  # its leases come back all along
        self.assertTrue(done.called)
        self.assertTrue(reader_cache.trusted())
        self.assertIsNone(reader_cache.get("s1"))

    def test_a_command_beside_the_processes_waits_until_it_knows_who_caches(self) -> None:
        hub, clock = _Hub(), Clock()
        _, _, _ = self._process(hub, clock, "reader")
        self._settled(clock)
        _, tool_cache, _ = self._process(hub, clock, "(tool)", caches=False)
        self.assertFalse(tool_cache.trusted())
        done = defer.ensureDeferred(tool_cache.revoked(["@a:hs"]))
        self.assertFalse(done.called)  # just subscribed: it cannot know every process yet
        clock.advance(LEASE_S + MARGIN_S)
        self.assertTrue(done.called)
