"""The epoll reactor `roost run` serves on: Twisted's, dispatching ready sockets directly.

Twisted's EPollReactor hands every ready socket to `_doReadOrWrite` through
`log.callWithLogger`, which asks the socket for its log prefix and pushes a
legacy log context (`{"system": prefix}`, a dict copied and updated) around
the call: a dozen Python calls per socket read. Under fan-out a reader reads
one request per delivery, so that was about 4% of the calls of a delivery
(docs/benchmarks.md). The context only names the "system" of legacy log
events (twisted.python.log), which Roost's logging (twisted.logger to the
stdlib, homeserver/logsetup.py) never shows.

`LeanEPollReactor.doPoll` is Twisted 26.10's, calling `_doReadOrWrite`
directly. `_doReadOrWrite` catches and logs what a read or write raises and
drops the connection; anything escaping it (a connectionLost handler
failing) is logged here, as `callWithLogger` did, and the loop goes on.
"""

from __future__ import annotations

import errno

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log


class LeanEPollReactor(EPollReactor):
    def doPoll(self, timeout: float | None) -> None:
        """EPollReactor.doPoll without the per-socket legacy log context."""
        if timeout is None:
            timeout = -1  # wait indefinitely
        try:
            ready = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        dispatch = self._doReadOrWrite
        selectables = self._selectables
        for fd, event in ready:
            try:
                selectable = selectables[fd]
            except KeyError:
                continue
            try:
                dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err(None, f"unhandled error dispatching {selectable!r}")

    doIteration = doPoll


def install() -> bool:
    """Install LeanEPollReactor as the global reactor, unless one is installed already
    (something imported twisted.internet.reactor first); whether it was."""
    import sys

    from twisted.internet.main import installReactor

    if "twisted.internet.reactor" in sys.modules:
        return False
    installReactor(LeanEPollReactor())
    return True
