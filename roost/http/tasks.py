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
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

_DEFERREDS = (defer.Deferred,)


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
            if type(yielded) in _DEFERREDS or isinstance(yielded, defer.Deferred):
                # Deferred.__await__ yields only a Deferred without a result yet.
                self._waiting = yielded
                yielded.addBoth(self._step)
                return
            result = Failure(TypeError(f"a request handler awaited {yielded!r}, "
                                       "not a Deferred or coroutine"))
