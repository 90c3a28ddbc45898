"""The counts follower's own rules (push/shared_counts.py), on Twisted's test clock:
when a /sync waits, when the cache is trusted, and what a gap, a reset or a lost bus
does. The end-to-end checks through real processes are
tests/homeserver/test_replicated_counts.py."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from roost.push.shared_counts import FollowedCounts


def _batch(run: str, before: int, after: int, adds: list[Any] | None = None,
           drops: list[Any] | None = None) -> dict[str, Any]:
    return {"r": run, "f": before, "p": after, "a": adds or [], "d": drops or []}


class FollowerTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.up = True
        self.follower = FollowedCounts(self.clock, lambda: self.up)
        self.follower.heard("writer", _batch("run1", 0, 10))

    def _hold(self, user: str, room: str, main: int) -> None:
        cache = self.follower.counts
        cache.put(user, {room: {"main": (main, 0)}}, [room], cache.generation)

    def test_a_sync_waits_for_the_position_and_is_released_by_the_next_batch(self) -> None:
        waiting = self.follower.reached(12, 5.0)
        self.assertFalse(waiting.called)
        self.follower.heard("writer", _batch("run1", 10, 12))
        self.assertTrue(waiting.called)
        self.assertTrue(self.follower.trusted(12))

    def test_a_wait_that_times_out_stops_trusting_until_the_next_batch(self) -> None:
        waiting = self.follower.reached(12, 5.0)
        self.clock.advance(5.0)
        self.assertTrue(waiting.called)
        self.assertFalse(self.follower.trusted(10))  # the pusher's messages are not coming
        self.assertTrue(self.follower.reached(50, 5.0).called)  # nobody waits meanwhile
        self.follower.heard("writer", _batch("run1", 10, 12))
        self.assertTrue(self.follower.trusted(12))

    def test_increments_apply_in_order_and_a_gap_drops_everything(self) -> None:
        self._hold("@u:x", "!r:x", 2)
        self.follower.heard("writer", _batch("run1", 10, 11, [["!r:x", "main", 1, ["@u:x"]]]))
        self.assertEqual(self.follower.counts.get("@u:x", ["!r:x"])[0],
                         {"!r:x": {"main": (3, 1)}})
        self.follower.heard("writer", _batch("run1", 12, 13, [["!r:x", "main", 0, ["@u:x"]]]))
        self.assertEqual(len(self.follower.counts), 0)  # (11, 12] was never heard
        self.assertEqual(self.follower.position, 13)

    def test_a_new_run_drops_everything(self) -> None:
        self._hold("@u:x", "!r:x", 2)
        self.follower.heard("writer", _batch("run2", 10, 11))  # a restarted evaluator
        self.assertEqual(len(self.follower.counts), 0)

    def test_a_reset_forgets_the_position(self) -> None:
        self._hold("@u:x", "!r:x", 2)
        self.follower.heard("writer", {"r": "run2"})  # the evaluator's commit is unknown
        self.assertEqual((len(self.follower.counts), self.follower.position), (0, None))
        self.assertFalse(self.follower.trusted(0))
        self.follower.heard("writer", _batch("run2", 10, 11))  # a chain starts again
        self.assertTrue(self.follower.trusted(11))

    def test_senders_reading_their_room_drop_their_entry(self) -> None:
        self._hold("@u:x", "!r:x", 2)
        self.follower.heard("writer", _batch("run1", 10, 11, drops=[["@u:x", "!r:x"]]))
        self.assertEqual(len(self.follower.counts), 0)

    def test_without_the_bus_nothing_waits_and_nothing_is_trusted(self) -> None:
        self.up = False
        self.assertTrue(self.follower.reached(50, 5.0).called)
        self.assertFalse(self.follower.trusted(10))
