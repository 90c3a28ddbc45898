"""PositionWaiters: what /sync's wait for push evaluation is made of (push/waiters.py)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from roost.push.waiters import PositionWaiters


class PositionWaitersTests(TestCase):
    def test_release_fires_the_waiters_at_or_below_the_position_only(self) -> None:
        clock = Clock()
        waiters = PositionWaiters(clock)
        three, four, six = (waiters.wait(p, 5.0) for p in (3, 4, 6))
        waiters.release(4)
        self.assertEqual((three.called, four.called, six.called), (True, True, False))
        self.assertEqual(len(waiters), 1)
        waiters.release(6)
        self.assertTrue(six.called)
        self.assertEqual(clock.getDelayedCalls(), [])  # no waiter left: no timer either

    def test_one_timer_serves_all_and_each_times_out_at_its_own_deadline(self) -> None:
        clock = Clock()
        waiters = PositionWaiters(clock)
        first = [waiters.wait(5, 5.0) for _ in range(20)]
        clock.advance(1)
        later = [waiters.wait(6, 5.0) for _ in range(20)]
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(4)
        self.assertTrue(all(d.called for d in first))
        self.assertFalse(any(d.called for d in later))
        clock.advance(1)
        self.assertTrue(all(d.called for d in later))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_shorter_timeout_after_a_longer_one_is_kept(self) -> None:
        clock = Clock()
        waiters = PositionWaiters(clock)
        slow, quick = waiters.wait(5, 30.0), waiters.wait(5, 5.0)
        clock.advance(5)
        self.assertEqual((quick.called, slow.called), (True, False))
        clock.advance(25)
        self.assertTrue(slow.called)

    def test_on_timeout_runs_before_the_timed_out_waiters_go_on(self) -> None:
        clock = Clock()
        seen: list[str] = []
        waiters = PositionWaiters(clock, lambda: seen.append("timeout"))
        waiters.wait(5, 1.0).addCallback(lambda _: seen.append("waiter"))
        waiters.wait(5, 9.0)
        waiters.release(4)
        self.assertEqual(seen, [])  # a release is not a timeout
        clock.advance(1)
        self.assertEqual(seen, ["timeout", "waiter"])

    def test_release_all_fires_everyone_and_a_cancelled_waiter_is_skipped(self) -> None:
        clock = Clock()
        waiters = PositionWaiters(clock)
        kept, cancelled = waiters.wait(3, 5.0), waiters.wait(4, 5.0)
        cancelled.cancel()
        self.failureResultOf(cancelled)
        waiters.release_all()
        self.assertTrue(kept.called)
        self.assertEqual(clock.getDelayedCalls(), [])
