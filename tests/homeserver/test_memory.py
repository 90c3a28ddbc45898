"""The server process's collector and allocator settings, applied once the server has
started."""

from __future__ import annotations

import gc
import subprocess
import sys

from twisted.internet import defer, task
from twisted.trial.unittest import SkipTest, TestCase

from roost.homeserver.memory import (
    TRIM_INTERVAL,
    YOUNG_THRESHOLD,
    glibc_malloc_trim,
    skip_http2,
    trim_periodically,
    tune_collector_after_start,
)


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


class TrimTests(TestCase):
    def test_trims_every_interval_once_the_server_has_started(self) -> None:
        clock, started = task.Clock(), defer.Deferred[None]()
        calls: list[float] = []
        loop = trim_periodically(started, clock, lambda: bool(calls.append(clock.seconds())))
        assert loop is not None
        clock.advance(TRIM_INTERVAL * 3)
        self.assertEqual(calls, [])  # nothing before the start
        started.callback(None)
        clock.pump([TRIM_INTERVAL] * 3)
        self.assertEqual(calls, [TRIM_INTERVAL * 4, TRIM_INTERVAL * 5, TRIM_INTERVAL * 6])
        loop.stop()
        clock.advance(TRIM_INTERVAL * 2)
        self.assertEqual(len(calls), 3)
        self.assertIsNone(self.successResultOf(started))

    def test_a_failed_start_never_trims(self) -> None:
        clock, started = task.Clock(), defer.Deferred[None]()
        calls: list[int] = []
        loop = trim_periodically(started, clock, lambda: bool(calls.append(1)))
        started.errback(RuntimeError("no database"))
        clock.advance(TRIM_INTERVAL * 5)
        self.assertEqual(calls, [])
        assert loop is not None
        self.assertFalse(loop.running)
        self.failureResultOf(started, RuntimeError)

    def test_glibc_trim_gives_free_pages_back(self) -> None:
        """On glibc: what a burst freed in the middle of the heap (pinned there by a
        block that outlives it) stays resident until the trim hands its pages back."""
        if glibc_malloc_trim() is None:
            raise SkipTest("not glibc")
        code = """if True:
            import ctypes
            from roost.homeserver.memory import glibc_malloc_trim
            libc = ctypes.CDLL(None)
            libc.malloc.restype = ctypes.c_void_p
            libc.malloc.argtypes = (ctypes.c_size_t,)
            libc.free.argtypes = (ctypes.c_void_p,)
            def rss():
                with open("/proc/self/status") as f:
                    return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) // 1024
            blocks = [libc.malloc(16384) for _ in range(2048)]  # 32 MiB, below mmap's threshold
            for b in blocks:
                ctypes.memset(b, 1, 16384)
            for b in blocks[:-1]:  # the last block pins the heap's top
                libc.free(b)
            before = rss()
            trimmed = glibc_malloc_trim()()
            print(trimmed, before - rss())
        """
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        self.assertEqual(out[0], "True")
        self.assertGreater(int(out[1]), 24)  # MiB given back of the ~32 freed
