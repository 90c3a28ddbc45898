"""contrib/nginx/roost-workers.conf sends a room's writes straight to the room's writer:
Debian's nginx, running the shipped file, picks for `PUT .../rooms/{id}/send/...` the
same writer as Roost's room map (roles.writer_of_room) when the writers' upstream lists
them in `workers.event_writers` order. Each upstream server here is a recording HTTP
server on loopback, so the test sees exactly where nginx sent every request and with
which path."""

from __future__ import annotations

import os
import secrets
from urllib.parse import quote

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from roost.homeserver.roles import writer_of_room
from tests.cluster_harness import free_port
from tests.contrib.test_nginx import NGINX, run_nginx, write_test_ca
from tests.contrib.test_nginx_workers import SITE, Through

WRITERS = ["writer1", "writer2", "writer3"]
READERS = ["reader1", "reader2"]


class _Recorder(Resource):
    """Answers every request with `{}` and remembers (server, method, raw path)."""

    isLeaf = True

    def __init__(self, name: str, seen: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self._name = name
        self._seen = seen

    def render(self, request: Request) -> bytes:
        self._seen.append((self._name, request.method.decode(), request.uri.decode()))
        request.setHeader(b"content-type", b"application/json")
        return b"{}"


def render_site(port: int, federation_port: int, ports: dict[str, int], cert: str,
                key: str) -> str:
    """The shipped file with the listen lines, certificates and upstream servers replaced;
    the writers' upstream gets one line per writer, in WRITERS order."""
    with open(SITE, encoding="utf-8") as f:
        text = f.read()
    writers = " ".join(f"server 127.0.0.1:{ports[w]};" for w in WRITERS)
    for old, new, count in [
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;", 1),
        ("listen 8448 ssl http2;", f"listen 127.0.0.1:{federation_port} ssl http2;", 1),
        ("server 127.0.0.1:8101;", f"server 127.0.0.1:{ports['reader1']};", 2),
        ("server 127.0.0.1:8102;", f"server 127.0.0.1:{ports['reader2']};", 2),
        ("server 127.0.0.1:8103;", f"server 127.0.0.1:{ports['media']};", 1),
        ("server 127.0.0.1:8104;", writers, 1),
        ("server 127.0.0.1:8449;", f"server 127.0.0.1:{ports['fed']};", 1),
        ("server 127.0.0.1:8450;", f"server 127.0.0.1:{ports['fed']};", 1),
    ]:
        assert text.count(old) == count, f"roost-workers.conf no longer has {old!r} {count}x"
        text = text.replace(old, new)
    text = text.replace("/etc/letsencrypt/live/example.org/fullchain.pem", cert)
    text = text.replace("/etc/letsencrypt/live/example.org/privkey.pem", key)
    return text.replace("example.org", "localhost")


class WriterRoutingTests(TestCase):
    timeout = 60

    async def _start(self) -> tuple[Through, list[tuple[str, str, str]]]:
        if not os.path.exists(NGINX):
            raise SkipTest("nginx is not installed (.ci/run installs Debian's nginx-light)")
        seen: list[tuple[str, str, str]] = []
        ports: dict[str, int] = {}
        for name in [*WRITERS, *READERS, "media", "fed"]:
            listening = reactor.listenTCP(0, Site(_Recorder(name, seen)), interface="127.0.0.1")
            self.addCleanup(listening.stopListening)
            ports[name] = listening.getHost().port
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        ca, cert, key = write_test_ca(folder)
        port, federation_port = free_port(), free_port()
        site = os.path.join(folder, "roost-workers.conf")
        with open(site, "w", encoding="utf-8") as f:
            f.write(render_site(port, federation_port, ports, cert, key))
        await run_nginx(self, folder, site, [port, federation_port], 256)
        return Through(f"https://localhost:{port}", ca), seen

    async def test_room_writes_reach_the_rooms_writer(self) -> None:
        c, seen = await self._start()
        # Room ids of both shapes: `!opaque:server` (v1-v11) and v12's `!` + hash.
        rooms = [f"!{secrets.token_urlsafe(18)}:example.org" for _ in range(30)]
        rooms += [f"!{secrets.token_urlsafe(32)}" for _ in range(30)]
        writes = [("PUT", "send/m.room.message/t{i}", {"body": "x"}),
                  ("PUT", "state/m.room.topic/", {"topic": "t"}),
                  ("PUT", "redact/$e{i}/t{i}", {}),
                  ("POST", "join", {}), ("POST", "invite", {"user_id": "@u:localhost"}),
                  ("POST", "leave", {}), ("POST", "kick", {"user_id": "@u:localhost"}),
                  ("POST", "ban", {"user_id": "@u:localhost"}), ("POST", "unban", {})]
        for i, room in enumerate(rooms):
            method, tail, body = writes[i % len(writes)]
            path = f"/_matrix/client/v3/rooms/{quote(room)}/{tail.format(i=i)}"
            before = len(seen)
            await c.ok(method, path, body, token="t")
            self.assertEqual(len(seen), before + 1)
            # The room's writer, with the path exactly as the client sent it.
            self.assertEqual(seen[-1], (writer_of_room(room, WRITERS), method, path))
        self.assertEqual({s[0] for s in seen}, set(WRITERS))  # every writer had rooms

    async def test_reads_and_other_requests_stay_off_the_writers(self) -> None:
        c, seen = await self._start()
        room = quote("!abc:example.org")
        for method, path in [
            ("GET", f"/_matrix/client/v3/rooms/{room}/state"),
            ("GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            ("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b"),
            ("GET", "/_matrix/client/v3/sync"),
            ("POST", f"/_matrix/client/v3/rooms/{room}/receipt/m.read/$e"),
            ("PUT", f"/_matrix/client/v3/rooms/{room}/typing/@u:localhost"),
            ("POST", "/_matrix/client/v3/createRoom"),
            ("POST", f"/_matrix/client/v3/join/{room}"),
            # Not a write path of the room, only a similar prefix.
            ("GET", f"/_matrix/client/v3/rooms/{room}/sendfoo"),
        ]:
            await c.ok(method, path, {} if method != "GET" else None, token="t")
            self.assertIn(seen[-1][0], READERS, (method, path))
