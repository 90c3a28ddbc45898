"""A request that writes a whole answer in one transport write.

Twisted's Request sets `Server` and `Date` through its header object on every
request, re-encodes and checks each header when it writes them, and hands the
transport a sequence of some thirty small byte strings that are each checked
again; for a JSON answer of known length that was about a fifth of the
server's CPU when one message woke twenty long polls (docs/benchmarks.md).
`FastRequest.answer` writes the status line, the headers (those already set
on the request, such as Twisted's `Connection: close`, then the constant ones
the caller passes pre-encoded) and the body as one bytes object, then
finishes the request as Twisted would: keep-alive, HEAD (headers only, with
the body's length) and the end-of-request notifications are Twisted's own.
Everything else (files, multipart, chunked answers) still goes through
Twisted's `write`, which adds `Server` and `Date` on its first call.

Receiving, `FastRequest` does what Twisted's Request does with fewer calls: the
query string is parsed when `args` is first read (`parse_query`, Twisted's
`parse_qs` without unquoting what holds no escape), path segments are unquoted
only when they hold a `%`, and a form body is still parsed into `args` by
Twisted's own code. `when_lost` registers a plain callback for a client that
goes before its answer, for callers that would otherwise make a
`notifyFinish` Deferred on every request only to cancel on its errback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.python import failure
from twisted.web import resource, server

# Imported by name: twisted.web.http is a deprecation proxy whose every attribute read
# costs a Python call.
from twisted.web.http import NO_BODY_CODES, RESPONSES, datetimeToString, unquote
from twisted.web.http_headers import Headers

SERVER_HEADER = b"Server: " + server.version + b"\r\n"
# The content types Twisted parses a POST body of into `args` (http.Request.requestReceived).
FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")
_date: list[Any] = [0, b""]
_time = time.time
# Headers() without its __init__'s Python call (it only sets an empty dict).
_new_headers = Headers.__new__


def date_header() -> bytes:
    """`Date: ...\\r\\n` for now, formatted once per second."""
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, b"Date: " + datetimeToString(now) + b"\r\n"
    return _date[1]


# (HTTP version, status code) -> (reason phrase, status line): a handful of pairs.
_status_lines: dict[tuple[bytes, int], tuple[bytes, bytes]] = {}


def _status_line(version: bytes, code: int) -> tuple[bytes, bytes]:
    message = RESPONSES.get(code, b"Unknown Status")
    found = (message, b"%s %d %s\r\n" % (version, code, message))
    if len(_status_lines) < 64 and version in (b"HTTP/1.1", b"HTTP/1.0"):
        _status_lines[(version, code)] = found
    return found


def encode_headers(headers: dict[str, str] | None) -> bytes:
    """Headers given as text (a Matrix error's Retry-After...) as raw header lines; a
    name or value holding a line break is left out (no header injection)."""
    if not headers:
        return b""
    lines = []
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0") or ":" in name:
            continue
        lines.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    return b"".join(lines)


def write_now(transport: Any, data: bytes) -> None:
    """transport.write(data), sending at once what the socket takes when nothing is
    waiting to be sent before it.

    Twisted's TCP transport only buffers on write and registers for writability; the
    send happens on the reactor's next turn, and each answer costs two epoll_ctl calls
    (start and stop writing) and a turn of its own. On a plain TCP connection with an
    empty buffer the order of bytes cannot change by sending now; whatever the socket
    does not take goes through transport.write as before, and so does everything on
    any error (EAGAIN, EINTR, a reset: what tcp.Connection.writeSomeData maps to "0
    sent" or "connection lost" alike leaves the bytes to the transport, whose own
    write then meets the same condition).
    """
    if (type(transport) is tcp.Server and not transport.TLS and transport.connected
            and not transport.disconnecting and not transport._writeDisconnected
            and not transport.dataBuffer and not transport._tempDataBuffer):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


def parse_query(query: bytes) -> dict[bytes, list[bytes]]:
    """twisted.web.http.parse_qs(query, keep_blank_values=1): the same dict, with no call
    to unquote for a part that holds nothing to unquote."""
    args: dict[bytes, list[bytes]] = {}
    items = (query.split(b"&") if b";" not in query
             else [item for part in query.split(b"&") for item in part.split(b";")])
    for item in items:
        key, equals, value = item.partition(b"=")
        if not equals:
            continue
        if b"+" in item:
            key, value = key.replace(b"+", b" "), value.replace(b"+", b" ")
        if b"%" in item:
            key, value = unquote(key), unquote(value)
        values = args.get(key)
        if values is None:
            args[key] = [value]
        else:
            values.append(value)
    return args


class _Rendered:
    """What a resource's render returned, handed to server.Request.render as a resource
    answering it (repr: the resource's, as in Twisted's error page)."""

    def __init__(self, resrc: Any, body: Any) -> None:
        self._resrc, self._body = resrc, body

    def render(self, request: Any) -> Any:
        return self._body

    def __repr__(self) -> str:
        return repr(self._resrc)


_TWISTED_RENDER = server.Request.render
# Resources -> whether they provide _IEncodingResource (a zope check per request
# otherwise): the site's few leaf resources.
_encoding: dict[Any, bool] = {}


def _encoding_resource(resrc: Any) -> bool:
    answer = bool(resource._IEncodingResource.providedBy(resrc))
    if len(_encoding) >= 256:
        _encoding.clear()
    _encoding[resrc] = answer
    return answer


class FastRequest(server.Request):
    """server.Request, with `answer` for whole answers (see the module docstring)."""

    # Set by a subclass that answered before the whole body was in (roost.http.limits).
    answered_early = False
    _body_complete = False  # the whole request has arrived
    _args: dict[bytes, list[bytes]] | None = None
    _query: bytes | None = None  # set once the request is received: b"" for none
    _on_lost: list[Callable[[], object]] | None = None

    def __init__(self, channel: Any, queued: Any = False, **kwargs: Any) -> None:
        """server.Request.__init__ (Twisted 26.10) for the channel's own call (the
        channel and the deprecated `queued`), without the three nested initialisers."""
        if kwargs:
            super().__init__(channel, queued, **kwargs)
            return
        self.notifications = []
        self.channel = channel
        # A LeanChannel's peer, host and transport are read directly once it holds them.
        self.client = getattr(channel, "_peer", None) or channel.getPeer()
        self.host = getattr(channel, "_host", None) or channel.getHost()
        self.requestHeaders = headers = _new_headers(Headers)
        headers._rawHeaders = {}
        self.received_cookies = {}
        self.responseHeaders = headers = _new_headers(Headers)
        headers._rawHeaders = {}
        self.cookies = []
        self.transport = getattr(channel, "_transport", None) or channel.transport
        self.queued = queued
        self._parsePOSTFormSubmission = channel.site._parsePOSTFormSubmission
        self._adapterCache = {}  # components.Componentized

    @property  # type: ignore[override]
    def args(self) -> dict[bytes, list[bytes]] | None:
        """The query arguments, parsed on first read (None before the request is in)."""
        args = self._args
        if args is None and self._query is not None:
            args = self._args = parse_query(self._query) if self._query else {}
        return args

    @args.setter
    def args(self, value: dict[bytes, list[bytes]] | None) -> None:
        self._args = value

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """http.Request.requestReceived, leaving the query string unparsed until read; a
        POST body that may be a form goes through Twisted's own code. Only one whose
        content type names a form: Twisted reads any content type with the email
        package's header parser (an EmailMessage per POST, and about half a MiB of
        modules imported by the first JSON POST: bench/memory.py)."""
        self._body_complete = True
        if self.answered_early:
            self._after_early_answer()
            return
        ctype = self.requestHeaders._rawHeaders.get(b"Content-Type")
        if (command == b"POST" and self._parsePOSTFormSubmission and ctype
                and ctype[0].lstrip().lower().startswith(FORM_TYPES) and self.content.tell()):
            super().requestReceived(command, path, version)
            return
        self.content.seek(0, 0)
        self.method, self.uri, self.clientproto = command, path, version
        self.path, question, query = path.partition(b"?")
        self._args = None
        self._query = query if question else b""
        self.process()

    def _after_early_answer(self) -> None:
        """The whole request is in, after a subclass answered it early (set
        `answered_early`: roost.http.limits); no resource runs."""
        raise NotImplementedError

    def when_lost(self, callback: Callable[[], object]) -> None:
        """Call `callback` if the connection is lost before the answer is finished."""
        if self._on_lost is None:
            self._on_lost = []
        self._on_lost.append(callback)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        callbacks, self._on_lost = self._on_lost, None
        for callback in callbacks or ():
            callback()

    def process(self) -> None:
        """server.Request.process, without setting Server and Date as header objects on
        every request (they are written with the head), and with server.Request.render's
        usual case inline: a resource that answers later (NOT_DONE_YET)."""
        self.site = site = self.channel.site
        self.prepath = []
        path = self.path[1:]
        self.postpath = list(map(unquote, path.split(b"/"))) if b"%" in path else path.split(b"/")
        if self.path == b"*":
            self._handleStar()
            return
        try:
            resrc = site.getResourceFor(self)
            encoding = _encoding.get(resrc)
            if encoding is None:
                encoding = _encoding_resource(resrc)
            if encoding:
                encoder = resrc.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            if type(self).render is not _TWISTED_RENDER:
                self.render(resrc)
                return
            try:
                body = resrc.render(self)
            except resource.UnsupportedMethod:
                # Twisted's answer (HEAD rendered as GET, 405 or 501) from its own render,
                # which asks the resource again: a resource refuses a method before
                # doing anything (Resource.render looks the method up first).
                _TWISTED_RENDER(self, resrc)
                return
            if body is not server.NOT_DONE_YET:
                _TWISTED_RENDER(self, _Rendered(resrc, body))  # Twisted's handling of it
        except BaseException:
            self.processingFailed(failure.Failure())

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            headers = self.responseHeaders
            if not headers.hasHeader(b"Server"):
                headers.setRawHeaders(b"Server", [server.version])
            if not headers.hasHeader(b"Date"):
                headers.setRawHeaders(b"Date", [datetimeToString()])
        super().write(data)

    def answer(self, code: int, head: bytes, body: bytes) -> None:
        """Answer with `code`, the header lines `head` (each ending in CRLF; no
        Content-Length) and `body`, in one write, and finish. Nothing happens when
        the client has gone or an answer was already started."""
        if self.finished or self._disconnected:
            return
        if self.startedWriting or code in NO_BODY_CODES or self._encoder is not None:
            self._answer_through_twisted(code, head, body)
            return
        self.code = code
        status = _status_lines.get((self.clientproto, code))
        if status is None:
            status = _status_line(self.clientproto, code)
        self.code_message, line = status
        self.startedWriting = 1
        if self.responseHeaders._rawHeaders:  # (most answers set none on the request)
            own = [b"%s: %s\r\n" % (name, value)
                   for name, values in self.responseHeaders.getAllRawHeaders()
                   for value in values]
            line += b"".join(own)
        length = b"Content-Length: %d\r\n\r\n" % len(body)
        now = int(_time())  # date_header(), inline
        date = _date[1] if now == _date[0] else date_header()
        if self.method != b"HEAD":
            data = b"".join((line, SERVER_HEADER, date, head, length, body))
            self.sentLength = len(body)
        else:
            data = b"".join((line, SERVER_HEADER, date, head, length))
        write_now(self.transport, data)  # (the channel's, taken at the start)
        # Request.finish for this case (no encoder, nothing chunked, the head and body
        # written): the site's log (unless it keeps none), then the end of the request.
        channel = self.channel
        factory = getattr(channel, "factory", None)
        if factory is not None and getattr(factory, "access_log", True):
            factory.log(self)
        self.finished = 1
        if self._on_lost is not None:  # answered: no longer called (nor kept: a cycle)
            self._on_lost = None
        if self.queued:
            return
        if self.producer:
            self._cleanup()
            return
        # Request._cleanup (Twisted 26.10) without a producer left registered, inline.
        channel.requestDone(self)
        del self.channel
        content = self.content
        if content is not None:
            try:
                content.close()
            except OSError:
                pass
            del self.content
        for d in self.notifications:
            d.callback(None)
        self.notifications = []

    def _answer_through_twisted(self, code: int, head: bytes, body: bytes) -> None:
        self.setResponseCode(code)
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b": ")
            if name:
                self.setHeader(name, value)
        self.setHeader(b"Content-Length", b"%d" % len(body))
        if self.method != b"HEAD":
            self.write(body)
        self.finish()
