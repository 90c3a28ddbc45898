"""contrib/nginx/roost-workers.conf, as shipped, in front of several real Roost processes
(one event writer that also serves media, two client readers, one federation inbound and
sender) on one PostgreSQL and one Redis: client flows through nginx, a /sync long-poll
and a WebSocket on one reader woken by a send made through another process (sends go
straight to the room's writer), /messages, media, and federation with a real Synapse
through nginx's federation port."""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import quote

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, connectWS
from twisted.internet import defer, reactor, ssl, threads
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from roost.homeserver.roles import writer_of_room
from tests.client_api.test_websocket import _Client
from tests.cluster_harness import Cluster, free_port, start_cluster
from tests.contrib.test_nginx import NGINX, REPO, run_nginx, write_test_ca

SITE = os.path.join(REPO, "contrib", "nginx", "roost-workers.conf")
LAYOUT = {
    "writer1": ["event_writer", "client", "pusher", "appservice", "background", "media"],
    "reader1": ["client"],
    "reader2": ["client"],
    "fed1": ["federation_inbound", "federation_sender"],
}
WAIT_S = 30


def render_site(client_port: int, federation_port: int, cluster: Cluster, cert: str,
                key: str, writers: tuple[str, ...] = ("writer1",),
                readers: tuple[str, str] = ("reader1", "reader2")) -> str:
    """The shipped file with only the operator's own values changed, each exactly once;
    the writers' upstream lists `writers` (workers.event_writers' order)."""
    with open(SITE, encoding="utf-8") as f:
        text = f.read()
    i = cluster.instances
    for old, new in [
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{client_port} ssl http2;"),
        ("listen 8448 ssl http2;", f"listen 127.0.0.1:{federation_port} ssl http2;"),
        ("server 127.0.0.1:8103;", f"server 127.0.0.1:{i['writer1'].client_port};"),
        ("server 127.0.0.1:8104;", " ".join(f"server 127.0.0.1:{i[w].client_port};"
                                             for w in writers)),
        ("server 127.0.0.1:8449;", f"server 127.0.0.1:{i['fed1'].federation_port};"),
        ("server 127.0.0.1:8450;", f"server 127.0.0.1:{i['writer1'].federation_port};"),
    ]:
        assert text.count(old) == 1, f"roost-workers.conf no longer has {old!r} once"
        text = text.replace(old, new)
    for old, new in [("server 127.0.0.1:8101;", f"server 127.0.0.1:{i[readers[0]].client_port};"),
                     ("server 127.0.0.1:8102;", f"server 127.0.0.1:{i[readers[1]].client_port};")]:
        assert text.count(old) == 2, f"roost-workers.conf no longer has {old!r} twice"
        text = text.replace(old, new)
    text = text.replace("/etc/letsencrypt/live/example.org/fullchain.pem", cert)
    text = text.replace("/etc/letsencrypt/live/example.org/privkey.pem", key)
    return text.replace("example.org", "localhost")


class Through:
    """A client of the cluster through nginx's TLS client port."""

    def __init__(self, base: str, ca: str) -> None:
        with open(ca, "rb") as f:
            self.trust = ssl.Certificate.loadPEM(f.read())
        self.base = base
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = treq.client.HTTPClient(Agent(
            reactor, BrowserLikePolicyForHTTPS(trustRoot=self.trust), pool=self.pool))

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None,
                   raw: bytes | None = None, content_type: str = "application/json"
                   ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        response = await self.http.request(method, self.base + path, data=data,
                                           headers=headers)
        content = await response.content()
        try:
            return response.code, json.loads(content)
        except ValueError:
            return response.code, content

    async def ok(self, method: str, path: str, body: Any = None, token: str | None = None
                 ) -> Any:
        code, answer = await self.call(method, path, body, token)
        assert code == 200, (method, path, code, answer)
        return answer

    async def register(self, name: str) -> dict[str, Any]:
        return await self.ok("POST", "/_matrix/client/v3/register", {
            "username": name, "password": f"pw-{name}-long", "auth": {"type": "m.login.dummy"}})


class NginxWorkersTests(TestCase):
    timeout = 240

    async def _start(self, layout: dict[str, list[str]] = LAYOUT,
                     **site: Any) -> tuple[Cluster, Through, str, int]:
        if not os.path.exists(NGINX):
            raise SkipTest("nginx is not installed (.ci/run installs Debian's nginx-light)")
        client_port, federation_port = free_port(), free_port()
        cluster = await start_cluster(self, layout, federation_port=federation_port)
        folder = os.path.join(cluster.folder, "nginx")
        os.makedirs(folder)
        ca, cert, key = write_test_ca(folder)
        path = os.path.join(folder, "roost-workers.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(render_site(client_port, federation_port, cluster, cert, key, **site))
        await run_nginx(self, folder, path, [client_port, federation_port], 512)
        return cluster, Through(f"https://localhost:{client_port}", ca), ca, federation_port

    async def test_clients_through_nginx_across_processes(self) -> None:
        cluster, c, ca, _fed = await self._start()
        alice, bob = await c.register("alice"), await c.register("bob")
        a, b = alice["access_token"], bob["access_token"]
        room = (await c.ok("POST", "/_matrix/client/v3/createRoom",
                           {"preset": "public_chat"}, a))["room_id"]
        await c.ok("POST", f"/_matrix/client/v3/rooms/{quote(room)}/join", {}, b)
        # bob's reader may not be the process that took his join: it sees the join once
        # the writer's position reaches it over Redis (milliseconds), not before.
        for _ in range(100):
            first = await c.ok("GET", "/_matrix/client/v3/sync", token=b)
            if room in first["rooms"]["join"]:
                break
            await _sleep(0.1)
        self.assertIn(room, first["rooms"]["join"])

        # bob's long-poll waits on his reader; alice's send goes to the room's writer;
        # bob's reader hears of it over Redis and answers.
        waiting = defer.ensureDeferred(c.call(
            "GET", f"/_matrix/client/v3/sync?timeout=20000&since={first['next_batch']}",
            token=b))
        await c.ok("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/t1",
                   {"msgtype": "m.text", "body": "across processes"}, a)
        code, woken = await waiting
        self.assertEqual(code, 200, woken)
        timeline = woken["rooms"]["join"][room]["timeline"]["events"]
        self.assertIn("across processes", [e["content"].get("body") for e in timeline])

        # The WebSocket, upgraded with bob's token: his reader pushes alice's next message.
        factory = WebSocketClientFactory(
            f"wss://localhost:{c.base.rsplit(':', 1)[1]}/_roost/ws",
            headers={"Authorization": f"Bearer {b}"})
        factory.protocol = _Client
        factory.opened, factory.closed = defer.Deferred(), defer.Deferred()
        factory.frames, factory.pings = defer.DeferredQueue(), 0
        connector = connectWS(factory, ssl.optionsForClientTLS("localhost", c.trust))
        self.addCleanup(connector.disconnect)
        socket_ = await factory.opened.addTimeout(WAIT_S, reactor)
        ready = await factory.frames.get().addTimeout(WAIT_S, reactor)
        self.assertEqual(ready["type"], "ready", ready)
        socket_.sendMessage(json.dumps({"op": "sync", "since": woken["next_batch"]}).encode())
        await c.ok("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/t2",
                   {"msgtype": "m.text", "body": "to the socket"}, a)
        while True:
            frame = await factory.frames.get().addTimeout(WAIT_S, reactor)
            if "to the socket" in json.dumps(frame):
                break
        socket_.sendClose(1000)

        page = await c.ok("GET", f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b"
                          "&limit=5", token=b)
        bodies = [e["content"].get("body") for e in page["chunk"]]
        self.assertEqual(bodies[:2], ["to the socket", "across processes"])

        # Media goes to the media process; the download comes back through nginx.
        code, uploaded = await c.call("POST", "/_matrix/media/v3/upload?filename=a.txt",
                                      raw=b"hello media", token=a, content_type="text/plain")
        self.assertEqual(code, 200, uploaded)
        mxc = uploaded["content_uri"].removeprefix("mxc://")
        code, content = await c.call("GET", f"/_matrix/client/v1/media/download/{mxc}",
                                     token=b)
        self.assertEqual((code, content), (200, b"hello media"))
        # Every /sync of bob's (one token) went to one reader: routing by access token.
        synced = [r for r in ("reader1", "reader2")
                  if any("/sync" in line and line.endswith(bob["user_id"])
                         for line in cluster.log(r).splitlines())]
        self.assertEqual(len(synced), 1, synced)
        await _logged(cluster, "writer1", "/upload")
        for reader in ("reader1", "reader2"):
            self.assertNotIn("/upload", cluster.log(reader))
        # alice's sends went straight to the room's writer, not through a reader.
        sent = f"PUT /_matrix/client/v3/rooms/{quote(room)}/send/"
        await _logged(cluster, "writer1", sent, times=2)
        for reader in ("reader1", "reader2"):
            self.assertNotIn(sent, cluster.log(reader))

    async def test_federation_with_synapse_through_nginx(self) -> None:
        from tests.federation.synapse_harness import start_synapse

        cluster, c, _ca, _fed = await self._start()
        synapse = await start_synapse(self)
        bob = await c.register("bob")
        alice, token = await threads.deferToThread(synapse.register, "alice")
        status, created = await threads.deferToThread(
            synapse.client, "POST", "/_matrix/client/v3/createRoom",
            {"preset": "public_chat", "name": "Mixed"}, token)
        self.assertEqual(status, 200, created)
        room = created["room_id"]
        # Roost's join: make_join/send_join from a reader to Synapse; the room stored by
        # its writer; Synapse fetches Roost's keys through nginx's federation port.
        joined = await c.ok("POST", f"/_matrix/client/v3/join/{quote(room)}"
                            f"?server_name={quote(synapse.name)}", {}, bob["access_token"])
        self.assertEqual(joined["room_id"], room)
        # Synapse -> Roost: a message arrives at fed1 (inbound) through nginx, is stored by
        # the room's writer, and bob reads it.
        status, _ = await threads.deferToThread(
            synapse.client, "PUT",
            f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/s1",
            {"msgtype": "m.text", "body": "from synapse"}, token)
        self.assertEqual(status, 200)
        # Roost -> Synapse: bob's send goes to the writer; fed1's sender delivers it.
        await c.ok("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/r1",
                   {"msgtype": "m.text", "body": "from roost"}, bob["access_token"])
        for _ in range(150):
            page = await c.ok("GET", f"/_matrix/client/v3/rooms/{quote(room)}/messages"
                              "?dir=b&limit=20", token=bob["access_token"])
            if "from synapse" in [e["content"].get("body") for e in page["chunk"]]:
                break
            await _sleep(0.2)
        else:
            self.fail("Synapse's message never reached Roost")
        for _ in range(150):
            status, seen = await threads.deferToThread(
                synapse.client, "GET",
                f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=20", None, token)
            if "from roost" in [e["content"].get("body") for e in seen.get("chunk", [])]:
                break
            await _sleep(0.2)
        else:
            self.fail(f"Roost's message never reached Synapse:\n{cluster.log('fed1')[-3000:]}")
        self.assertIn("/_matrix/federation/v1/send/", cluster.log("fed1"))
        del alice


    async def test_two_writers_take_their_rooms_sends_and_a_dead_one_is_a_clear_error(
            self) -> None:
        """With two writers, each room's sends reach its own writer straight from nginx;
        when a writer dies, nginx's next try lands on the other writer, which forwards,
        so the client gets a clear 503 at once; once it is back its rooms take sends
        again, and no acknowledged event is lost."""
        writers = ("writer1", "writer2")
        cluster, c, _ca, _fed = await self._start(
            {**LAYOUT, "writer2": ["event_writer", "client"]}, writers=writers)
        users = [await c.register(f"u{n}") for n in range(12)]
        rooms: dict[str, tuple[str, str]] = {}  # writer -> (room, its creator's token)
        for user in users:  # who creates a room decides which writer builds it
            room = (await c.ok("POST", "/_matrix/client/v3/createRoom", {},
                               user["access_token"]))["room_id"]
            rooms.setdefault(writer_of_room(room, list(writers)), (room, user["access_token"]))
            if len(rooms) == 2:
                break
        self.assertEqual(set(rooms), set(writers))
        acked: dict[str, list[str]] = {w: [] for w in writers}

        async def send(writer: str, txn: str) -> tuple[int, Any]:
            room, token = rooms[writer]
            code, answer = await c.call(
                "PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/{txn}",
                {"msgtype": "m.text", "body": txn}, token)
            if code == 200:
                acked[writer].append(answer["event_id"])
            return code, answer

        for writer in writers:
            self.assertEqual((await send(writer, "first"))[0], 200)
        for writer in writers:  # each room's send went to its writer only
            room = quote(rooms[writer][0])
            await _logged(cluster, writer, f"PUT /_matrix/client/v3/rooms/{room}/send/")
            for name in ("writer1", "writer2", "reader1", "reader2"):
                self.assertEqual(f"PUT /_matrix/client/v3/rooms/{room}/send/" in
                                 cluster.log(name), name == writer, (writer, name))

        await cluster.kill("writer2")
        started = time.monotonic()
        code, answer = await send("writer2", "while-dead")
        self.assertEqual((code, answer.get("errcode")), (503, "M_UNKNOWN"), answer)
        self.assertLess(time.monotonic() - started, 20)
        self.assertEqual((await send("writer1", "meanwhile"))[0], 200)

        await cluster.start("writer2")
        for attempt in range(50):  # its listeners are up; its bus and claims a moment later
            code, answer = await send("writer2", f"back{attempt}")
            if code == 200:
                break
            await _sleep(0.2)
        self.assertEqual(code, 200, answer)
        for writer, (room, token) in rooms.items():
            for _ in range(50):
                page = await c.ok("GET", f"/_matrix/client/v3/rooms/{quote(room)}/messages"
                                  "?dir=b&limit=50", token=token)
                seen = {e["event_id"] for e in page["chunk"]}
                if set(acked[writer]) <= seen:
                    break
                await _sleep(0.2)
            self.assertEqual(set(acked[writer]) - seen, set(), writer)


async def _logged(cluster: Any, name: str, text: str, times: int = 1) -> None:
    """Wait until `name`'s log holds `text` exactly `times` times: a process writes a
    request's log line after its answer has gone out, so the client may be first."""
    for _ in range(50):
        if cluster.log(name).count(text) >= times:
            break
        await _sleep(0.1)
    if cluster.log(name).count(text) != times:
        raise AssertionError(f"{name} logged {text!r} {cluster.log(name).count(text)} times,"
                             f" not {times}")


async def _sleep(seconds: float) -> None:
    from twisted.internet import task

    await task.deferLater(reactor, seconds, lambda: None)
