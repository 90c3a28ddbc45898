"""Typing and presence shared between two processes over the replication bus (real Redis)."""

from __future__ import annotations

import uuid

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from roost.client_api.presence import PresenceTracker
from roost.client_api.typing import TypingTracker
from roost.storage.notifier import Notifier, StreamChange
from roost.storage.redis import connect_redis
from roost.storage.replication import ReplicationBus
from roost.storage.streams import StreamIdGenerator
from tests.redis_harness import redis_for_tests
from tests.storage.test_replication import until


class ReplicatedEphemeralTests(TestCase):
    async def _buses(self) -> tuple[ReplicationBus, ReplicationBus]:
        host, port = await redis_for_tests(self)
        channel = f"roost-test:{uuid.uuid4().hex}:replication"
        buses = []
        for name in ("a", "b"):
            publisher = await connect_redis(None, host, port, 0, None)
            bus = ReplicationBus(publisher, host, port, None, channel, name)
            await bus.start()
            self.addCleanup(lambda p=publisher: defer.ensureDeferred(p.close()))
            self.addCleanup(lambda b=bus: defer.ensureDeferred(b.stop()))
            buses.append(bus)
        return buses[0], buses[1]

    def _typing(self, bus: ReplicationBus) -> tuple[TypingTracker, list[StreamChange]]:
        notifier = Notifier()
        heard: list[StreamChange] = []
        notifier.add_listener(heard.append)
        tracker = TypingTracker(reactor, notifier)
        tracker.replicate(bus)
        self.addCleanup(tracker.stop)
        return tracker, heard

    async def test_typing_in_one_process_wakes_and_shows_in_the_other(self) -> None:
        bus_a, bus_b = await self._buses()
        a, _ = self._typing(bus_a)
        b, heard_b = self._typing(bus_b)
        a.set_typing("!room", "@alice:t", 30_000)
        await until(lambda: b.typing_users("!room") == ["@alice:t"], "b sees alice typing")
        self.assertEqual(heard_b[-1].rooms, frozenset({"!room"}))
        a.stop_typing("!room", "@alice:t")
        await until(lambda: b.typing_users("!room") == [], "b sees her stop")
        self.assertEqual(bus_b.published, 0)  # b repeats nothing back

    async def test_presence_set_in_one_process_is_seen_in_the_other(self) -> None:
        bus_a, bus_b = await self._buses()
        trackers = []
        for bus in (bus_a, bus_b):
            tracker = PresenceTracker(reactor, Notifier(), StreamIdGenerator(0))
            tracker.replicate(bus)
            self.addCleanup(tracker.stop)
            trackers.append(tracker)
        a, b = trackers
        await a.set_presence("@alice:t", "unavailable", "away")
        await until(lambda: b.get("@alice:t")["presence"] == "unavailable", "b sees it")
        self.assertEqual(b.get("@alice:t")["status_msg"], "away")
        self.assertEqual([e["sender"] for e in b.changes_since(0, {"@alice:t"})], ["@alice:t"])
