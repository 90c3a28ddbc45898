"""JSON answers written in one go (roost.http.answers) stay correct HTTP/1.1: keep-alive
and pipelining, HEAD, HTTP/1.0, Connection: close, Content-Length, Date, Server and CORS
on every answer, errors included; headers given as text cannot inject lines. Request
headers stored once (roost.http.channel) are still checked as Twisted checks them."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from twisted.internet import reactor, threads
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyChannel

from roost.http.answers import FastRequest, encode_headers, write_now
from roost.http.bodies import write_json
from roost.http.limits import LimitedSite
from tests.server_harness import start_server

VERSIONS = b"/_matrix/client/versions"


def _talk(port: int, data: bytes, answers: int) -> tuple[list[tuple[bytes, dict[bytes, bytes], bytes]], bool]:
    """Send `data`, read `answers` answers by their Content-Length; then whether the server
    closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        buffer = b""
        parsed = []
        while len(parsed) < answers:
            while b"\r\n\r\n" not in buffer:
                got = s.recv(65536)
                assert got, f"closed after {len(parsed)} answers: {buffer!r}"
                buffer += got
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            status, *lines = head.split(b"\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(b": ")
                headers[name.lower()] = value
            length = int(headers[b"content-length"])
            body_length = 0 if b"HEAD" in data.split(b"\r\n\r\n")[len(parsed)][:5] else length
            while len(buffer) < body_length:
                got = s.recv(65536)
                assert got, "closed in the middle of a body"
                buffer += got
            parsed.append((status, headers, buffer[:body_length]))
            buffer = buffer[body_length:]
        s.settimeout(2)
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False
    return parsed, closed


class AnswerTests(TestCase):
    async def _port(self) -> int:
        server = await start_server(self)
        return int(server.base_url.rsplit(":", 1)[1])

    async def test_keep_alive_pipelining_and_head(self) -> None:
        port = await self._port()
        get = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % VERSIONS
        head = b"HEAD %s HTTP/1.1\r\nHost: x\r\n\r\n" % VERSIONS
        missing = b"GET /_matrix/client/v3/nothing/here HTTP/1.1\r\nHost: x\r\n\r\n"
        answers, closed = await threads.deferToThread(
            _talk, port, get + head + missing + get, 4)
        self.assertFalse(closed)  # HTTP/1.1: kept alive
        (s1, h1, b1), (s2, h2, b2), (s3, h3, b3), (s4, _h4, b4) = answers
        self.assertEqual((s1, s2, s3, s4), (b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK",
                                            b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"))
        self.assertIn("versions", json.loads(b1))
        self.assertEqual(b4, b1)
        self.assertEqual(b2, b"")  # HEAD: no body, the GET's length
        self.assertEqual(h2[b"content-length"], b"%d" % len(b1))
        self.assertEqual(json.loads(b3)["errcode"], "M_UNRECOGNIZED")
        for headers in (h1, h2, h3):
            self.assertEqual(headers[b"content-type"], b"application/json")
            self.assertEqual(headers[b"access-control-allow-origin"], b"*")
            self.assertIn(b"OPTIONS", headers[b"access-control-allow-methods"])
            self.assertIn(b"Authorization", headers[b"access-control-allow-headers"])
            self.assertTrue(headers[b"date"].endswith(b" GMT"))
            self.assertIn(b"server", headers)

    async def test_connection_close_and_http_1_0(self) -> None:
        port = await self._port()
        for request, status in (
                (b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"HTTP/1.1 200 OK"),
                (b"GET %s HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK")):
            answers, closed = await threads.deferToThread(_talk, port, request % VERSIONS, 1)
            self.assertEqual(answers[0][0], status)
            self.assertTrue(closed)
            if status.startswith(b"HTTP/1.1"):
                self.assertEqual(answers[0][1][b"connection"], b"close")
        # Twisted keeps no HTTP/1.0 connection alive, asked or not: the answer still ends.
        answers, closed = await threads.deferToThread(
            _talk, port, b"GET %s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % VERSIONS, 1)
        self.assertEqual(answers[0][0], b"HTTP/1.0 200 OK")
        self.assertTrue(closed)


def _until_closed(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        received = b""
        while got := s.recv(65536):
            received += got
        return received


class RequestHeaderTests(TestCase):
    async def test_headers_are_checked_canonicalised_and_kept(self) -> None:
        server = await start_server(self)
        port = int(server.base_url.rsplit(":", 1)[1])
        token = (await server.register("alice"))["access_token"]
        whoami = b"GET /_matrix/client/v3/account/whoami HTTP/1.1\r\nHost: x\r\n"
        # Any capitalisation of a name, and the value's surrounding blanks dropped.
        answers, _ = await threads.deferToThread(
            _talk, port, whoami + b"aUtHoRiZaTiOn: \t Bearer %s \r\n\r\n" % token.encode(), 1)
        self.assertEqual(json.loads(answers[0][2])["user_id"], "@alice:" + server.hs.config.server_name)
        # Bodies by Content-Length and chunked still arrive whole.
        body = b'{"type": "m.login.password", "user": "alice", "password": "wrong"}'
        login = b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n"
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        answers, _ = await threads.deferToThread(_talk, port, (
            login + b"Content-Length: %d\r\n\r\n" % len(body) + body
            + login + b"Transfer-Encoding: chunked\r\n\r\n" + chunked), 2)
        for status, _headers, answer in answers:
            self.assertEqual((status, json.loads(answer)["errcode"]),
                             (b"HTTP/1.1 403 Forbidden", "M_FORBIDDEN"))
        # Malformed lines, NUL in a value, bad names, too many headers: 400 and closed.
        for bad in (b"NoColonHere\r\n", b"X-A: a\x00b\r\n", b"Bad Name: x\r\n",
                    b"".join(b"X-%d: v\r\n" % n for n in range(600))):
            answer = await threads.deferToThread(
                _until_closed, port, b"GET /_matrix/client/versions HTTP/1.1\r\n" + bad + b"\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:80])


class HeaderTests(TestCase):
    def test_text_headers_cannot_inject_lines(self) -> None:
        self.assertEqual(encode_headers({"Retry-After": "3"}), b"Retry-After: 3\r\n")
        self.assertEqual(encode_headers({"X-A": "1\r\nSet-Cookie: x", "X\nB": "2"}), b"")

    def test_an_answer_after_the_client_went_writes_nothing(self) -> None:
        channel = DummyChannel()
        request = FastRequest(channel)
        request.method, request.clientproto = b"GET", b"HTTP/1.1"
        request.connectionLost(Exception("gone"))
        write_json(request, 200, {"a": 1})
        self.assertEqual(channel.transport.written.getvalue(), b"")

    def test_when_lost_is_not_called_nor_kept_once_answered(self) -> None:
        """A connection lost after the answer (a queued request's, here) calls no
        `when_lost` callback, and the request holds none (a waiting long poll's callback
        holds the request: a cycle left to the collector otherwise)."""
        channel = DummyChannel()
        request = FastRequest(channel, queued=True)
        request.method, request.clientproto = b"GET", b"HTTP/1.1"
        called: list[bool] = []
        request.when_lost(lambda: called.append(True))
        write_json(request, 200, {"a": 1})
        self.assertIn(b'{"a":1}', channel.transport.written.getvalue())
        self.assertIsNone(request._on_lost)
        request.connectionLost(Exception("gone"))
        self.assertEqual(called, [])


class _Sized(Resource):
    """Answers GET /<n> with n bytes (a pattern that shows misplaced bytes) through
    FastRequest.answer."""

    isLeaf = True

    def render_GET(self, request: Any) -> Any:
        size = int(request.path[1:])
        request.answer(200, b"Content-Type: application/octet-stream\r\n", _pattern(size))
        return NOT_DONE_YET


def _pattern(size: int) -> bytes:
    return (b"%d:" % size + b"0123456789abcdef" * (size // 16 + 1))[:size]


def _read_after_a_while(port: int, data: bytes, sizes: list[int]) -> list[bytes]:
    """Send pipelined requests, wait (the server's socket buffer fills), then read the
    answers in order."""
    with socket.socket() as s:
        # A small window (set before connecting), so the first answer does not fit.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(30)
        s.connect(("127.0.0.1", port))
        s.sendall(data)
        time.sleep(0.5)
        received = b""
        bodies = []
        for size in sizes:
            while b"\r\n\r\n" not in received:
                received += s.recv(65536)
            head, _, received = received.partition(b"\r\n\r\n")
            assert b"Content-Length: %d" % size in head.split(b"\r\n"), head
            while len(received) < size:
                got = s.recv(65536)
                assert got, "closed in the middle of a body"
                received += got
            bodies.append(received[:size])
            received = received[size:]
    return bodies


class WriteNowTests(TestCase):
    async def test_answers_larger_than_the_socket_takes_stay_whole_and_in_order(self) -> None:
        """An answer is sent at once when nothing waits before it (roost.http.answers
        write_now); what the socket does not take is queued, and the next answer behind
        it."""
        port = reactor.listenTCP(0, LimitedSite(_Sized()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        sizes = [1_000_000, 20, 600_000, 5]
        data = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % size for size in sizes)
        bodies = await threads.deferToThread(_read_after_a_while, port.getHost().port, data, sizes)
        self.assertEqual(bodies, [_pattern(size) for size in sizes])

    def test_a_transport_with_data_waiting_gets_the_rest_in_order(self) -> None:
        transport = StringTransport()
        write_now(transport, b"first")  # not a TCP transport: its own write
        write_now(transport, b"second")
        self.assertEqual(transport.value(), b"firstsecond")
