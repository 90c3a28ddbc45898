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
The usual event, a TCP connection with input and nothing else ready, is
dispatched inline (`_read_tcp`: what `_doReadOrWrite`, `tcp.Connection.doRead`
and `_dataReceived` do for it, three Python calls fewer per request read).
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN
from typing import Any

from twisted.internet import main, tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import log

_EAGAIN = errno.EWOULDBLOCK


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
                if event == EPOLLIN and type(selectable) is tcp.Server:
                    self._read_tcp(selectable)
                else:
                    dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err(None, f"unhandled error dispatching {selectable!r}")

    doIteration = doPoll

    def _read_tcp(self, connection: Any) -> None:
        """_doReadOrWrite (Twisted 26.10) for a tcp.Server with only EPOLLIN, with its
        doRead and _dataReceived inline: the same reads, errors and disconnections."""
        why: Any = None
        in_read = False
        try:
            if connection.fileno() == -1:
                why = _NO_FILEDESC
            else:
                try:
                    data = connection.socket.recv(connection.bufferSize)
                except OSError as se:
                    if se.args[0] != _EAGAIN:
                        why = main.CONNECTION_LOST
                else:
                    if data:
                        connection.protocol.dataReceived(data)
                    else:
                        why = main.CONNECTION_DONE
                in_read = True
        except BaseException:
            why = sys.exc_info()[1]
            log.err()
        if why:
            self._disconnectSelectable(connection, why, in_read)


def install() -> bool:
    """Install LeanEPollReactor as the global reactor, unless one is installed already
    (something imported twisted.internet.reactor first); whether it was."""
    import sys

    from twisted.internet.main import installReactor

    if "twisted.internet.reactor" in sys.modules:
        return False
    installReactor(LeanEPollReactor())
    return True
