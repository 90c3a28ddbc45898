"""The long polls' deadline queue (client_api/sync_deadlines.py): each entry times out at
its deadline, not before, in deadline order, on one reactor timer; entries dropped before
never do, and the heap stays bounded by the entries still waiting."""

from __future__ import annotations

import random

from twisted.internet import task
from twisted.trial.unittest import TestCase

from roost.client_api.sync_deadlines import DeadlineQueue


class _Entry:
    def __init__(self, name: str, fired: list[tuple[str, float]], clock: task.Clock) -> None:
        self.name, self._fired, self._clock = name, fired, clock

    def timed_out(self) -> None:
        self._fired.append((self.name, self._clock.seconds()))


def _clock() -> task.Clock:
    clock = task.Clock()
    clock.advance(1_800_000_000.123)
    return clock


class DeadlineQueueTests(TestCase):
    def test_each_entry_times_out_at_its_deadline_in_order(self) -> None:
        clock, fired = _clock(), []
        queue = DeadlineQueue(clock)
        start = clock.seconds()
        queue.add(_Entry("b", fired, clock), 20)
        queue.add(_Entry("a", fired, clock), 10)  # earlier than the timer: moves it
        clock.advance(5)
        queue.add(_Entry("c", fired, clock), 15)  # due with b
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(4.999)
        self.assertEqual(fired, [])
        clock.advance(0.001)
        self.assertEqual(fired, [("a", start + 10)])
        clock.advance(9.999)
        self.assertEqual([name for name, _ in fired], ["a"])
        clock.advance(0.001)
        self.assertEqual([name for name, _ in fired], ["a", "b", "c"])
        self.assertEqual(len(queue), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_dropped_entry_never_times_out(self) -> None:
        clock, fired = _clock(), []
        queue = DeadlineQueue(clock)
        first = queue.add(_Entry("a", fired, clock), 10)
        queue.add(_Entry("b", fired, clock), 30)
        queue.drop(first)
        clock.advance(10)
        self.assertEqual(fired, [])
        self.assertEqual(len(clock.getDelayedCalls()), 1)  # moved on to b
        clock.advance(20)
        self.assertEqual([name for name, _ in fired], ["b"])
        # Nothing left waiting: no timer is left either.
        queue.drop(queue.add(_Entry("c", fired, clock), 10))
        self.assertEqual((len(queue._heap), clock.getDelayedCalls()), (0, []))

    def test_an_entry_that_queues_again_when_timed_out_is_timed_again(self) -> None:
        clock, fired = _clock(), []
        queue = DeadlineQueue(clock)

        class Again(_Entry):
            def timed_out(self) -> None:
                super().timed_out()
                if len(fired) < 3:
                    queue.add(self, 5)

        queue.add(Again("a", fired, clock), 5)
        queue.add(_Entry("late", fired, clock), 12)
        clock.pump([5, 5, 1, 1, 5])
        self.assertEqual([name for name, _ in fired], ["a", "a", "late", "a"])

    def test_many_polls_answered_early_keep_the_heap_small(self) -> None:
        """The fan-out's pattern: polls answered long before their timeout. Random
        timeouts and drops; every entry still waiting times out exactly at its deadline."""
        clock, fired = _clock(), []
        queue = DeadlineQueue(clock)
        rng = random.Random(7)
        waiting: dict[str, tuple[int, float]] = {}
        expected: list[tuple[str, float]] = []
        for step in range(5000):
            name = f"e{step}"
            timeout = rng.choice([0.5, 5.0, 30.0, rng.uniform(0, 40)])
            waiting[name] = (queue.add(_Entry(name, fired, clock), timeout),
                             clock.seconds() + timeout)
            self.assertLessEqual(len(queue._heap), 2 * len(queue) + 64)
            if waiting and rng.random() < 0.9:
                gone = rng.choice(list(waiting))
                queue.drop(waiting.pop(gone)[0])
            clock.advance(rng.uniform(0, 0.05))
            for done, _at in fired[len(expected):]:
                expected.append((done, waiting.pop(done)[1]))
        clock.pump([0.01] * 5000)
        for done, _at in fired[len(expected):]:
            expected.append((done, waiting.pop(done)[1]))
        self.assertEqual(waiting, {})
        for (name, when), (_, deadline) in zip(fired, expected, strict=True):
            self.assertLessEqual(when - deadline, 0.05, name)
            self.assertGreaterEqual(when, deadline - 1e-6, name)
        self.assertEqual(clock.getDelayedCalls(), [])
