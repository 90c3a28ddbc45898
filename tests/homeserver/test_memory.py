"""The server process's collector settings, applied once the server has started."""

from __future__ import annotations

import gc
import subprocess
import sys

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from roost.homeserver.memory import YOUNG_THRESHOLD, skip_http2, tune_collector_after_start


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


class SkipHttp2Tests(TestCase):
    def test_the_server_process_runs_without_twisted_http2(self) -> None:
        """In a fresh process (as `roost run` starts), Twisted's HTTP/2 channel and the
        h2 package stay unloaded, and twisted.web.http works as without h2 installed."""
        code = ("import sys; from roost.homeserver.memory import skip_http2; "
                "assert skip_http2(); import twisted.web.server, twisted.web.http as http; "
                "print(http.H2_ENABLED, 'h2' in sys.modules, 'twisted.web._http2' in sys.modules "
                "and sys.modules['twisted.web._http2'] is not None)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        self.assertEqual(out, ["False", "False", "False"])

    def test_too_late_once_twisted_web_is_imported(self) -> None:
        import twisted.web.http  # noqa: F401 - this process has it already

        self.assertFalse(skip_http2())
        self.assertIsNot(sys.modules.get("twisted.web._http2", 0), None)
