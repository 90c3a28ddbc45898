"""Bodies over the limit get 413 M_TOO_LARGE, early, on every endpoint: never a reset.

A real client sends its whole body before reading the answer; these tests do
the same over a plain socket (in a thread), so a server that cut the
connection instead of answering would fail them with a reset or a short read.
"""

from __future__ import annotations

import json
import socket

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.server_harness import start_server

MIB = 1024 * 1024


def _exchange(port: int, head: bytes, body_chunks: int, chunk: bytes = b"x" * MIB,
              chunked: bool = False, wait_for_answer_first: bool = False) -> bytes:
    """Send `head`, then the body (unless the server has answered by then when
    `wait_for_answer_first`), then read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head)
        if wait_for_answer_first:
            s.settimeout(5)
            first = s.recv(65536)
            if first:
                return first + _read_all(s)
        for _ in range(body_chunks):
            s.sendall((b"%x\r\n" % len(chunk) + chunk + b"\r\n") if chunked else chunk)
        if chunked:
            s.sendall(b"0\r\n\r\n")
        return _read_all(s)


def _tls_exchange(port: int, head: bytes, body_chunks: int) -> bytes:
    """`_exchange` over TLS (the federation listener), certificates not checked."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(head)
        chunk = b"x" * MIB
        for _ in range(body_chunks):
            s.sendall(chunk)
        data = b""
        while True:
            try:
                got = s.recv(65536)
            except ssl.SSLEOFError:
                return data
            if not got:
                return data
            data += got


def _read_all(s: socket.socket) -> bytes:
    data = b""
    while True:
        got = s.recv(65536)
        if not got:
            return data
        data += got


def _status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


class BodyLimitTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.addCleanup(lambda: defer.ensureDeferred(_server_connections_closed()))

    async def test_a_50_mib_json_body_gets_413_not_a_reset(self) -> None:
        server = await start_server(self)  # the default 10 MiB limit for JSON bodies
        port = server.port.getHost().port
        head = (b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (50 * MIB))
        raw = await threads.deferToThread(_exchange, port, head, 50)
        status, body = _status_and_body(raw)
        self.assertEqual((status, body["errcode"]), (413, "M_TOO_LARGE"))

    async def test_expect_continue_gets_413_before_any_body_is_sent(self) -> None:
        server = await start_server(self)
        port = server.port.getHost().port
        head = (b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (50 * MIB))
        raw = await threads.deferToThread(_exchange, port, head, 0, wait_for_answer_first=True)
        self.assertNotIn(b"100 Continue", raw)
        status, body = _status_and_body(raw)
        self.assertEqual((status, body["errcode"]), (413, "M_TOO_LARGE"))

    async def test_chunked_upload_passing_max_upload_size_gets_413_and_stores_nothing(self) -> None:
        server = await start_server(self, media={"max_upload_size": 3 * MIB})
        token = (await server.register("alice"))["access_token"]
        port = server.port.getHost().port
        head = (b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer %s\r\nContent-Type: application/octet-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" % token.encode())
        raw = await threads.deferToThread(_exchange, port, head, 8, chunked=True)
        status, body = _status_and_body(raw)
        self.assertEqual((status, body["errcode"]), (413, "M_TOO_LARGE"))
        self.assertEqual(await _media_rows(server), 0)

    async def test_upload_paths_take_bodies_larger_than_the_json_limit(self) -> None:
        server = await start_server(self, listeners={"client": {"bind_address": "127.0.0.1",
                                                                "port": 0, "max_body_bytes": MIB}})
        token = (await server.register("alice"))["access_token"]
        data = b"y" * (3 * MIB)
        resp = await server.request("POST", "/_matrix/media/v3/upload", raw=data, token=token,
                                    headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(resp.status, 200, resp.body)
        big = await server.request("PUT", "/_matrix/client/v3/profile/x/displayname", raw=data,
                                   token=token)
        self.assertEqual((big.status, big.body["errcode"]), (413, "M_TOO_LARGE"))

    async def test_declared_length_over_max_upload_size_is_refused_at_once(self) -> None:
        server = await start_server(self, media={"max_upload_size": MIB})
        token = (await server.register("alice"))["access_token"]
        resp = await server.request("POST", "/_matrix/media/v3/upload", raw=b"z" * (2 * MIB),
                                    token=token, headers={"Content-Type": "image/png"})
        self.assertEqual((resp.status, resp.body["errcode"]), (413, "M_TOO_LARGE"))
        self.assertEqual(await _media_rows(server), 0)

    async def test_truncated_upload_stores_nothing(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        port = server.port.getHost().port
        head = (b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer %s\r\nContent-Type: image/png\r\n"
                b"Content-Length: %d\r\n\r\n" % (token.encode(), 4 * MIB))

        def send_half() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(head + b"q" * (2 * MIB))

        await threads.deferToThread(send_half)
        # The next request on the server is served after the connection's loss was seen.
        await server.request("GET", "/_matrix/client/versions")
        self.assertEqual(await _media_rows(server), 0)
        import os

        root = os.path.join(server.hs.config.path(server.hs.config.data_dir), "media")
        stored = [f for d, _s, files in os.walk(root) for f in files]
        self.assertEqual(stored, [])


async def _server_connections_closed() -> None:
    """Wait until the server side has seen every test connection end (it reads the
    rest of a refused body before it closes)."""
    from twisted.internet import reactor

    from tests.federation.two_servers import eventually

    async def closed() -> bool:
        return not [r for r in reactor.getReaders() if "HTTPChannel" in type(r).__name__
                    or "HTTPChannel" in type(getattr(r, "protocol", None)).__name__]

    await eventually(closed, timeout_s=30)


async def _media_rows(server) -> int:  # type: ignore[no-untyped-def]
    row = await server.hs.db.run("count", lambda t: t.query_one("SELECT count(*) FROM media"))
    return row[0]


class FederationBodyLimitTests(TestCase):
    timeout = 120

    async def test_a_50_mib_body_to_the_federation_listener_gets_413_not_a_reset(self) -> None:
        from tests.federation.two_servers import start_node

        node = await start_node(self)
        head = (b"PUT /_matrix/federation/v1/send/t1 HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (50 * MIB))
        raw = await threads.deferToThread(_tls_exchange, node.port, head, 50)
        status, body = _status_and_body(raw)
        self.assertEqual((status, body["errcode"]), (413, "M_TOO_LARGE"))
