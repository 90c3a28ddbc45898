"""Running a request handler's coroutine without a Deferred of its own.

Every client request is an `async` handler. Twisted's `ensureDeferred` drives
one with `inlineCallbacks`' machinery: a Deferred for the result, a
cancellation status object, a copied context, and on every resume a
callback chain through `_gotResultInlineCallbacks` and `_inlineCallbacks`
(about a dozen Python calls when a request starts, nine when it resumes and
eight when it ends). The JSON resource never uses the result Deferred: it
only cancels the handler when the client goes and logs what escapes it.
Under fan-out (a long poll per receiver, woken once per message) that
machinery was about a tenth of the calls of a delivery (docs/benchmarks.md).

`Task` drives the coroutine directly: each step runs in the context copied
when the task started (as Twisted's: a handler's context variables stay its
own), an awaited Deferred gets one callback that resumes it, and `cancel`
cancels the Deferred it waits on, which throws `CancelledError` into the
handler (what cancelling Twisted's Deferred does). An exception escaping the
handler goes to `on_error` as a Failure.

Handlers may await Deferreds and other coroutines only (an awaited Deferred
already fired does not suspend: `Deferred.__await__` returns its result).
Anything else yielded (an asyncio future) is thrown back into the handler
as a TypeError.

A `Wakeup` is a Deferred that a Task waiting on it alone is resumed by
directly: its callback (or errback, or cancel) steps the handler without
Deferred's callback chain (`_startRunCallbacks`, `_runCallbacks`: the
heaviest calls of a long poll's wake-up). Anything else about it is a
Deferred's: with callbacks of its own, paused, in debug mode, or awaited by
anything but a Task, it runs its chain, with the Task's step first if one
waits (it was added before the others), exactly as a plain Deferred would.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure


class Wakeup(defer.Deferred):  # type: ignore[type-arg]
    """A Deferred that a waiting Task resumes on directly (see the module docstring)."""

    _task_step: Callable[[Any], None] | None = None

    def callback(self, result: Any = None) -> None:
        step = self._task_step
        if step is None:
            super().callback(result)
            return
        self._task_step = None
        self._fire(step, result)

    def errback(self, fail: Any = None) -> None:
        step = self._task_step
        if step is None:
            super().errback(fail)
            return
        self._task_step = None
        if fail is None:
            fail = Failure(captureVars=self.debug)
        elif not isinstance(fail, Failure):
            fail = Failure(fail)
        self._fire(step, fail)

    def _fire(self, step: Callable[[Any], None], result: Any) -> None:
        """Deferred._startRunCallbacks with the Task's step as the only callback: the step
        reads the result while it runs (Deferred.__await__ does) and leaves None."""
        if self.called:  # (never, with a step set) AlreadyCalledError
            defer.Deferred._startRunCallbacks(self, result)
            return
        if self.paused or self.debug or self._callbacks or (
                type(result) not in _PLAIN and isinstance(result, defer.Deferred)):
            # The chain as it would be: the step came first (see Task._step).
            self._callbacks.insert(0, ((step, (), {}), (step, (), {})))
            defer.Deferred._startRunCallbacks(self, result)
            return
        self.called = True
        self._canceller = None
        self.result = result
        try:
            step(result)
        finally:
            self.result = None


_DEFERREDS = (defer.Deferred, Wakeup)
# Results that are no Deferred for sure: isinstance against Deferred (an ABCMeta class)
# costs a Python call for anything else.
_PLAIN = frozenset({bool, type(None), int, str, bytes, dict, list, tuple, Failure})


class Task:
    """One coroutine run to its end, suspended only on uncalled Deferreds."""

    __slots__ = ("_coro", "_run", "_waiting", "_on_error", "done")

    def __init__(self, coro: Coroutine[Any, Any, Any],
                 on_error: Callable[[Failure], object]) -> None:
        self._coro: Coroutine[Any, Any, Any] | None = coro
        self._run = contextvars.copy_context().run
        self._waiting: defer.Deferred[Any] | None = None
        self._on_error = on_error
        self.done = False  # the coroutine has ended (a plain attribute: read per request)
        self._step(None)

    def cancel(self) -> None:
        """Cancel the Deferred the handler waits on (nothing when it is not waiting)."""
        waiting = self._waiting
        if waiting is not None:
            waiting.cancel()

    def _step(self, result: Any) -> None:
        """Run the handler with `result` until it waits or ends. Also the awaited
        Deferred's callback: the handler continues with its result (read by
        Deferred.__await__ itself, or thrown into the handler if a failure). Returns
        None: the result is the handler's now, not left in the Deferred."""
        self._waiting = None
        coro = self._coro
        assert coro is not None
        run = self._run
        while True:
            try:
                if isinstance(result, Failure):
                    yielded = run(result.throwExceptionIntoGenerator, coro)
                else:
                    yielded = run(coro.send, result)
            except StopIteration:
                self._coro = None
                self.done = True
                return
            except BaseException:
                self._coro = None
                self.done = True
                self._on_error(Failure())
                return
            if type(yielded) is Wakeup and not yielded._callbacks:
                # Deferred.__await__ yields only a Deferred without a result yet.
                self._waiting = yielded
                yielded._task_step = self._step  # resumed directly when it fires
                return
            if type(yielded) in _DEFERREDS or isinstance(yielded, defer.Deferred):
                self._waiting = yielded
                yielded.addBoth(self._step)
                return
            result = Failure(TypeError(f"a request handler awaited {yielded!r}, "
                                       "not a Deferred or coroutine"))
