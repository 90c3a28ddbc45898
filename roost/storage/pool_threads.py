"""The database pool's threads: each takes a job from one queue and answers on the reactor.

`Database` used Twisted's `deferToThreadPool` on adbapi's thread pool. That path
costs about fifty Python calls per transaction across the two threads (the
pool's Team and its coordinating LockWorker, a `queue.Queue` with its
Condition, Twisted's log context pushed and popped around the job, adbapi's
Connection and Transaction wrappers) and a send runs two transactions (its
persist and push's write): a measurable share of a message's CPU under fan-out
(docs/benchmarks.md, engineer `sendpath`). Here a job is put on a
`queue.SimpleQueue` (C), taken by the next free thread, run, and its result (or
failure) handed back with `reactor.callFromThread`: the wake-ups either way
are the ones any hand-off needs; the rest is gone.

`minimum` threads start at once (the configuration's `database.pool_min`, as
adbapi's pool started that many); more start when work arrives and none is free,
up to `maximum`, and stay (as adbapi's did: each holds one connection). `stop` lets the queued jobs
finish, ends the threads and waits for them, before the connections are closed;
work given after it is never run, as with Twisted's pool.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.python.failure import Failure

R = TypeVar("R")

_names = itertools.count()


class PoolThreads:
    def __init__(self, reactor: IReactorCore | IReactorThreads, maximum: int,
                 minimum: int = 0) -> None:
        self._reactor = reactor
        self._max = max(1, maximum)
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...],
                                             defer.Deferred[Any]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Jobs given and not yet answered: read and written on the reactor thread only.
        self._pending = 0
        self._stopped = False
        self._trigger = reactor.addSystemEventTrigger(  # type: ignore[union-attr]
            "during", "shutdown", self.stop)
        for _ in range(min(minimum, self._max)):
            self._start_thread()

    def call(self, fn: Callable[..., R], *args: Any) -> defer.Deferred[R]:
        """Run `fn(*args)` on a pool thread; the Deferred fires on the reactor thread."""
        d: defer.Deferred[R] = defer.Deferred()
        if self._stopped:
            # As Twisted's pool did: the process is stopping, work given now never runs
            # (its callers are cut off with their connections; a stopping writer's
            # forwarded sends then fail at the reader as "writer down", not here).
            return d
        self._pending += 1
        if self._pending > len(self._threads) and len(self._threads) < self._max:
            self._start_thread()
        self._queue.put((fn, args, d))
        return d

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name=f"roost-db-{next(_names)}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        get, answer = self._queue.get, self._reactor.callFromThread  # type: ignore[union-attr]
        while True:
            job = get()
            if job is None:
                return
            fn, args, d = job
            try:
                result = fn(*args)
            except BaseException:
                answer(self._answer, d, False, Failure())
            else:
                answer(self._answer, d, True, result)
            job = d = result = None  # nothing of the job outlives it on this thread

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
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
