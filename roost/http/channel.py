"""The client listener's HTTP/1.1 connection: Twisted's HTTPChannel, reading a head at once.

Twisted's channel is a LineReceiver: each line of a request's head is cut
from the buffer and handed to `lineReceived`, which checks the request line
byte by byte in Python, holds each header line back until the next one shows
it is not continued, and stores it through `headerReceived`. For a long-poll
that is about a tenth of the CPU of a delivery (docs/benchmarks.md).

When the buffer holds a whole head (up to the blank line), `LeanChannel`
checks and stores it in one pass instead: the request line and each header
name as Twisted checks them (a table lookup for the bytes each may hold),
values without NUL, CR or LF, Content-Length and Transfer-Encoding as
`_maybeChooseTransferDecoder` accepts them, and the count and size limits.
Only a head that passes every check takes this path; anything else (a head
split across reads, header lines continued on the next line, a bad line, a
head too large) is left to Twisted's own line-by-line code from the same
state, so answers to bad requests (400 and close), the limits, and which
request gets what are Twisted's. What follows the head (a body, pipelined
requests) goes through Twisted's code as before. tests/http/test_channel.py
compares both channels on the same bytes, cut at every boundary.

`headerReceived` (Twisted's line-by-line path) makes Twisted's checks and
stores the checked value directly, without `Headers.addRawHeader`'s second
pass. The site builds the channel inside Twisted's own wrapper
(`lean_channel`), as Twisted builds its HTTPChannel: the wrapper is what the
half-closed connections of roost.http.limits rely on being closed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.protocols.basic import LineReceiver
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.http_headers import InvalidHeaderName, _nameEncoder
from twisted.web.iweb import INonQueuedRequestFactory

# RFC 9110 tchar: what twisted.web._abnf._istoken accepts (methods, header names).
_TOKEN_BYTES = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                b"!#$%&'*+-.^_`|~")
# What twisted.web.http._parseRequestLine accepts in a request target: 33..176.
_TARGET_BYTES = bytes(range(33, 177))
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
_FRAMING = (b"Content-Length", b"Transfer-Encoding")
# Header names as sent -> canonical names: a few per client, bounded against floods.
_names: dict[bytes, bytes] = {}
_NAMES_KEPT = 1000
# A head's header lines (the bytes after the request line) -> parse_header_block's
# answer, for heads it accepted: about one per client connection, bounded.
_parsed_blocks: dict[bytes, tuple[dict[bytes, list[bytes]], list[tuple[bytes, bytes]], int]] = {}
_BLOCKS_KEPT = 2048
# Request factories -> whether they provide INonQueuedRequestFactory (asked once each).
_non_queued: dict[Any, bool] = {}
# A timer firing this close to the end of the idle time ends it (clocks' rounding).
_IDLE_SLACK = 1e-3


def parse_request_line(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(method, target, version) when Twisted's _parseRequestLine accepts `line`, else
    None."""
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    # (_is_token(method), inline)
    if (not method or method.translate(None, _TOKEN_BYTES) or not target
            or target.translate(None, _TARGET_BYTES)):
        return None
    if version not in _VERSIONS:
        return None
    return method, target, version


def _canonical_name(raw: bytes) -> bytes | None:
    name = _names.get(raw)
    if name is None:
        try:
            name = _nameEncoder.encode(raw)
        except InvalidHeaderName:
            return None
        if len(_names) < _NAMES_KEPT:
            _names[raw] = name
    return name


def parse_header_lines(lines: list[bytes]) -> tuple[dict[bytes, list[bytes]],
                                                     list[tuple[bytes, bytes]]] | None:
    """Header lines (no CR, LF or NUL in any) as {canonical name: values} plus the
    framing headers (Content-Length, Transfer-Encoding) in order, when Twisted would
    accept every one of them; None for anything Twisted answers 400 or reads differently
    (a continued line)."""
    fields: dict[bytes, list[bytes]] = {}
    framing: list[tuple[bytes, bytes]] = []
    for line in lines:
        raw_name, colon, value = line.partition(b":")
        if not colon:
            return None
        # A continued line (starting with a blank) has no token before its colon.
        name = _names.get(raw_name) or _canonical_name(raw_name)
        if name is None:
            return None
        value = value.strip(b" \t")
        if name in _FRAMING:
            framing.append((name, value))
        values = fields.get(name)
        if values is None:
            fields[name] = [value]
        else:
            values.append(value)
    return (fields, framing) if _framing_accepted(framing) else None


def parse_header_block(block: bytes) -> tuple[dict[bytes, list[bytes]],
                                             list[tuple[bytes, bytes]], int] | None:
    """A head's header lines (between the request line's CRLF and the blank line; b""
    for none): parse_header_lines' answer and the number of lines, when none holds a
    NUL or a lone CR or LF; else None."""
    lines = block.split(b"\r\n") if block else []
    # Each CRLF is two of the bytes removed; any other CR, LF or NUL makes it more.
    if len(block.translate(None, b"\x00\r\n")) != len(block) - 2 * max(len(lines) - 1, 0):
        return None
    parsed = parse_header_lines(lines)
    return None if parsed is None else (parsed[0], parsed[1], len(lines))


def _framing_accepted(framing: list[tuple[bytes, bytes]]) -> bool:
    """What HTTPChannel._maybeChooseTransferDecoder accepts: at most one of a decimal
    Content-Length or a chunked Transfer-Encoding (identity is ignored)."""
    chosen = False
    for name, value in framing:
        if name == b"Content-Length":
            if not value.isdigit():
                return False
        else:
            lowered = value.lower()
            if lowered == b"identity":
                continue
            if lowered != b"chunked":
                return False
        if chosen:
            return False
        chosen = True
    return True


class LeanChannel(HTTPChannel):
    _peer: Any = None
    _host: Any = None
    _transport: Any = None
    _idle_call: Any = None  # the idle timer (setTimeout)
    _idle_from = 0.0  # when the idle period began, in the timer's clock

    def dataReceived(self, data: bytes) -> None:
        """Whole heads at the start of a request in one pass; everything else (and what is
        left once a request is under way) through Twisted's line-by-line code."""
        if (self._busyReceiving or not self.line_mode or not self.persistent
                or not self._HTTPChannel__first_line):  # type: ignore[attr-defined]
            HTTPChannel.dataReceived(self, data)
            return
        idle = self._idle_call
        if idle is not None:  # resetTimeout
            self._idle_from = idle.seconds()
        self._buffer += data
        self._busyReceiving = True
        try:
            while (self._buffer and self.line_mode and self.persistent and not self.paused
                   and self._HTTPChannel__first_line  # type: ignore[attr-defined]
                   and self._head_at_once()):
                transport = self._transport
                if transport is not None and transport.disconnecting:
                    # LineReceiver stops here too, leaving the rest unread.
                    return
        finally:
            self._busyReceiving = False
        if self._buffer:
            LineReceiver.dataReceived(self, b"")

    def _head_at_once(self) -> bool:
        """Take the request whose whole head starts the buffer, as lineReceived would line
        by line; False (nothing done) when it is not there or not plainly valid."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end > self.totalHeadersSize or end > self.MAX_LENGTH:
            return False
        first = buffer.find(b"\r\n", 0, end + 2)  # the end of the request line
        # (A CR, LF or NUL in the request line makes parse_request_line refuse it.)
        request_line = parse_request_line(buffer[:first])
        if request_line is None:
            return False
        # A client sends the same header lines on every request of its connection (a
        # long poll's next request differs in its request line): checked and parsed
        # once per block.
        block = buffer[first + 2:end]
        parsed = _parsed_blocks.get(block)
        if parsed is None:
            parsed = parse_header_block(block)
            if parsed is None:
                return False
            if len(_parsed_blocks) >= _BLOCKS_KEPT:
                _parsed_blocks.clear()
            _parsed_blocks[block] = parsed
        kept, framing, count = parsed
        if count > self.maxHeaders:
            return False
        fields = {name: values[:] for name, values in kept.items()}  # the request's own
        factory = self.requestFactory
        non_queued = _non_queued.get(factory)
        if non_queued is None:
            non_queued = _non_queued_factory(factory)
        request = factory(self) if non_queued else factory(self, len(self.requests))
        self.requests.append(request)
        request.requestHeaders._rawHeaders = fields
        self._buffer = buffer[end + 4:]
        if not framing:  # no body (a GET): the request is whole
            self._whole_request(request, request_line, fields)
            return True
        self._HTTPChannel__first_line = 0
        self._command, self._path, self._version = request_line
        self._receivedHeaderCount = count
        self._receivedHeaderSize = end - 2 * count
        for name, value in framing:
            self._maybeChooseTransferDecoder(name, value)  # accepted: checked above
        self.allHeadersReceived()
        if self.length == 0:
            self.allContentReceived()
        else:
            self.setRawMode()
        return True

    def _whole_request(self, request: Any, request_line: tuple[bytes, bytes, bytes],
                       fields: dict[bytes, list[bytes]]) -> None:
        """allHeadersReceived and allContentReceived (below) for a request without a body,
        in one call: the state they set in between and reset at the end (the first-line
        flag, the header count and size, the request line) is left as it was."""
        if b"Cookie" in fields:
            request.parseCookies()
        version = request_line[2]
        if version == b"HTTP/1.1" and b"Connection" not in fields:
            self.persistent = True
        else:
            self.persistent = self.checkPersistence(request, version)
        request.gotLength(0)
        expect = fields.get(b"Expect")
        if expect and expect[0].lower() == b"100-continue" and version == b"HTTP/1.1":
            self._send100Continue()
        self._transferDecoder = None
        self._handlingRequest = True
        self.line_mode = 0  # setRawMode
        request.requestReceived(*request_line)

    def allContentReceived(self) -> None:
        """HTTPChannel.allContentReceived (Twisted 26.10), leaving the idle timer running
        while the request is handled (`timeoutConnection` lets it pass) instead of
        cancelling it here and making a new one in `requestDone`: a reactor timer
        cancelled and one created on every request."""
        command, path, version = self._command, self._path, self._version
        self.length = 0
        self._receivedHeaderCount = 0
        self._receivedHeaderSize = 0
        self._HTTPChannel__first_line = 1
        self._transferDecoder = None
        del self._command, self._path, self._version
        self._handlingRequest = True
        self.setRawMode()
        self.requests[-1].requestReceived(command, path, version)

    def requestDone(self, request: Any) -> None:
        """HTTPChannel.requestDone (Twisted 26.10), comparing requests by identity (what
        Request.__eq__ does, one call fewer); the idle time counts from the answer, as
        when Twisted starts a new timer here. The transport is asked to read again only
        when it is not reading (the resumeProducing that Twisted calls every time does
        nothing then)."""
        idle = self._idle_call
        if idle is not None:  # resetTimeout
            self._idle_from = idle.seconds()
        if request is not self.requests[0]:
            raise TypeError
        del self.requests[0]
        if not self._waitingForTransport:
            producer = self._networkProducer
            # Twisted resumes every time; only needed when the transport is not reading (a
            # TCP connection's socket that an epoll reactor watches for reads for sure).
            reactor = getattr(producer, "reactor", None)
            if not (type(producer) is tcp.Server and isinstance(reactor, EPollReactor)
                    and producer.fileno() in reactor._reads):
                producer.resumeProducing()
        if self.persistent:
            self._handlingRequest = False
            if self._savedTimeOut:
                self.setTimeout(self._savedTimeOut)
            if self._dataBuffer:
                data = b"".join(self._dataBuffer)
                self._dataBuffer = []
                self.setLineMode(data)
            else:
                self.line_mode = 1  # setLineMode(b"")
        else:
            self.loseConnection()

    # -- the idle timeout ---------------------------------------------------------------
    # TimeoutMixin moves its timer on every read and every answer (a reactor call's reset:
    # two per request). Here a reset only notes the time; when the timer fires before
    # the idle time is over, it is set again for the rest.

    def setTimeout(self, period: float | None) -> float | None:  # type: ignore[override]
        """TimeoutMixin.setTimeout: a new idle period of `period` seconds from now (None:
        no timeout); returns the previous period."""
        previous, self.timeOut = self.timeOut, period
        idle = self._idle_call
        if period is None:
            if idle is not None:
                self._idle_call = None
                if idle.active():
                    idle.cancel()
        elif idle is None:
            self._idle_call = idle = self.callLater(period, self._idle_timer_fired)
            self._idle_from = idle.seconds()
        else:
            self._idle_from = idle.seconds()
            idle.reset(period)
        return previous

    def resetTimeout(self) -> None:
        """TimeoutMixin.resetTimeout: the idle period starts again now."""
        idle = self._idle_call
        if idle is not None:
            self._idle_from = idle.seconds()

    def _idle_timer_fired(self) -> None:
        fired, self._idle_call = self._idle_call, None
        if fired is None or self.timeOut is None:
            return
        remaining = self._idle_from + self.timeOut - fired.seconds()
        if remaining > _IDLE_SLACK:
            self._idle_call = self.callLater(remaining, self._idle_timer_fired)
            return
        self.timeoutConnection()

    @property  # type: ignore[override]
    def transport(self) -> Any:
        return self._transport

    @transport.setter
    def transport(self, value: Any) -> None:
        """A request that takes the connection over (the WebSocket: Autobahn sets the
        channel's transport to None) leaves this channel for good: its idle timer,
        which runs during requests here, stops with it."""
        self._transport = value
        if value is None:
            self.setTimeout(None)

    def timeoutConnection(self) -> None:
        """No idle timeout while a request is being handled (a long poll), as in Twisted,
        whose timer is off meanwhile: start a new period instead."""
        if self._handlingRequest:
            self.setTimeout(self.timeOut)
            return
        super().timeoutConnection()

    def allHeadersReceived(self) -> None:
        """HTTPChannel.allHeadersReceived (Twisted 26.10), reading the header dict
        directly; cookies are parsed only when there are some."""
        request = self.requests[-1]
        fields = request.requestHeaders._rawHeaders
        if b"Cookie" in fields:
            request.parseCookies()
        if self._version == b"HTTP/1.1" and b"Connection" not in fields:
            self.persistent = True  # what checkPersistence answers, without its reads
        else:
            self.persistent = self.checkPersistence(request, self._version)
        request.gotLength(self.length)
        # After gotLength, which may drop the header (roost.http.limits).
        expect = fields.get(b"Expect")
        if expect and expect[0].lower() == b"100-continue" and self._version == b"HTTP/1.1":
            self._send100Continue()

    def getPeer(self) -> Any:
        """The transport's peer, asked once per connection rather than per request."""
        if self._peer is None:
            self._peer = self.transport.getPeer()  # type: ignore[union-attr]
        return self._peer

    def getHost(self) -> Any:
        if self._host is None:
            self._host = self.transport.getHost()  # type: ignore[union-attr]
        return self._host

    def headerReceived(self, line: bytes) -> bool:
        """HTTPChannel.headerReceived (Twisted 26.10), without the second pass."""
        try:
            header, data = line.split(b":", 1)
        except ValueError:
            self._respondToBadRequestAndDisconnect()
            return False
        try:
            header = _nameEncoder.encode(header)
        except InvalidHeaderName:
            self._respondToBadRequestAndDisconnect()
            return False
        data = data.strip(b" \t")
        if len(data.translate(None, b"\x00\r\n")) != len(data):
            self._respondToBadRequestAndDisconnect()
            return False
        if not self._maybeChooseTransferDecoder(header, data):
            return False
        # What Headers.addRawHeader stores, once the name is canonical and the value
        # holds no line break (checked above).
        self.requests[-1].requestHeaders._rawHeaders.setdefault(header, []).append(data)
        self._receivedHeaderCount += 1
        if self._receivedHeaderCount > self.maxHeaders:
            self._respondToBadRequestAndDisconnect()
            return False
        return True


def _non_queued_factory(factory: Any) -> bool:
    """Whether a request factory provides INonQueuedRequestFactory (takes no queue
    position), remembered: a zope interface check per request otherwise."""
    answer = bool(INonQueuedRequestFactory.providedBy(factory))
    if len(_non_queued) < 64:
        _non_queued[factory] = answer
    return answer


class _LeanHTTPChannelProtocol(_GenericHTTPChannelProtocol):
    """Twisted's wrapper, which picks the channel (HTTP/1.1 or HTTP/2) on the first read
    and from then on only hands each read to it: later reads go to the channel
    directly (one Python call fewer per request)."""

    def dataReceived(self, data: bytes) -> None:
        _GenericHTTPChannelProtocol.dataReceived(self, data)
        if self._negotiatedProtocol is not None:
            self.dataReceived = self._channel.dataReceived  # type: ignore[method-assign]


def lean_channel(site: Any) -> Any:
    """A Site's `protocol`: what twisted.web.http._genericHTTPChannelProtocolFactory
    makes, around a LeanChannel."""
    return _LeanHTTPChannelProtocol(LeanChannel())
