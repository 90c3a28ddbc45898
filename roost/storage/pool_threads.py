"""The database pool's threads: each takes a job, runs it and answers on the reactor.

`Database` used Twisted's `deferToThreadPool` on adbapi's thread pool. That path
costs about fifty Python calls per transaction across the two threads (the
pool's Team and its coordinating LockWorker, a `queue.Queue` with its
Condition, Twisted's log context pushed and popped around the job, adbapi's
Connection and Transaction wrappers) and a send runs two transactions (its
persist and push's write): a measurable share of a message's CPU under fan-out
(docs/benchmarks.md, engineer `sendpath`). Here a job is handed to a free
thread on its own `queue.SimpleQueue` (C), run, and its result (or failure)
handed back with `reactor.callFromThread`: the wake-ups either way are the ones
any hand-off needs; the rest is gone.

The thread given a job is the one that became free **last** (a stack of idle
threads), not any waiting one: with one shared queue the threads took turns, so
every thread and its connection stayed in use, each growing its own buffers
(libpq keeps its largest message's size per connection) and none ever idle. Taken
last-in first-out, a load that needs four threads runs on the same four, and the
others stay idle; a thread idle for `IDLE_SECONDS` ends (`on_retire` runs on it
first: the Database closes its connection there), down to `minimum`. After a
burst that needed many threads, their stacks, connections and PostgreSQL
backends are given back (bench/memory.py: docs/benchmarks.md, engineer `memory`).

`minimum` threads start at once (the configuration's `database.pool_min`, as
adbapi's pool started that many) and stay; more start when work arrives and none
is free, up to `maximum`; jobs given while all `maximum` are busy wait in order.
`stop` lets the queued jobs finish, ends the threads and waits for them, before
the connections are closed; work given after it is never run, as with Twisted's
pool.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.python.failure import Failure

R = TypeVar("R")
Job = tuple[Callable[..., Any], tuple[Any, ...], defer.Deferred[Any]]

logger = logging.getLogger(__name__)

# Seconds a thread above the minimum waits for work before it ends. Long enough that
# a steady load's threads never end between its transactions (the busiest threads are
# always the ones given work); short enough that a burst's extra threads and
# connections are given back soon after it. Starting a thread and its connection
# again costs a few milliseconds.
IDLE_SECONDS = 10.0

_names = itertools.count()


class PoolThreads:
    def __init__(self, reactor: IReactorCore | IReactorThreads, maximum: int,
                 minimum: int = 0, idle_seconds: float = IDLE_SECONDS,
                 on_retire: Callable[[], None] | None = None) -> None:
        self._reactor = reactor
        self._max = max(1, maximum)
        self._min = min(max(0, minimum), self._max)
        self._idle_seconds = idle_seconds
        self._on_retire = on_retire
        # Guards _idle, _backlog and _threads, which the threads change too.
        self._lock = threading.Lock()
        # The queues of the threads waiting for work; the last one is given the next job.
        self._idle: list[queue.SimpleQueue[Job | None]] = []
        self._backlog: collections.deque[Job] = collections.deque()
        # A thread was given a job and has not yet woken: jobs given meanwhile wait in
        # the backlog, and each woken thread wakes the next one while any wait. Waking a
        # thread per job instead (a burst of eight woke eight) cost about twice the CPU
        # per job, the threads contending for the GIL; a thread that finishes a job
        # takes the next waiting one without sleeping.
        self._waking = False
        self._threads: list[threading.Thread] = []
        # Jobs given and not yet answered: read and written on the reactor thread only.
        self._pending = 0
        self._stopped = False
        self._trigger = reactor.addSystemEventTrigger(  # type: ignore[union-attr]
            "during", "shutdown", self.stop)
        for _ in range(self._min):
            self._start_thread(None)

    def call(self, fn: Callable[..., R], *args: Any) -> defer.Deferred[R]:
        """Run `fn(*args)` on a pool thread; the Deferred fires on the reactor thread."""
        d: defer.Deferred[R] = defer.Deferred()
        if self._stopped:
            # As Twisted's pool did: the process is stopping, work given now never runs
            # (its callers are cut off with their connections; a stopping writer's
            # forwarded sends then fail at the reader as "writer down", not here).
            return d
        self._pending += 1
        job: Job = (fn, args, d)
        with self._lock:
            if self._idle and not self._waking:
                self._waking = True
                self._idle.pop().put(job)
                return d
            if not self._idle and len(self._threads) < self._max:
                start: Job | None = job
            else:  # the thread being woken hands it on (_woken), or all are busy
                self._backlog.append(job)
                if len(self._backlog) <= len(self._idle) or len(self._threads) >= self._max:
                    return d
                start = None  # more waiting than idle threads to wake: one more thread
        self._start_thread(start)
        return d

    def _start_thread(self, job: Job | None) -> None:
        jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        # The job in a list the thread empties: a Thread keeps its args while it runs.
        thread = threading.Thread(target=self._work, args=([job], jobs),
                                  name=f"roost-db-{next(_names)}", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _work(self, first: list[Job | None], jobs: queue.SimpleQueue[Job | None]) -> None:
        answer = self._reactor.callFromThread  # type: ignore[union-attr]
        job = first.pop()
        waiting = False
        if job is None:
            job, waiting = self._after_job(jobs)
        while True:
            if waiting:
                job = self._wait(jobs)
                if job is not None:
                    self._woken()
            if job is None:
                return
            fn, args, d = job
            try:
                result, ok = fn(*args), True
            except BaseException:
                result, ok = Failure(), False
            # Back on the idle stack (or given the next waiting job) before answering:
            # a caller that gives more work on the answer finds this thread free.
            job, waiting = self._after_job(jobs)
            answer(self._answer, d, ok, result)
            # Nothing of the job outlives it on this thread: an idle thread kept its last
            # job's function and arguments (a persist's batch of rows, ~100 KB) until its
            # next job.
            fn = args = d = result = None

    def _woken(self) -> None:
        """On a pool thread just given a job off the idle stack: the next thread's turn
        to be woken, with a job that waits, if any."""
        with self._lock:
            self._waking = False
            if self._backlog and self._idle:
                self._waking = True
                self._idle.pop().put(self._backlog.popleft())

    def _after_job(self, jobs: queue.SimpleQueue[Job | None]) -> tuple[Job | None, bool]:
        """On a pool thread with its job done: (the next waiting job, False), or (None,
        True) once on the idle stack, or (None, False) when the pool stops."""
        with self._lock:
            if self._backlog:
                return self._backlog.popleft(), False
            if self._stopped:
                return None, False
            self._idle.append(jobs)
            return None, True

    def _wait(self, jobs: queue.SimpleQueue[Job | None]) -> Job | None:
        """On a pool thread on the idle stack: its next job; None when it is to end
        (the pool stops, or it was idle too long above the minimum)."""
        while True:
            try:
                return jobs.get(timeout=self._idle_seconds)
            except queue.Empty:
                pass
            with self._lock:
                # Not on the stack: a job (or the stop's None) was just put on `jobs`.
                if len(self._threads) <= self._min or not any(q is jobs for q in self._idle):
                    continue
                self._idle.remove(jobs)
                self._threads.remove(threading.current_thread())
            self._retire()
            return None

    def _retire(self) -> None:
        if self._on_retire is not None:
            try:
                self._on_retire()
            except Exception:
                logger.exception("database pool: releasing an idle thread's connection failed")

    def _answer(self, d: defer.Deferred[Any], ok: bool, result: Any) -> None:
        self._pending -= 1
        if ok:
            d.callback(result)
        else:
            d.errback(result)

    def state(self) -> tuple[int, int, int]:
        """(threads busy, threads, jobs waiting for a thread), for metrics: from the jobs
        not yet answered (one just finished counts as busy until its answer runs)."""
        size = len(self._threads)
        return min(self._pending, size), size, max(0, self._pending - size)

    def stop(self) -> None:
        """Let the queued jobs run, end every thread and wait for it (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._trigger is not None:
            try:
                self._reactor.removeSystemEventTrigger(self._trigger)  # type: ignore[union-attr]
            except (KeyError, ValueError, TypeError):
                pass  # already run: this is the trigger
            self._trigger = None
        with self._lock:  # a busy thread ends once the backlog is done (_next)
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for jobs in idle:
            jobs.put(None)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()
