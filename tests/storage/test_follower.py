"""DebouncedFollower: one pass a moment after the stream moves, however many changes came
meanwhile; passes never overlap; a follower still behind schedules another; a failed
pass is logged and the next change tries again; stop() ends it."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from roost.storage.follower import DebouncedFollower
from roost.storage.notifier import Notifier


class Work:
    """A pass that blocks until released, counting how often it ran and how many at once."""

    def __init__(self) -> None:
        self.passes = 0
        self.running = 0
        self.most_at_once = 0
        self.gate: defer.Deferred[None] | None = None
        self.fail = False
        self.behind = False

    async def __call__(self) -> None:
        self.passes += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.gate is not None:
                await self.gate
            if self.fail:
                raise RuntimeError("boom")
        finally:
            self.running -= 1


def follower(work: Work) -> tuple[DebouncedFollower, Notifier, Clock]:
    notifier, clock = Notifier(), Clock()
    f = DebouncedFollower("test pass", notifier, clock, 1.0, work, lambda: work.behind)
    return f, notifier, clock


class DebouncedFollowerTests(TestCase):
    def test_a_burst_of_changes_is_one_pass_after_the_delay(self) -> None:
        work = Work()
        f, notifier, clock = follower(work)
        f.start()
        for n in range(1, 20):
            notifier.notify("events", n)
        notifier.notify("typing", 5)
        clock.advance(0.9)
        self.assertEqual(work.passes, 0)
        clock.advance(0.1)
        self.assertEqual(work.passes, 1)
        clock.advance(5)
        self.assertEqual(work.passes, 1)

    def test_other_streams_do_not_wake_it_and_start_now_runs_at_once(self) -> None:
        work = Work()
        f, notifier, clock = follower(work)
        f.start(now=True)
        self.assertEqual(work.passes, 1)
        notifier.notify("receipts", 3)
        clock.advance(5)
        self.assertEqual(work.passes, 1)

    def test_passes_never_overlap_and_one_still_behind_schedules_another(self) -> None:
        work = Work()
        work.gate = defer.Deferred()
        f, notifier, clock = follower(work)
        f.start()
        notifier.notify("events", 1)
        clock.advance(1)
        self.assertEqual(work.running, 1)
        notifier.notify("events", 2)  # during the pass: its scheduled pass must wait
        clock.advance(1)
        asked: defer.Deferred[None] = defer.ensureDeferred(f.run(work))  # a search, say
        self.assertEqual(work.most_at_once, 1)
        work.behind = True
        gate, work.gate = work.gate, None
        gate.callback(None)
        self.assertTrue(asked.called)
        self.assertEqual(work.most_at_once, 1)
        work.behind = False
        clock.advance(1)  # behind when the pass ended: one more pass
        self.assertEqual(work.passes, 3)
        clock.advance(5)
        self.assertEqual(work.passes, 3)

    def test_a_failed_pass_is_logged_and_the_next_change_tries_again(self) -> None:
        work = Work()
        work.fail = True
        f, notifier, clock = follower(work)
        f.start()
        notifier.notify("events", 1)
        clock.advance(1)
        work.fail = False
        notifier.notify("events", 2)
        clock.advance(1)
        self.assertEqual(work.passes, 2)

    def test_stop_cancels_a_scheduled_pass_and_ignores_later_changes(self) -> None:
        work = Work()
        f, notifier, clock = follower(work)
        f.start()
        notifier.notify("events", 1)
        f.stop()
        notifier.notify("events", 2)
        clock.advance(5)
        self.assertEqual(work.passes, 0)
