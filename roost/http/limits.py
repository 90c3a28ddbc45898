"""Request bodies with a size limit: 413 M_TOO_LARGE early, never a reset connection.

Twisted reads a whole body before a resource sees the request. A client that
sends more than the limit must still get the documented 413, and as early as
possible, so the request object answers by itself: as soon as Content-Length
shows the body is too large (before any of it is read: a client waiting on
`Expect: 100-continue` never sends it), or as soon as the bytes received pass
the limit. The rest of the body is then read and dropped without being kept,
so the client, which usually reads the answer only after sending, gets the
413 instead of a reset. Our side of the connection is closed for writing
right after the answer (the client sees it end), and fully once the body has
ended.

The limit depends on the path (uploads to the media repository may be larger
than JSON bodies); the site says which through `body_limit(path)`. Large
bodies are spooled to a temporary file (in the site's `spool_dir` when it has
one), never held in memory.
"""

from __future__ import annotations

import json
import tempfile
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import ISSLTransport
from twisted.web import server
from twisted.web.resource import Resource

from roost.http.answers import FastRequest

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
# Bodies this small stay in memory (Twisted's own threshold).
_IN_MEMORY_BELOW = 100_000
# Past the limit, this much more is read and dropped before the connection is cut:
# enough for any honest client to finish sending and read the 413.
_DISCARD_AT_MOST = 2 * 1024 * 1024 * 1024

_PLAIN_CHILD = Resource.getChildWithDefault
# Headers every early answer carries: CORS (browsers must be able to read the
# error) and those every media answer needs.
_EXTRA_HEADERS = (
    b"Access-Control-Allow-Origin: *\r\n"
    b"Content-Security-Policy: sandbox; default-src 'none';\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
)


class LimitedRequest(FastRequest):
    """A request whose body may not pass its site's limit (see the module docstring), and
    that writes whole answers in one go (roost.http.answers)."""

    max_body_bytes = DEFAULT_MAX_BODY_BYTES
    too_large = False
    _received = 0
    _discarded = 0

    def gotLength(self, length: int | None) -> None:
        if length == 0:  # no body (a GET): no limit to apply, nothing to spool
            self.content = BytesIO()
            return
        site = self.channel.site
        path = getattr(self.channel, "_path", b"")
        body_limit = getattr(site, "body_limit", None)
        self.max_body_bytes = (body_limit(path) if body_limit is not None
                               else getattr(site, "max_body_bytes", DEFAULT_MAX_BODY_BYTES))
        if length is not None and length > self.max_body_bytes:
            self.too_large = True
            expecting = self.requestHeaders.getRawHeaders(b"Expect") or []
            # No "100 Continue" for a body we refuse (Twisted sends it after this).
            self.requestHeaders.removeHeader(b"Expect")
            self.content = BytesIO()
            self._answer_too_large(close_now=any(e.lower() == b"100-continue" for e in expecting))
            return
        if length is not None and length < _IN_MEMORY_BELOW:
            self.content = BytesIO()
        else:
            self.content = tempfile.TemporaryFile(dir=getattr(site, "spool_dir", None))

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            self._discarded += len(data)
            if self._discarded > _DISCARD_AT_MOST:
                self.channel.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._received += len(data)
        if self._received > self.max_body_bytes:
            self.too_large = True
            self.content.close()
            self.content = BytesIO()
            self._answer_too_large(close_now=False)
            return
        super().handleContentChunk(data)

    def _answer_too_large(self, close_now: bool) -> None:
        """Write the 413 straight to the connection: the request is not parsed far enough
        for Twisted's response machinery, and must not wait for the rest of the body."""
        body = json.dumps({"errcode": "M_TOO_LARGE",
                           "error": f"Request body is larger than {self.max_body_bytes} bytes"}
                          ).encode()
        transport: Any = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: application/json\r\n"
            + b"Content-Length: %d\r\n" % len(body)
            + b"Connection: close\r\n" + _EXTRA_HEADERS + b"\r\n" + body)
        self.answered_early = True
        if close_now:
            # Through the channel: it unregisters itself as the transport's producer
            # first, without which a TLS transport never sends its close.
            self.channel.loseConnection()
        elif not ISSLTransport.providedBy(transport) and hasattr(transport,
                                                                 "loseWriteConnection"):
            # Half-close: the client sees the whole answer end while what it still
            # sends is read (and dropped) until it is done. Not under TLS: the TLS
            # wrapper forwards unknown attributes to the TCP transport below it, whose
            # half-close the TLS layer would not know of (its own close later tears
            # the connection down in the middle of a read).
            transport.loseWriteConnection()

    def _after_early_answer(self) -> None:
        """(FastRequest.requestReceived) The 413 went out already and the body has been
        dropped: close (the answer said so); no resource runs."""
        self.content.close()
        self.channel.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        # A truncated body: drop what was spooled at once rather than when collected.
        content = getattr(self, "content", None)
        if not self._body_complete and content is not None and not content.closed:
            try:
                content.close()
            except OSError:
                pass
        super().connectionLost(reason)


class LimitedSite(server.Site):
    """A Site using `LimitedRequest`: `max_body_bytes` everywhere, except paths starting
    with one of `large_bodies`' prefixes, which get that prefix's limit."""

    def __init__(self, resource: Any, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 **kwargs: Any) -> None:
        super().__init__(resource, requestFactory=LimitedRequest, **kwargs)
        self.max_body_bytes = max_body_bytes
        self.large_bodies: dict[bytes, int] = {}
        self.spool_dir: str | None = None

    def getResourceFor(self, request: Any) -> Any:
        """server.Site.getResourceFor with Twisted's traversal inline (twisted.web.resource
        .getChildForRequest: the same loop), two calls fewer per request."""
        request.site = self
        prepath, postpath = request.prepath, request.postpath
        request.sitepath = prepath[:]
        found = self.resource
        while postpath and not found.isLeaf:
            element = postpath.pop(0)
            prepath.append(element)
            if type(found).getChildWithDefault is _PLAIN_CHILD:
                # Resource.getChildWithDefault, inline: a static child, else getChild.
                child = found.children.get(element)
                found = child if child is not None else found.getChild(element, request)
            else:
                found = found.getChildWithDefault(element, request)
        return found

    def body_limit(self, path: bytes) -> int:
        for prefix, limit in self.large_bodies.items():
            if path.startswith(prefix):
                return limit
        return self.max_body_bytes
