"""Shared streams: several writers, readers that never skip a write committing late."""

from __future__ import annotations

import random

from twisted.trial.unittest import TestCase

from roost.storage.notifier import Notifier, StreamChange
from roost.storage.shared_streams import SharedStream, StateGroupIds


class _Relay:
    """Claims as the bus carries them: queued, then delivered in any order the test picks."""

    def __init__(self, streams: list[SharedStream]) -> None:
        self.streams = streams
        self.queue: list[tuple[str, int, frozenset[str], frozenset[str]]] = []
        for stream in streams:
            stream.on_claim(lambda claim, rooms, users, s=stream:
                            self.queue.append((s.instance, claim, rooms, users)))

    def deliver(self, index: int = 0) -> None:
        sender, claim, rooms, users = self.queue.pop(index)
        for stream in self.streams:
            if stream.instance != sender:
                stream.observe(sender, claim, rooms, users)

    def deliver_all(self) -> None:
        while self.queue:
            self.deliver()


def _layout(start: int = 10) -> tuple[SharedStream, SharedStream, SharedStream, _Relay,
                                      list[StreamChange]]:
    writers = ["a", "b"]
    a = SharedStream("events", "a", writers, start)
    b = SharedStream("events", "b", writers, start)
    notifier = Notifier()
    heard: list[StreamChange] = []
    notifier.add_listener(heard.append)
    reader = SharedStream("events", "r", writers, start, {"a": start, "b": start}, notifier)
    return a, b, reader, _Relay([a, b, reader]), heard


class TwoWriterTests(TestCase):
    def test_writers_allocate_disjoint_positions(self) -> None:
        a, b, _, _, _ = _layout()
        taken = a.allocate(3) + b.allocate(3) + a.allocate(2)
        self.assertEqual(len(set(taken)), len(taken))
        self.assertTrue(all(p > 10 for p in taken))

    def test_a_reader_waits_for_the_writer_still_in_flight(self) -> None:
        a, b, reader, relay, heard = _layout()
        [late] = b.allocate(1)
        [early] = a.allocate(1)
        self.assertLess(late, early)
        a.finish([early], rooms=["!a"])
        relay.deliver_all()
        self.assertEqual((reader.current, heard), (10, []))  # b's write is below, unfinished
        b.finish([late], rooms=["!b"], users=["@b"])
        relay.deliver_all()
        self.assertGreaterEqual(reader.current, early)
        self.assertEqual(heard[-1].rooms, frozenset({"!a", "!b"}))
        self.assertEqual(heard[-1].users, frozenset({"@b"}))
        self.assertEqual(sum(1 for h in heard for r in h.rooms if r == "!a"), 1)

    def test_an_idle_writer_lets_readers_past_it(self) -> None:
        a, b, reader, relay, _ = _layout()
        positions = a.allocate(5)
        a.finish(positions, rooms=["!a"])
        relay.deliver_all()  # b hears of a's claim, advances its own and says so
        self.assertGreaterEqual(reader.current, max(positions))
        self.assertGreaterEqual(a.current, max(positions))
        [next_b] = b.allocate(1)
        self.assertGreater(next_b, max(positions))  # an idle advance only allocates above

    def test_a_follower_cannot_allocate(self) -> None:
        _, _, reader, _, _ = _layout()
        self.assertRaises(RuntimeError, reader.allocate, 1)

    def test_claims_arriving_out_of_order_never_move_back(self) -> None:
        a, b, reader, relay, _ = _layout()
        for _ in range(3):
            a.finish(a.allocate(1))
        relay.queue.reverse()
        relay.deliver_all()
        self.assertEqual(reader.current, min(a.claim, b.claim))
        self.assertGreaterEqual(reader.current, 15)


class RandomInterleavingTests(TestCase):
    """Random allocations, commits and deliveries: no reader ever passes an unfinished write."""

    def _interleave(self, seed: int) -> None:
        rng = random.Random(seed)
        writers = ["w0", "w1", "w2"]
        streams = [SharedStream("s", w, writers, 0) for w in writers]
        streams.append(SharedStream("s", "reader", writers, 0))
        relay = _Relay(streams)
        read_upto = {s.instance: 0 for s in streams}
        seen: dict[str, list[int]] = {s.instance: [] for s in streams}
        committed: set[int] = set()
        in_flight: list[tuple[SharedStream, list[int]]] = []
        allocated: set[int] = set()
        for _ in range(400):
            action = rng.random()
            if action < 0.35:
                writer = rng.choice(streams[:3])
                ids = writer.allocate(rng.randint(1, 3))
                allocated.update(ids)
                in_flight.append((writer, ids))
            elif action < 0.7 and in_flight:
                writer, ids = in_flight.pop(rng.randrange(len(in_flight)))
                if rng.random() < 0.9:
                    committed.update(ids)
                writer.finish(ids, rooms=["!r"])
            elif relay.queue:
                relay.deliver(rng.randrange(len(relay.queue)))
            for s in streams:  # each process reads what it may: (read_upto, current]
                unfinished = {p for _, ids in in_flight for p in ids}
                self.assertFalse([p for p in unfinished if p <= s.current],
                                 f"seed {seed}: {s.instance} passed an unfinished write")
                seen[s.instance] += sorted(p for p in committed
                                           if read_upto[s.instance] < p <= s.current)
                read_upto[s.instance] = s.current
        for writer, ids in in_flight:
            committed.update(ids)
            writer.finish(ids)
        relay.deliver_all()
        for s in streams:
            seen[s.instance] += sorted(p for p in committed if read_upto[s.instance] < p <= s.current)
            self.assertEqual(seen[s.instance], sorted(committed), f"seed {seed}: {s.instance}")

    def test_many_seeds(self) -> None:
        for seed in range(40):
            self._interleave(seed)


class StateGroupIdTests(TestCase):
    def test_event_writers_never_share_an_id(self) -> None:
        first, second = StateGroupIds(100, 0, 2), StateGroupIds(130, 1, 2)
        ids = [first.next() for _ in range(50)] + [second.next() for _ in range(50)]
        self.assertEqual(len(set(ids)), 100)
        self.assertTrue(all(i > 100 for i in ids))

    def test_one_writer_counts_up_by_one(self) -> None:
        ids = StateGroupIds(7)
        self.assertEqual([ids.next() for _ in range(3)], [8, 9, 10])
