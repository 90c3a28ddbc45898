"""The database pool's threads (PoolThreads) and Database.run's use of them."""

from __future__ import annotations

import threading
import weakref

import psycopg2
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from roost.storage.database import Database
from roost.storage.pool_threads import PoolThreads
from tests.postgres_harness import fresh_database


class PoolThreadsTests(TestCase):
    def _threads(self, maximum: int) -> PoolThreads:
        threads = PoolThreads(reactor, maximum)
        self.addCleanup(threads.stop)
        return threads

    async def test_results_and_failures_come_back_on_the_reactor_thread(self) -> None:
        threads = self._threads(2)
        main = threading.get_ident()
        seen: list[int] = []

        def job(n: int) -> tuple[int, int]:
            return n * 2, threading.get_ident()

        doubled, ran_on = await threads.call(job, 21)
        self.assertEqual(doubled, 42)
        self.assertNotEqual(ran_on, main)

        def fails() -> None:
            raise KeyError("in the job")

        d = threads.call(fails)
        d.addErrback(lambda f: seen.append(threading.get_ident()) or f)
        with self.assertRaises(KeyError):
            await d
        self.assertEqual(seen, [main])

    async def test_threads_grow_with_waiting_work_up_to_the_maximum(self) -> None:
        threads = self._threads(3)
        release = threading.Event()
        started: list[int] = []
        lock = threading.Lock()

        def blocking(n: int) -> int:
            with lock:
                started.append(n)
            release.wait(10)
            return n

        calls = [threads.call(blocking, n) for n in range(5)]
        for _ in range(200):  # three run at once, two wait for a thread
            if len(started) == 3:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(started), 3)
        self.assertEqual(threads.state(), (3, 3, 2))
        release.set()
        self.assertEqual(await defer.gatherResults(calls), [0, 1, 2, 3, 4])
        self.assertEqual(threads.state(), (0, 3, 0))
        # Idle threads are used again: no fourth thread for more work.
        self.assertEqual(await threads.call(lambda: 7), 7)
        self.assertEqual(threads.state()[1], 3)

    async def test_the_minimum_starts_at_once_and_serves_before_more_start(self) -> None:
        threads = PoolThreads(reactor, 4, minimum=2)
        self.addCleanup(threads.stop)
        self.assertEqual(threads.state(), (0, 2, 0))
        self.assertTrue(all(t.is_alive() for t in threads._threads))
        # One job at a time needs no third thread.
        for n in range(5):
            self.assertEqual(await threads.call(lambda n=n: n), n)
        self.assertEqual(threads.state()[1], 2)

    async def _burst(self, threads: PoolThreads, size: int) -> list[int]:
        """`size` jobs held running at once (so `size` threads), then released: their
        threads' ids."""
        release = threading.Event()
        started: list[int] = []

        def blocking() -> int:
            started.append(threading.get_ident())
            release.wait(10)
            return threading.get_ident()

        calls = [threads.call(blocking) for _ in range(size)]
        for _ in range(500):
            if len(started) == size:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        release.set()
        return await defer.gatherResults(calls)

    async def test_an_idle_thread_keeps_nothing_of_its_last_job(self) -> None:
        """A job's function, arguments and result are let go once it is answered, not
        kept by the idle thread until its next job (a persist's rows, say): the job a
        thread started with (a Thread keeps its args) and a job given to it idle."""
        threads = self._threads(1)

        class Rows:
            pass

        def job(rows: Rows) -> Rows:
            return Rows()

        for _ in range(2):  # the first starts the thread, the second finds it idle
            given = Rows()
            made = await threads.call(job, given)
            refs = [weakref.ref(given), weakref.ref(made)]
            del given, made
            for _ in range(100):  # the thread lets go once it has answered
                if all(ref() is None for ref in refs):
                    break
                await task.deferLater(reactor, 0.01, lambda: None)
            self.assertEqual([ref() for ref in refs], [None, None])

    async def test_the_thread_free_last_is_given_the_next_job(self) -> None:
        threads = self._threads(4)
        burst = await self._burst(threads, 4)
        self.assertEqual(len(set(burst)), 4)
        # One job at a time runs on one thread, not on each in turn (a shared queue
        # rotated over all of them, keeping every connection in use).
        ran = {await threads.call(threading.get_ident) for _ in range(20)}
        self.assertEqual(len(ran), 1)
        self.assertEqual(threads.state(), (0, 4, 0))

    async def test_threads_idle_too_long_end_down_to_the_minimum(self) -> None:
        retired: list[int] = []
        threads = PoolThreads(reactor, 4, minimum=1, idle_seconds=0.2,
                              on_retire=lambda: retired.append(threading.get_ident()))
        self.addCleanup(threads.stop)
        burst = await self._burst(threads, 4)
        self.assertEqual(threads.state()[1], 4)
        for _ in range(300):
            if threads.state()[1] == 1:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(threads.state(), (0, 1, 0))
        self.assertEqual(len(retired), 3)  # each on its own thread, before it ended
        self.assertLessEqual(set(retired), set(burst) | {t.ident for t in threads._threads})
        self.assertNotIn(threading.get_ident(), retired)
        # The one kept still works, and more start again when work needs them.
        self.assertEqual(await threads.call(lambda: 5), 5)
        self.assertEqual(len(set(await self._burst(threads, 3))), 3)
        self.assertEqual(threads.state()[1], 3)

    async def test_a_thread_given_work_as_it_times_out_runs_it(self) -> None:
        threads = PoolThreads(reactor, 2, minimum=0, idle_seconds=0.001)
        self.addCleanup(threads.stop)
        # Jobs given while threads keep timing out: each runs, none is lost.
        for n in range(50):
            self.assertEqual(await threads.call(lambda n=n: n), n)
            await task.deferLater(reactor, 0.002 * (n % 3), lambda: None)

    async def test_stop_finishes_queued_work_and_ends_the_threads(self) -> None:
        threads = PoolThreads(reactor, 1)
        ran: list[int] = []
        calls = [threads.call(ran.append, n) for n in range(5)]
        threads.stop()  # waits: every queued job has run
        self.assertEqual(ran, [0, 1, 2, 3, 4])
        self.assertFalse(any(t.is_alive() for t in threads._threads))
        await task.deferLater(reactor, 0, lambda: None)  # the answers arrive
        self.assertEqual([c.called for c in calls], [True] * 5)
        late = threads.call(ran.append, 5)  # as Twisted's pool: never run, never answered
        threads.stop()  # again: nothing happens
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(late.called)
        self.assertEqual(ran, [0, 1, 2, 3, 4])


class TransactionConnectionTests(TestCase):
    async def _db(self) -> Database:
        db = Database(reactor, await fresh_database(self), 1, 1)
        self.addCleanup(db.close)
        await db.run("t", lambda t: t.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INT)"))
        return db

    async def test_a_lost_connection_fails_one_transaction_and_is_replaced(self) -> None:
        db = await self._db()
        (pid,) = await db.run("pid", lambda t: t.query_one("SELECT pg_backend_pid()"))
        other = Database(reactor, db.dsn, 1, 1)
        self.addCleanup(other.close)
        await other.read("kill", "SELECT pg_terminate_backend(%s)", (pid,))
        # A write is not sent again (it may have committed): it fails, the connection
        # leaves the pool, and the next transaction runs on a new one.
        with self.assertRaises(psycopg2.OperationalError):
            await db.run("w", lambda t: t.execute("INSERT INTO kv VALUES ('a', 1)"))
        (new_pid,) = await db.run("pid", lambda t: t.query_one("SELECT pg_backend_pid()"))
        self.assertNotEqual(new_pid, pid)
        await db.run("w", lambda t: t.execute("INSERT INTO kv VALUES ('a', 1)"))
        self.assertEqual(await db.read("r", "SELECT k, v FROM kv"), [("a", 1)])

    async def test_an_error_rolls_back_and_the_connection_is_kept(self) -> None:
        db = await self._db()
        (pid,) = await db.run("pid", lambda t: t.query_one("SELECT pg_backend_pid()"))

        def fails(t: object) -> None:
            t.execute("INSERT INTO kv VALUES ('a', 1)")  # type: ignore[attr-defined]
            raise ValueError("after a write")

        with self.assertRaises(ValueError):
            await db.run("w", fails)
        self.assertEqual(await db.run("pid", lambda t: t.query_one("SELECT pg_backend_pid()")),
                         (pid,))
        self.assertEqual(await db.read("r", "SELECT count(*) FROM kv"), [(0,)])

    async def test_an_idle_thread_ends_with_its_connection_closed(self) -> None:
        db = Database(reactor, await fresh_database(self), 1, 3)
        self.addCleanup(db.close)
        db._threads._idle_seconds = 0.2
        watcher = Database(reactor, db.dsn, 1, 1)
        self.addCleanup(watcher.close)
        (own,) = await watcher.read_one("pid", "SELECT pg_backend_pid()")

        async def backends() -> int:
            (n,) = await watcher.read_one(
                "n", "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> %s", (own,))
            return int(n)

        release = threading.Event()

        def held(t: object) -> int:
            release.wait(10)
            return 1

        calls = [defer.ensureDeferred(db.run("held", held)) for _ in range(3)]
        for _ in range(500):
            if await backends() == 3:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(await backends(), 3)
        release.set()
        self.assertEqual(await defer.gatherResults(calls), [1, 1, 1])
        for _ in range(500):  # the two threads above the minimum end, closing theirs
            if db.pool_state()[1] == 1 and await backends() == 1:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(db.pool_state(), (0, 1, 0))
        self.assertEqual(await backends(), 1)
        self.assertEqual(await db.run("one", lambda t: t.query_one("SELECT 1")), (1,))

    async def test_pool_state_counts_threads_and_waiting_work(self) -> None:
        db = await self._db()
        self.assertEqual(db.pool_state(), (0, 1, 0))
