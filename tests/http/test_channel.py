"""The client listener's channel (roost.http.channel.LeanChannel, with roost.http.answers'
FastRequest) against Twisted's own HTTPChannel and Request on the same bytes.

Each case is a byte stream a client might send: pipelined requests, bodies by
Content-Length and chunked, HEAD, keep-alive and close, HTTP/1.0, and the heads
Twisted refuses (bad request lines, header lines without a colon, bad names, NUL or
lone CR/LF in values, continued lines, conflicting framing, too many or too large
headers). Both channels get the stream whole, cut in two at every byte, and one byte
at a time, with requests answered at once or only after everything has arrived; what
each request saw (method, target, headers, body, arguments, cookies) and every byte
written back, and whether the connection was closed, must be the same.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from twisted.web import http, server
from twisted.web.resource import Resource

from roost.http.answers import FastRequest, parse_query
from roost.http.channel import LeanChannel, parse_request_line


class _Recording:
    """What a request saw, recorded on its channel; answered with a short body, at once or
    when the test says."""

    def process(self) -> None:
        channel: Any = self.channel  # type: ignore[attr-defined]
        req: Any = self
        content = req.content.read()
        channel.seen.append((
            req.method, req.uri, req.path, req.clientproto,
            sorted((name, list(values)) for name, values in req.requestHeaders.getAllRawHeaders()),
            content, sorted((k, list(v)) for k, v in (req.args or {}).items()),
            sorted(req.received_cookies.items())))
        if channel.answer_later:
            channel.pending.append(self)
        else:
            _answer(self)


def _answer(request: Any) -> None:
    # Both classes write the same head: Server, Date and Content-Type are set
    # (server.Request and FastRequest.write add them only when missing).
    request.responseHeaders.setRawHeaders(b"Server", [b"test"])
    request.responseHeaders.setRawHeaders(b"Date", [b"then"])
    request.responseHeaders.setRawHeaders(b"Content-Type", [b"text/plain"])
    body = b"%s %s" % (request.method, request.uri)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.write(body)
    request.finish()


class TwistedRecording(_Recording, http.Request):
    pass


class LeanRecording(_Recording, FastRequest):
    pass


def _run(channel_class: type, request_class: type, chunks: list[bytes],
         answer_later: bool) -> tuple[list[Any], bytes, bool]:
    channel = channel_class()
    channel.requestFactory = request_class
    channel.site = server.Site(Resource())
    channel.seen, channel.pending, channel.answer_later = [], [], answer_later
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 4000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8008))
    channel.makeConnection(transport)
    for chunk in chunks:
        if transport.disconnecting:
            break  # the reactor reads nothing more once the connection is closing
        channel.dataReceived(chunk)
    while channel.pending and not transport.disconnecting:
        _answer(channel.pending.pop(0))
    channel.connectionLost(Exception("done"))
    channel.setTimeout(None)
    return channel.seen, transport.value(), transport.disconnecting


def _cuts(stream: bytes) -> list[list[bytes]]:
    ways = [[stream], [stream[i:i + 1] for i in range(len(stream))]]
    ways += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    return ways


GET = b"GET /_matrix/client/v3/sync?since=s1_2&timeout=30000 HTTP/1.1\r\nHost: x\r\n" \
      b"Authorization: Bearer abc\r\nAccept: */*\r\n\r\n"
BODY = b'{"msgtype": "m.text", "body": "hi"}'
MULTIPART = (b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\none\r\n"
             b"--xyz\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\ntwo\r\n--xyz--\r\n")

CASES: dict[str, bytes] = {
    "pipelined gets, head and queries": (
        GET + b"HEAD /a/b%20c/d HTTP/1.1\r\nhost: y\r\nX-Many: 1\r\nx-many:  2 \t\r\n\r\n"
        + b"GET /q?a=1&a=2;b=%20+x&c&=d&e=&f=%zz HTTP/1.1\r\n\r\n" + GET),
    "body by length then a get": (
        b"PUT /send/1 HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(BODY) + BODY + GET),
    "chunked body then a get": (
        b"POST /upload HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n" + GET),
    "identity and a length": (
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc" + GET),
    "a form body": (
        b"POST /form?x=1 HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 11\r\n\r\nb=2&c=%41+B" + GET),
    "a form body, its type in capitals with parameters": (
        b"POST /form HTTP/1.1\r\nContent-Type:  Application/X-WWW-Form-Urlencoded; charset=utf-8\r\n"
        b"Content-Length: 7\r\n\r\na=1&b=2" + GET),
    "a multipart form": (
        b"POST /multi HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
        b"Content-Length: %d\r\n\r\n" % len(MULTIPART) + MULTIPART + GET),
    "a json post": (
        b"POST /createRoom HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(BODY) + BODY + GET),
    "cookies and expect": (
        b"POST /c HTTP/1.1\r\nCookie: a=1; b=2\r\nCookie: c\r\nExpect: 100-continue\r\n"
        b"Content-Length: 2\r\n\r\nok" + GET),
    "connection close drops what follows": (
        b"GET /one HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n" + GET),
    "http/1.0 is never kept alive": b"GET /old HTTP/1.0\r\n\r\n" + GET,
    "one leading empty line is allowed": b"\r\n" + GET + GET,
    "two leading empty lines are not": b"\r\n\r\n" + GET,
    "continued header line": b"GET /f HTTP/1.1\r\nX-Folded: a\r\n  b\r\n\tc\r\nHost: x\r\n\r\n" + GET,
    "header line without colon": GET + b"GET / HTTP/1.1\r\nNoColonHere\r\n\r\n" + GET,
    "bad header name": b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n" + GET,
    "empty header name": b"GET / HTTP/1.1\r\n: x\r\n\r\n" + GET,
    "nul in a value": b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n" + GET,
    "lone lf in a value": b"GET / HTTP/1.1\r\nX-A: a\nb\r\n\r\n" + GET,
    "lone cr in a value": b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n" + GET,
    "two lengths": b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxx",
    "length and chunked": b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nx",
    "unknown transfer encoding": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nx",
    "signed length": b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx",
    "bad chunk size": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
    "request line with two spaces": b"GET  / HTTP/1.1\r\n\r\n" + GET,
    "request line without version": b"GET /\r\n\r\n" + GET,
    "unknown version": b"GET / HTTP/2.0\r\n\r\n" + GET,
    "method not a token": b"G(T / HTTP/1.1\r\n\r\n" + GET,
    "lower-case method": b"get /x HTTP/1.1\r\n\r\n" + GET,
    "target bytes 160 and 177": b"GET /\xa0 HTTP/1.1\r\n\r\nGET /\xb1 HTTP/1.1\r\n\r\n",
    "too many headers": b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(501))
    + b"\r\n" + GET,
    "as many headers as allowed": b"GET / HTTP/1.1\r\n" + b"".join(
        b"X-%d: v\r\n" % n for n in range(500)) + b"\r\n" + GET,
    "head too large": b"GET / HTTP/1.1\r\n" + b"X-Big: %s\r\n" % (b"v" * 9000) * 2 + b"\r\n" + GET,
    "line too long": b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n\r\n" + GET,
    "largest head": b"GET / HTTP/1.1\r\nX-Big: " + b"v" * (16384 - 16 - 7) + b"\r\n\r\n" + GET,
}
# Cut at every byte only where that stays quick (the large heads are cut at a few).
_LARGE = 2000


class ChannelTests(TestCase):
    def _compare(self, name: str, stream: bytes) -> None:
        ways = _cuts(stream) if len(stream) < _LARGE else [[stream]] + [
            [stream[:k], stream[k:]] for k in (1, 100, 8000, len(stream) - 5)]
        for answer_later in (False, True):
            for chunks in ways:
                expected = _run(http.HTTPChannel, TwistedRecording, chunks, answer_later)
                got = _run(LeanChannel, LeanRecording, chunks, answer_later)
                self.assertEqual(got, expected, (name, answer_later, [len(c) for c in chunks]))

    def test_every_case_matches_twisted_at_every_cut(self) -> None:
        for name, stream in CASES.items():
            self._compare(name, stream)

    def test_the_cases_reach_both_outcomes(self) -> None:
        """The cases are worth comparing: good ones are answered, bad ones get 400."""
        seen, written, closed = _run(LeanChannel, LeanRecording, [CASES["pipelined gets, head and queries"]],
                                     False)
        self.assertEqual(len(seen), 4)
        self.assertFalse(closed)
        self.assertEqual(seen[2][6], [(b"", [b"d"]), (b"a", [b"1", b"2"]), (b"b", [b"  x"]),
                                      (b"e", [b""]), (b"f", [b"%zz"])])
        self.assertEqual(dict(seen[1][4])[b"X-Many"], [b"1", b"2"])
        for bad in ("header line without colon", "nul in a value", "too many headers",
                    "two lengths", "unknown version", "head too large"):
            seen, written, closed = _run(LeanChannel, LeanRecording, [CASES[bad]], False)
            self.assertTrue(closed, bad)
            self.assertTrue(written.endswith(b"HTTP/1.1 400 Bad Request\r\n\r\n"), (bad, written[-60:]))
        # A line past LineReceiver.MAX_LENGTH: closed without an answer.
        self.assertEqual(_run(LeanChannel, LeanRecording, [CASES["line too long"]], False),
                         ([], b"", True))

    def test_only_form_bodies_have_their_content_type_parsed(self) -> None:
        """Twisted parses a POST's content type with the email package (an EmailMessage per
        request, and its modules imported by the first): only a form's is parsed here, and
        the forms' arguments are still read (compared with Twisted's above)."""
        parsed: list[bytes] = []
        real = http._parseContentType

        def recording(line: bytes) -> bytes:
            parsed.append(line)
            return real(line)

        self.patch(http, "_parseContentType", recording)
        seen, _written, _closed = _run(LeanChannel, LeanRecording, [CASES["a json post"]], False)
        self.assertEqual((len(seen), parsed), (2, []))
        seen, _written, _closed = _run(LeanChannel, LeanRecording, [CASES["a multipart form"]],
                                       False)
        self.assertEqual(seen[0][6], [(b"a", [b"one"]), (b"b", [b"two"])])
        self.assertEqual(len(parsed), 1)

    def test_a_continued_line_is_folded_as_twisted_folds_it(self) -> None:
        seen, _written, closed = _run(LeanChannel, LeanRecording, [CASES["continued header line"]],
                                      False)
        self.assertEqual(dict(seen[0][4])[b"X-Folded"], [b"a b c"])
        self.assertEqual((len(seen), closed), (2, False))

    def test_a_whole_head_is_read_in_one_pass(self) -> None:
        """The comparisons above would pass if every head went line by line; this one shows
        whole heads do not."""
        lines: list[bytes] = []

        class Counting(LeanChannel):
            def lineReceived(self, line: bytes) -> None:
                lines.append(line)
                super().lineReceived(line)

        _run(Counting, LeanRecording, [GET * 3], False)
        self.assertEqual(lines, [])
        _run(Counting, LeanRecording, [GET[:20], GET[20:]], False)
        self.assertEqual(lines, [])  # no line was whole after the first read
        cut = GET.index(b"Host")
        _run(Counting, LeanRecording, [GET[:cut], GET[cut:]], False)
        self.assertEqual(len(lines), 5)  # the request line came alone: Twisted's way


def _idle_timeline(channel_class: type, request_class: type) -> list[tuple[float, bool, int]]:
    """A connection with a 10 s idle timeout through a long request and the idle time after
    it: when it was closed, and how many answers it had written by then."""
    clock = Clock()
    channel = channel_class()
    channel.requestFactory = request_class
    channel.site = server.Site(Resource())
    channel.seen, channel.pending, channel.answer_later = [], [], True
    channel.callLater = clock.callLater
    channel.timeOut = 10
    transport = StringTransport()
    channel.makeConnection(transport)
    timeline = []

    def step(seconds: float) -> None:
        clock.advance(seconds)
        timeline.append((clock.seconds(), transport.disconnecting, transport.value().count(b"HTTP/1.1 200")))

    step(6)
    channel.dataReceived(GET)  # idle for 6 s, then a request handled for 25 s
    for _ in range(5):
        step(5)
    _answer(channel.pending.pop(0))
    step(9)  # 9 s idle after the answer: still open
    channel.dataReceived(GET[:10])  # a partial request resets the idle time
    step(9)
    step(2)  # 11 s since the last bytes: closed
    channel.connectionLost(Exception("done"))
    return timeline


class IdleTimeoutTests(TestCase):
    def test_the_same_timeline_as_twisted(self) -> None:
        expected = _idle_timeline(http.HTTPChannel, TwistedRecording)
        self.assertEqual(_idle_timeline(LeanChannel, LeanRecording), expected)
        self.assertEqual([closed for _, closed, _ in expected], [False] * 8 + [True])
        self.assertEqual(expected[-1][2], 1)


class RequestLineTests(TestCase):
    def test_the_same_lines_as_twisted(self) -> None:
        lines = [b"GET / HTTP/1.1", b"GET / HTTP/1.0", b"PUT /a?b=c HTTP/1.1", b"GET  / HTTP/1.1",
                 b"GET / HTTP/1.2", b"GET / http/1.1", b" GET / HTTP/1.1", b"GET /", b"",
                 b"G@T / HTTP/1.1", b"GET /\x7f HTTP/1.1", b"GET /\xb0 HTTP/1.1",
                 b"GET /\xb1 HTTP/1.1", b"GET /\x20 HTTP/1.1", b"~!#$%&'*+-.^_`| / HTTP/1.1"]
        rng = random.Random(7)
        lines += [bytes(rng.choice(b"GET /\x00\x7f\xb0\xb1 aHTP1.0?") for _ in range(12))
                  for _ in range(2000)]
        for line in lines:
            try:
                expected: Any = http._parseRequestLine(line)
            except ValueError:
                expected = None
            self.assertEqual(parse_request_line(line), expected, line)


class QueryTests(TestCase):
    def test_the_same_arguments_as_twisted(self) -> None:
        queries = [b"", b"a", b"a=", b"=", b"a=1&a=2", b"a=1;b=2&c=3", b"a+b=c+d", b"%41=%42",
                   b"a=%zz", b"a=%4", b"&&", b";;=;", b"x=%2B+%2b", b"k==v", b"a=1&"]
        rng = random.Random(11)
        queries += [bytes(rng.choice(b"ab=&;+%24z") for _ in range(rng.randrange(16)))
                    for _ in range(3000)]
        for query in queries:
            self.assertEqual(parse_query(query), http.parse_qs(query, 1), query)


class HeaderBlockTests(TestCase):
    """Header lines parsed once per block (`_parsed_blocks`): each request still gets the
    headers its own head holds, in a dict of its own, whatever came before."""

    def test_each_request_gets_its_own_headers(self) -> None:
        import roost.http.channel as channel_module

        heads = [
            b"GET /a?since=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer one\r\n\r\n",
            b"GET /a?since=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer one\r\n\r\n",
            b"GET /a?since=3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer two\r\n\r\n",
            b"GET /b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer one\r\nX-A: 1\r\n\r\n",
            b"GET /c HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer one\r\n\r\n",
            b"GET /d HTTP/1.1\r\n\r\n",
            b"GET /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
            b"GET /f HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nho",
            b"GET /g HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
            b"GET /h HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
        ]
        stream = b"".join(heads)
        channel_module._parsed_blocks.clear()
        for chunks in ([stream], [stream], [h for h in heads]):
            lean = _run(LeanChannel, LeanRecording, chunks, False)
            plain = _run(http.HTTPChannel, TwistedRecording, chunks, False)
            self.assertEqual(lean, plain)
        self.assertTrue(channel_module._parsed_blocks)  # the blocks were kept and reused

    def test_a_request_s_headers_are_its_own(self) -> None:
        channel = LeanChannel()
        channel.requestFactory = LeanRecording
        channel.site = server.Site(Resource())
        channel.seen, channel.pending, channel.answer_later = [], [], True
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 4000),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 8008))
        channel.makeConnection(transport)
        head = b"GET /a HTTP/1.1\r\nHost: x\r\nExpect: nothing\r\n\r\n"
        channel.dataReceived(head)
        first = channel.pending.pop()
        first.requestHeaders.removeHeader(b"Expect")
        first.requestHeaders.addRawHeader(b"Host", b"changed")
        _answer(first)
        channel.dataReceived(head)
        second = channel.pending.pop()
        self.assertEqual(second.requestHeaders.getRawHeaders(b"Host"), [b"x"])
        self.assertEqual(second.requestHeaders.getRawHeaders(b"Expect"), [b"nothing"])
        _answer(second)
        channel.connectionLost(None)
