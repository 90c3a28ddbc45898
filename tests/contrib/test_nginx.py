"""contrib/nginx/roost.conf, as shipped, in front of a real Roost: nginx from Debian
started by the test, TLS from a test CA, and through it client requests, the
WebSocket push stream, a federation request, and client addresses forwarded."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, connectWS
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from roost.federation.transport.server import tls_context_factory
from tests.client_api.test_websocket import _Client
from tests.server_harness import RunningServer, start_server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITE = os.path.join(REPO, "contrib", "nginx", "roost.conf")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_test_ca(folder: str) -> tuple[str, str, str]:
    """A CA and a leaf for localhost signed by it: (ca.pem, leaf.pem, leaf.key)."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
              signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost")]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Roost test CA")])
    ca = build("Roost test CA", ca_name, ca_key, ca_key, True)
    leaf = build("localhost", ca_name, leaf_key, ca_key, False)
    paths = [os.path.join(folder, n) for n in ("ca.pem", "leaf.pem", "leaf.key")]
    pem = serialization.Encoding.PEM
    for path, data in zip(paths, [ca.public_bytes(pem), leaf.public_bytes(pem),
                                  leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption())],
                          strict=True):
        with open(path, "wb") as f:
            f.write(data)
    return paths[0], paths[1], paths[2]


def render_site(client_port: int, federation_port: int, roost_client: int,
                roost_federation: int, cert: str, key: str) -> str:
    """The shipped file with only the operator's own values changed, each exactly once."""
    with open(SITE, encoding="utf-8") as f:
        text = f.read()
    for old, new in [
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{client_port} ssl http2;"),
        ("listen 8448 ssl http2;", f"listen 127.0.0.1:{federation_port} ssl http2;"),
        ("server 127.0.0.1:8008;", f"server 127.0.0.1:{roost_client};"),
        ("server 127.0.0.1:8449;", f"server 127.0.0.1:{roost_federation};"),
    ]:
        assert text.count(old) == 1, f"contrib/nginx/roost.conf no longer has {old!r} once"
        text = text.replace(old, new)
    text = text.replace("/etc/letsencrypt/live/example.org/fullchain.pem", cert)
    text = text.replace("/etc/letsencrypt/live/example.org/privkey.pem", key)
    return text.replace("example.org", "localhost")


class _Nginx(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred = defer.Deferred()
        self.err = b""

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: object) -> None:
        self.ended.callback(None)


async def wait_for_port(port: int, nginx: _Nginx) -> None:
    for _ in range(250):
        if nginx.ended.called:
            raise AssertionError(f"nginx exited: {nginx.err.decode(errors='replace')}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("nginx did not start listening")


async def run_nginx(testcase: TestCase, folder: str, site: str, ports: list[int],
                    worker_connections: int) -> None:
    """Start Debian's nginx on the site file `site` (its files under `folder`), stopped when
    the test ends; returns once it listens on every one of `ports`."""
    conf = os.path.join(folder, "nginx.conf")
    temp = " ".join(f"{n}_temp_path {folder}/{n};" for n in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    with open(conf, "w", encoding="utf-8") as f:
        f.write(f"worker_processes 1; user root; pid {folder}/nginx.pid;"
                f" error_log {folder}/error.log;\n"
                f" events {{ worker_connections {worker_connections}; }}\n"
                f" http {{ access_log off; {temp} include {site}; }}\n")
    nginx = _Nginx()
    process = reactor.spawnProcess(nginx, NGINX, [NGINX, "-p", folder, "-c", conf,
                                                  "-g", "daemon off;"], env={})

    async def stop() -> None:
        if not nginx.ended.called:
            process.signalProcess(signal.SIGQUIT)
        await nginx.ended

    testcase.addCleanup(lambda: defer.ensureDeferred(stop()))
    for port in ports:
        await wait_for_port(port, nginx)


class NginxTests(TestCase):
    timeout = 60

    async def _start(self, worker_connections: int = 128
                     ) -> tuple[RunningServer, str, int, int]:
        if not os.path.exists(NGINX):
            raise SkipTest("nginx is not installed (.ci/run installs Debian's nginx-light)")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        ca, cert, key = write_test_ca(folder)
        client_port, federation_port = free_port(), free_port()
        server = await start_server(
            self, server_name=f"localhost:{federation_port}",
            listeners={"client": {"x_forwarded": True}},
            rate_limits={"registration": {"per_second": 0.001, "burst": 1}})
        fed = reactor.listenSSL(0, server.hs.federation.site, tls_context_factory(cert, key),
                                interface="127.0.0.1")
        self.addCleanup(fed.stopListening)
        site = os.path.join(folder, "roost.conf")
        with open(site, "w", encoding="utf-8") as f:
            f.write(render_site(client_port, federation_port, server.port.getHost().port,
                                fed.getHost().port, cert, key))
        await run_nginx(self, folder, site, [client_port, federation_port], worker_connections)
        return server, ca, client_port, federation_port

    def _client(self, ca: str, source: str = "127.0.0.1") -> treq.client.HTTPClient:
        with open(ca, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool,
                      bindAddress=(source, 0))
        return treq.client.HTTPClient(agent)

    async def test_clients_sockets_and_federation_through_the_shipped_config(self) -> None:
        server, ca, client_port, federation_port = await self._start()
        http = self._client(ca)
        base = f"https://localhost:{client_port}"
        versions = await http.get(base + "/_matrix/client/versions")
        self.assertEqual(versions.code, 200)
        self.assertIn("v1.1", json.loads(await versions.content())["versions"])
        alice = await server.register("alice")
        auth = {"Authorization": f"Bearer {alice['access_token']}"}
        room = json.loads(await (await http.post(base + "/_matrix/client/v3/createRoom",
                                                 data=b"{}", headers=auth)).content())["room_id"]
        sync = json.loads(await (await http.get(base + "/_matrix/client/v3/sync",
                                                headers=auth)).content())
        self.assertIn(room, sync["rooms"]["join"])

        with open(ca, "rb") as f:
            tls = ssl.optionsForClientTLS("localhost", ssl.Certificate.loadPEM(f.read()))
        factory = WebSocketClientFactory(f"wss://localhost:{client_port}/_roost/ws")
        factory.protocol = _Client
        factory.opened, factory.closed = defer.Deferred(), defer.Deferred()
        factory.frames, factory.pings = defer.DeferredQueue(), 0
        connector = connectWS(factory, tls)
        self.addCleanup(connector.disconnect)
        socket_ = await factory.opened.addTimeout(15, reactor)
        socket_.sendMessage(json.dumps({"op": "auth", "token": alice["access_token"]}).encode())
        ready = await factory.frames.get().addTimeout(15, reactor)
        self.assertEqual(ready["type"], "ready")
        socket_.sendMessage(json.dumps({"op": "sync", "since": sync["next_batch"]}).encode())
        await http.put(f"{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/1",
                       data=json.dumps({"msgtype": "m.text", "body": "through nginx"}).encode(),
                       headers=auth)
        while True:
            frame = await factory.frames.get().addTimeout(15, reactor)
            if "through nginx" in json.dumps(frame):
                break
        socket_.sendClose(1000)

        keys = await http.get(f"https://localhost:{federation_port}/_matrix/key/v2/server")
        self.assertEqual(keys.code, 200)
        self.assertEqual(json.loads(await keys.content())["server_name"],
                         f"localhost:{federation_port}")
        version = await http.get(f"https://localhost:{federation_port}"
                                 "/_matrix/federation/v1/version")
        self.assertEqual(json.loads(await version.content())["server"]["name"], "Roost")

    async def test_client_addresses_are_forwarded_for_rate_limits(self) -> None:
        """Two clients on different addresses each get their own registration bucket."""
        server, ca, client_port, _fed = await self._start()
        url = f"https://localhost:{client_port}/_matrix/client/v3/register/available?username="
        first = await self._client(ca, "127.0.0.2").get(url + "a")
        other = await self._client(ca, "127.0.0.3").get(url + "b")
        again = await self._client(ca, "127.0.0.2").get(url + "c")
        self.assertEqual((first.code, other.code, again.code), (200, 200, 429))
        admin = await self._client(ca, "127.0.0.2").get(
            f"https://localhost:{client_port}/_synapse/admin/v1/server_version")
        self.assertEqual(admin.code, 403)  # the admin API only from the proxy's own machine
        del server

    async def test_long_polls_answered_together_come_back_on_kept_connections(self) -> None:
        """More long polls than the old `keepalive 32`, answered by one message: nginx keeps
        their connections to Roost, so the next polls open none (each new one cost Roost an
        accept, an HTTP channel and a close)."""
        server, ca, client_port, _fed = await self._start(worker_connections=512)
        accepted = [0]
        factory = server.port.factory
        build = factory.buildProtocol

        def counted(addr: object) -> object:
            accepted[0] += 1
            return build(addr)

        factory.buildProtocol = counted
        alice = await server.register("alice")
        auth = {"Authorization": f"Bearer {alice['access_token']}"}
        http = self._client(ca)
        base = f"https://localhost:{client_port}/_matrix/client/v3"
        room = json.loads(await (await http.post(base + "/createRoom", data=b"{}",
                                                 headers=auth)).content())["room_id"]
        since = json.loads(await (await http.get(base + "/sync", headers=auth)).content()
                           )["next_batch"]
        notifier = server.hs.notifier
        polls = 60

        async def poll_round(since: str, txn: str) -> tuple[str, int, int]:
            """`polls` long polls at once, answered by one message: (next token, connections
            accepted once all wait, accepted once all are answered)."""
            waiting = len(notifier._listeners)
            answers = [http.get(f"{base}/sync?since={since}&timeout=20000", headers=auth)
                       for _ in range(polls)]
            for _ in range(500):  # every poll waiting at Roost
                if len(notifier._listeners) >= waiting + polls:
                    break
                await task.deferLater(reactor, 0.02, lambda: None)
            arrived = accepted[0]
            await http.put(f"{base}/rooms/{room}/send/m.room.message/{txn}", headers=auth,
                           data=json.dumps({"msgtype": "m.text", "body": txn}).encode())
            bodies = [json.loads(await (await a).content()) for a in answers]
            self.assertTrue(all(room in b["rooms"]["join"] for b in bodies))
            return bodies[0]["next_batch"], arrived, accepted[0]

        since, _, done = await poll_round(since, "first")
        since, arrived, _ = await poll_round(since, "second")
        # The second round's polls came on the connections the first round's left.
        self.assertEqual(arrived - done, 0)
