"""A real application service library (mautrix-python) bridging through Roost: it
registers a puppet, joins a room, and messages go both ways."""

from __future__ import annotations

import json
import os
import socket
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from tests.server_harness import q, start_server

V3 = "/_matrix/client/v3"
HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_registration(folder: str, port: int, as_id: str = "bridge",
                       receive_ephemeral: bool = False) -> str:
    path = os.path.join(folder, f"{as_id}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({
            "id": as_id, "url": f"http://127.0.0.1:{port}",
            "as_token": f"as-token-{as_id}", "hs_token": f"hs-token-{as_id}",
            "sender_localpart": f"{as_id}bot", "rate_limited": False,
            "receive_ephemeral": receive_ephemeral,
            "namespaces": {"users": [{"exclusive": True, "regex": f"@{as_id}_.*:test\\.roost"}],
                           "aliases": [{"exclusive": True, "regex": f"#{as_id}_.*:test\\.roost"}],
                           "rooms": []}}, f)
    return path


class _Lines(protocol.ProcessProtocol):
    """Collects the bridge's JSON lines; `wait_for(step)` fires when that step is printed."""

    def __init__(self) -> None:
        self.steps: dict[str, dict] = {}
        self.waiting: dict[str, defer.Deferred] = {}
        self.buffer = b""
        self.stderr = b""
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            try:
                fields = json.loads(line)
            except ValueError:
                continue
            self.steps[fields["step"]] = fields
            waiter = self.waiting.pop(fields["step"], None)
            if waiter is not None:
                waiter.callback(fields)

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-8000:]

    def processEnded(self, reason: object) -> None:
        for waiter in self.waiting.values():
            waiter.errback(RuntimeError(f"bridge ended: {self.stderr.decode(errors='replace')}"))
        self.waiting.clear()
        self.ended.callback(None)

    def wait_for(self, step: str) -> defer.Deferred:
        if step in self.steps:
            return defer.succeed(self.steps[step])
        d = self.waiting[step] = defer.Deferred()
        d.addTimeout(60, reactor)
        return d


class MautrixBridgeTests(TestCase):
    timeout = 120

    async def test_a_mautrix_appservice_registers_a_puppet_joins_and_relays_both_ways(self) -> None:
        port = free_port()
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        server = await start_server(
            self, app_service_config_files=[write_registration(folder, port)])
        bob = await server.register("bob")
        room = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=bob["access_token"])).body["room_id"]
        config = {"homeserver": server.base_url, "domain": "test.roost", "id": "bridge",
                  "as_token": "as-token-bridge", "hs_token": "hs-token-bridge",
                  "bot": "bridgebot", "port": port, "puppet": "@bridge_alice:test.roost",
                  "room_id": room, "real_user": "@bob:test.roost"}
        lines = _Lines()
        process = reactor.spawnProcess(
            lines, sys.executable, [sys.executable, os.path.join(HERE, "mautrix_bridge.py"),
                                    json.dumps(config)], env=dict(os.environ))
        self.addCleanup(lambda: lines.ended if process.pid is None
                        else (process.signalProcess("KILL"), lines.ended)[1])
        await lines.wait_for("joined")
        sent = await lines.wait_for("sent")
        got = await server.request("GET", f"{V3}/rooms/{q(room)}/event/{q(sent['event_id'])}",
                                   token=bob["access_token"])
        self.assertEqual((got.body["sender"], got.body["content"]["body"]),
                         ("@bridge_alice:test.roost", "hello from the bridge"))
        await server.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/t1",
                             {"msgtype": "m.text", "body": "hello, bridge"},
                             token=bob["access_token"])
        relayed = await lines.wait_for("relayed")
        self.assertEqual(relayed["body"], "hello, bridge")
