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
"""

from __future__ import annotations

import time
from typing import Any

from twisted.python import failure
from twisted.web import resource, server

# Imported by name: twisted.web.http is a deprecation proxy whose every attribute read
# costs a Python call.
from twisted.web.http import NO_BODY_CODES, RESPONSES, datetimeToString, unquote

SERVER_HEADER = b"Server: " + server.version + b"\r\n"
_date: list[Any] = [0, b""]


def date_header() -> bytes:
    """`Date: ...\\r\\n` for now, formatted once per second."""
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, b"Date: " + datetimeToString(now) + b"\r\n"
    return _date[1]


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


class FastRequest(server.Request):
    """server.Request, with `answer` for whole answers (see the module docstring)."""

    def process(self) -> None:
        """server.Request.process, without setting Server and Date as header objects on
        every request (they are written with the head)."""
        self.site = self.channel.site
        self.prepath = []
        self.postpath = list(map(unquote, self.path[1:].split(b"/")))
        if self.path == b"*":
            self._handleStar()
            return
        try:
            resrc = self.site.getResourceFor(self)
            if resource._IEncodingResource.providedBy(resrc):
                encoder = resrc.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            self.render(resrc)
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
        self.code_message = RESPONSES.get(code, b"Unknown Status")
        self.startedWriting = 1
        parts = [b"%s %d %s\r\n" % (self.clientproto, code, self.code_message)]
        for name, values in self.responseHeaders.getAllRawHeaders():
            for value in values:
                parts.append(b"%s: %s\r\n" % (name, value))
        parts.append(SERVER_HEADER)
        parts.append(date_header())
        parts.append(head)
        parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
        if self.method != b"HEAD":
            parts.append(body)
            self.sentLength = len(body)
        self.channel.write(b"".join(parts))
        self.finish()

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
