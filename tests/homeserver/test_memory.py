"""The server process's collector settings, applied once the server has started."""

from __future__ import annotations

import gc

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from roost.homeserver.memory import YOUNG_THRESHOLD, tune_collector_after_start


class CollectorTests(TestCase):
    def setUp(self) -> None:
        threshold = gc.get_threshold()

        def restore() -> None:  # this test process must not keep frozen objects
            gc.unfreeze()
            gc.set_threshold(*threshold)

        self.addCleanup(restore)

    def test_nothing_changes_until_the_server_has_started(self) -> None:
        started: defer.Deferred[None] = defer.Deferred()
        before = gc.get_threshold()
        tune_collector_after_start(started)
        self.assertEqual(gc.get_threshold(), before)
        started.callback(None)
        self.assertEqual(gc.get_threshold(), (YOUNG_THRESHOLD, *before[1:]))
        self.assertGreater(gc.get_freeze_count(), 0)  # start-up's objects are out of sight

    def test_a_failed_start_changes_nothing_and_keeps_its_failure(self) -> None:
        started: defer.Deferred[None] = defer.Deferred()
        before = gc.get_threshold()
        tune_collector_after_start(started)
        started.errback(RuntimeError("no database"))
        self.assertEqual(gc.get_threshold(), before)
        self.failureResultOf(started, RuntimeError)
