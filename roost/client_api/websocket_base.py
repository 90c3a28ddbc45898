"""Autobahn's WebSocket server protocol, laid out to cost little per connection.

A server holds thousands of idle sockets, and autobahn's protocol object was
most of what one costs (12.9 KiB each before, bench/ws_fanout.py): it copies
its ~30 options from the factory onto every connection, keeps a hundred
attributes in an instance dict, a deque for writes this server never queues,
and the whole opening handshake once the socket is open. The protocol below
keeps autobahn's behaviour and changes where that state lives:

- the options are properties reading the factory, so autobahn skips the copy
  (its `_connectionMade` copies only what the protocol does not have);
- every attribute autobahn sets is a slot (8 bytes) rather than a dict entry;
- the write queue is a list (56 bytes) rather than a deque (about 700);
- `drop_handshake()` forgets what only the handshake reads, and a frame's
  unmasker is dropped once the frame is read;
- keepalive pings come from one Keepalive timer for every socket instead of
  autobahn's two timers and a closure per socket (about 560 bytes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import task

logger = logging.getLogger(__name__)

# Every attribute autobahn's server protocol sets on itself (WebSocketProtocol,
# WebSocketServerProtocol and the Twisted adapter, autobahn 26.10). One missing
# here still works (it lands in an instance dict); tests/client_api/
# test_websocket.py fails if an idle socket has one.
AUTOBAHN_STATE = (
    "_isMessageCompressed", "_perMessageCompress", "_transport_details", "_wskey",
    "autoPingPending", "autoPingPendingCall", "autoPingPendingSent", "autoPingPendingSeq",
    "autoPingTimeoutCall", "closeHandshakeTimeoutCall", "closedByMe", "control_frame_data",
    "current_frame", "current_frame_masker", "data", "droppedByMe", "failedByMe", "frame_data",
    "frame_length", "http_headers", "http_request_data", "http_request_host",
    "http_request_params", "http_request_path", "http_request_uri", "http_response_data",
    "http_status_line", "inside_message", "is_closed", "is_open", "localCloseCode",
    "localCloseReason", "message_data", "message_data_total_length", "message_is_binary",
    "openHandshakeTimeoutCall", "remoteCloseCode", "remoteCloseReason", "send_compressed",
    "send_message_frame_length", "send_message_frame_mask", "send_message_frame_masker",
    "send_message_opcode", "send_queue", "send_state", "serverConnectionDropTimeoutCall",
    "state", "trackTimings", "trackedTimings", "trafficStats", "triggered",
    "utf8validateIncomingCurrentMessage", "utf8validateLast", "utf8validator", "wasClean",
    "wasCloseHandshakeTimeout", "wasMaxFramePayloadSizeExceeded",
    "wasMaxMessagePayloadSizeExceeded", "wasNotCleanReason", "wasOpenHandshakeTimeout",
    "wasServerConnectionDropTimeout", "wasServingFlashSocketPolicyFile", "websocket_extensions",
    "websocket_extensions_in_use", "websocket_origin", "websocket_protocol_in_use",
    "websocket_protocols", "websocket_version",
    # Class-level defaults of Twisted and autobahn, which a slot hides: __init__ sets them.
    "factory", "transport", "connected", "peer", "_valid_events", "_results", "_listeners",
)
_OWN_STATE = ("_ping_round",)  # the Keepalive round of the ping awaiting its pong (0: none)

# What autobahn keeps of the opening handshake and never reads once the socket is
# open (the raw request and response, the parsed headers, the transport details,
# read up to onOpen): about 2.5 KiB a socket.
HANDSHAKE_LEFTOVERS = ("http_headers", "http_request_data", "http_response_data",
                       "http_status_line", "http_request_params", "websocket_extensions",
                       "http_request_uri", "http_request_path", "http_request_host", "_wskey",
                       "websocket_origin", "websocket_protocols", "_transport_details")

# Options autobahn itself assigns per connection (setTrackTimings): these stay per socket.
PER_SOCKET_OPTIONS = frozenset({"trackTimings"})


class _SendQueue(list):  # type: ignore[type-arg]
    """Autobahn's queue of chopped or synchronous writes, which this server never makes.

    Autobahn only appends to it, pops from the left and takes its length,
    which an empty list does in 56 bytes where a deque takes about 700.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class CompactServerProtocol(WebSocketServerProtocol):
    """WebSocketServerProtocol with its state in slots and its options on the factory."""

    __slots__ = AUTOBAHN_STATE + _OWN_STATE

    def __init__(self) -> None:
        # The class-level defaults the slots hide (buildProtocol sets the factory later).
        self.factory = self.transport = None
        self.connected = 0
        self.peer = None
        self._valid_events = self._results = self._listeners = None
        self._ping_round = 0
        super().__init__()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.send_queue = _SendQueue()  # still empty: nothing is written before the handshake

    def drop_handshake(self) -> None:
        """Forget what only the opening handshake reads; call it from onOpen."""
        for name in HANDSHAKE_LEFTOVERS:
            setattr(self, name, None)

    def send_text(self, payload: bytes) -> None:
        """Send one text message of any size.

        Autobahn's maxMessagePayloadSize bounds what clients send us, but its
        sendMessage applies it to what we send too (raising, which would end
        the push loop): a /sync body has no such bound. Above it, the message
        goes out through autobahn's streaming calls, as one fragmented message
        that a client reassembles like any other; below it, as one frame.
        """
        if 0 < self.maxMessagePayloadSize < len(payload):
            self.beginMessage(isBinary=False)
            self.sendMessageFrame(payload)
            self.endMessage()
        else:
            self.sendMessage(payload, isBinary=False)

    def onFrameEnd(self) -> bool | None:
        """Drop the frame's unmasker once its payload is read (about 230 bytes with cffi's
        state): autobahn makes a new one for every frame and would keep the last."""
        try:
            return super().onFrameEnd()
        finally:
            self.current_frame_masker = None

    def keepalive_ping(self, round_: int) -> None:
        """Ping the peer, unless a ping is still unanswered (one at a time, as autobahn)."""
        if self.state == self.STATE_OPEN and not self._ping_round:
            self._ping_round = round_
            self.sendPing()

    def keepalive_check(self, round_: int) -> None:
        """Drop the connection if a ping of round `round_` or earlier is still unanswered."""
        if 0 < self._ping_round <= round_ and self.state == self.STATE_OPEN:
            logger.info("dropping %s: no pong to the keepalive ping", self.peer)
            self.wasClean = False
            self.wasNotCleanReason = "WebSocket ping timeout (peer did not respond with pong)"
            self.dropConnection(abort=True)

    def onPong(self, payload: bytes) -> None:
        self._ping_round = 0


class Keepalive:
    """Pings every open socket every `interval_s`; drops those silent `timeout_s` later.

    What autobahn's autoPing does per socket (autoPingInterval and
    autoPingTimeout), with one timer for all of them where autobahn keeps a
    batched timer and a closure per socket. Runs only while sockets are open.
    """

    def __init__(self, reactor: Any, sockets: Collection[CompactServerProtocol],
                 timing: Callable[[], tuple[float, float]]) -> None:
        self._reactor = reactor
        self._sockets = sockets
        self._timing = timing  # (interval_s, timeout_s), read when they are used
        self._loop: task.LoopingCall | None = None
        self._round = 0
        self._checks: list[Any] = []  # pending checks, one per round still within its timeout

    def start(self) -> None:
        """Start pinging, unless already running; the first pings go out in `interval_s`."""
        if self._loop is None:
            self._loop = task.LoopingCall(self._ping_all)
            self._loop.clock = self._reactor
            self._loop.start(self._timing()[0], now=False)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        for check in self._checks:
            if check.active():
                check.cancel()
        self._checks = []

    def _ping_all(self) -> None:
        self._round += 1
        for socket in list(self._sockets):
            socket.keepalive_ping(self._round)
        self._checks = [c for c in self._checks if c.active()]
        self._checks.append(self._reactor.callLater(self._timing()[1], self._check_all,
                                                    self._round))

    def _check_all(self, round_: int) -> None:
        for socket in list(self._sockets):
            socket.keepalive_check(round_)


def _factory_option(name: str) -> property:
    """Autobahn's option `name`, read from the factory that every connection shares.

    Autobahn copies each option onto a new connection unless the protocol
    already has it; a property makes it skip the copy. The options are set
    once, on the factory (setProtocolOptions).
    """

    def get(protocol: CompactServerProtocol) -> Any:
        return getattr(protocol.factory, name)

    return property(get, doc=f"The factory's {name}, shared by every connection.")


for _option in WebSocketServerProtocol.CONFIG_ATTRS:
    if _option not in PER_SOCKET_OPTIONS:
        setattr(CompactServerProtocol, _option, _factory_option(_option))
