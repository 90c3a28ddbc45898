"""Flow control of a socket: whether the client is reading what we send.

Two signals, both from the transport: its pause/resume calls (Flow, the
registered push producer: paused means its write buffer is full) and the
bytes written that the kernel has not taken yet (pending_bytes). The push
loop and the request queue wait on the first; the second bounds what a
client that floods the socket without reading can make us hold.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


def pending_bytes(transport: Any) -> int:
    """Bytes written to the transport that the kernel has not taken yet.

    Twisted has no public accessor; these are FileDescriptor's buffers. On a
    transport without them (TLS) this is 0 and the producer pause is the
    only signal.
    """
    buffered = getattr(transport, "dataBuffer", b"")
    offset = getattr(transport, "offset", 0)
    temp = getattr(transport, "_tempDataLen", 0)
    if not isinstance(temp, int) or not isinstance(offset, int):
        return 0
    return max(0, len(buffered) - offset) + temp


@implementer(IPushProducer)
class Flow:
    """The transport's pause/resume signal: paused means its write buffer is full."""

    __slots__ = ("paused", "waiting")

    def __init__(self) -> None:
        self.paused = False
        # At most the push loop and the queue; made when one waits, not per socket.
        self.waiting: list[defer.Deferred[bool]] | None = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiting, self.waiting = self.waiting or (), None
        for d in waiting:
            if not d.called:
                d.callback(True)

    def wait(self) -> defer.Deferred[bool]:
        """Fires True once the transport wants data again (False: given up on, by the caller)."""
        waiting: defer.Deferred[bool] = defer.Deferred()
        if self.waiting is None:
            self.waiting = []
        self.waiting.append(waiting)
        return waiting

    def stopProducing(self) -> None:
        """The connection is gone: write nothing more; onClose cancels whoever waits."""
        self.paused = True
