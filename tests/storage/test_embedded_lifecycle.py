"""Issue 10, finding 6: Roost owns the embedded PostgreSQL's life, across a kill -9.

Each Roost here is a child process (pgserver keeps per-process handles and
atexit hooks): the first is killed with SIGKILL while PostgreSQL runs; the
next must reuse that postmaster and, on its clean stop, stop it. Before the
fix the killed process's pid stayed in pgserver's handle list, and every
later clean stop left PostgreSQL running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
from twisted.trial.unittest import TestCase

import roost

ROOST = r"""
import sys
from roost.storage.embedded import start_embedded_postgres
import psycopg2
dsn, server = start_embedded_postgres(sys.argv[1])
conn = psycopg2.connect(dsn)
conn.cursor().execute("SELECT 1")
conn.close()
print(server.get_pid(), flush=True)
if sys.argv[2] == "wait":
    sys.stdin.read()  # until killed
else:
    server.cleanup()  # what a clean stop of Roost runs (the "embedded PostgreSQL" closer)
    print("stopped", flush=True)
"""


def _gone(pid: int) -> bool:
    """Whether the process has exited (stop is synchronous; a brief wait covers reaping)."""
    for _ in range(100):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


class EmbeddedLifecycleTests(TestCase):
    timeout = 240

    def _roost(self, data_dir: str, mode: str) -> subprocess.Popen[str]:
        # The roost package this test runs against, whatever the child's directory.
        env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(roost.__file__))}
        return subprocess.Popen([sys.executable, "-c", ROOST, data_dir, mode],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env)

    def _clean_run(self, data_dir: str) -> int:
        """A Roost that starts, queries and stops cleanly; the postmaster pid it used."""
        roost = self._roost(data_dir, "stop")
        out, _ = roost.communicate()
        self.assertEqual(roost.returncode, 0, out)
        pid, stopped = out.split()
        self.assertEqual(stopped, "stopped")
        return int(pid)

    def test_after_kill_9_the_next_roost_reuses_and_a_clean_stop_stops_postgres(self) -> None:
        data_dir = os.path.abspath(self.mktemp())
        os.makedirs(data_dir)
        crashed = self._roost(data_dir, "wait")
        assert crashed.stdout is not None
        postmaster = int(crashed.stdout.readline())
        self.addCleanup(_stop_if_running, postmaster)
        crashed.send_signal(signal.SIGKILL)
        crashed.wait()
        self.assertTrue(psutil.pid_exists(postmaster))  # PostgreSQL outlives the crash
        # The next Roost recovers: it reuses that postmaster, and its clean stop stops it.
        self.assertEqual(self._clean_run(data_dir), postmaster)
        self.assertTrue(_gone(postmaster), "a clean stop left PostgreSQL running")
        # And every later one starts its own and stops it too.
        later = self._clean_run(data_dir)
        self.addCleanup(_stop_if_running, later)
        self.assertTrue(_gone(later), "a clean stop left PostgreSQL running")


def _stop_if_running(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass
