"""Room writes made at a process that is not the room's writer reach the writer over its
internal listener (real HTTP on loopback, one PostgreSQL): sends, state, membership,
createRoom; refusals come back as the writer's Matrix errors; a writer that is down
gives a clear error at once; a wrong secret is refused."""

from __future__ import annotations

import json
import uuid
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from roost.homeserver.roles import Roles
from roost.homeserver.room_writers import (
    PREFIX,
    new_event_from,
    new_event_json,
    outcome_from,
    outcome_json,
)
from roost.homeserver.wiring import build_homeserver
from roost.rooms.engine import NewEvent, RemoteOutcome
from tests.contrib.test_nginx import free_port
from tests.postgres_harness import fresh_database
from tests.server_harness import RunningServer, _as_deferred, q, test_config

V3 = "/_matrix/client/v3"
SECRET = "a-secret-for-tests"


def workers(internal_port: int) -> dict[str, Any]:
    return {
        "shared_secret": SECRET,
        "instances": {
            "writer1": {"roles": ["client", "event_writer", "pusher", "appservice",
                                  "background", "federation_sender", "media",
                                  "federation_inbound"],
                        "internal": {"port": internal_port}},
            "reader1": {"roles": ["client"]},
        },
        "event_writers": ["writer1"],
        "federation_senders": ["writer1"],
    }


class CodecTests(TestCase):
    def test_new_events_and_outcomes_survive_the_trip(self) -> None:
        new = NewEvent("@a:x", "m.room.message", {"body": "hi"}, None, None, ("@a:x", "D", "t1"))
        self.assertEqual(new_event_from(json.loads(json.dumps(new_event_json(new)))), new)
        outcome = RemoteOutcome("$e", "accepted", None, {("m.room.create", ""): "$c"})
        self.assertEqual(outcome_from(json.loads(json.dumps(outcome_json(outcome)))), outcome)


class ForwardingTests(TestCase):
    timeout = 120

    async def _start(self, name: str, dsn: str, data_dir: str, internal_port: int
                     ) -> RunningServer:
        config = test_config(data_dir, workers=workers(internal_port),
                             redis={"enabled": True, "key_prefix": self.prefix}).for_worker(name)
        hs = await build_homeserver(config, reactor, dsn=dsn)
        port = reactor.listenTCP(0, hs.client_site, interface="127.0.0.1")
        server = RunningServer(hs, f"http://127.0.0.1:{port.getHost().port}", port,
                               HTTPConnectionPool(reactor, persistent=False))
        self.addCleanup(lambda: _as_deferred(server.stop()))
        if hs.internal_site is not None:
            internal = reactor.listenTCP(internal_port, hs.internal_site, interface="127.0.0.1")
            self.internal_ports.append(internal)
            self.addCleanup(internal.stopListening)
        return server

    async def _cluster(self) -> tuple[RunningServer, RunningServer, int]:
        dsn = await fresh_database(self)
        data_dir = self.mktemp()
        internal_port = free_port()
        self.internal_ports: list[Any] = []
        self.prefix = f"roost-test-{uuid.uuid4().hex[:12]}:"
        writer = await self._start("writer1", dsn, data_dir, internal_port)
        reader = await self._start("reader1", dsn, data_dir, internal_port)
        return writer, reader, internal_port

    async def test_room_writes_at_a_reader_are_persisted_by_the_writer(self) -> None:
        writer, reader, _port = await self._cluster()
        self.assertIsNone(reader.hs.internal_site)
        alice = await reader.register("alice")
        bob = await reader.register("bob")
        created = await reader.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                       token=alice["access_token"])
        self.assertEqual(created.status, 200, created.body)
        room = created.body["room_id"]
        roles = Roles.from_config(reader.hs.config)
        self.assertEqual(roles.writer_of(room), "writer1")
        joined = await reader.request("POST", f"{V3}/rooms/{q(room)}/join", {},
                                      token=bob["access_token"])
        self.assertEqual(joined.status, 200, joined.body)
        sent = await reader.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/t1",
                                    {"msgtype": "m.text", "body": "via the reader"},
                                    token=bob["access_token"])
        self.assertEqual(sent.status, 200, sent.body)
        again = await reader.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/t1",
                                     {"msgtype": "m.text", "body": "via the reader"},
                                     token=bob["access_token"])
        self.assertEqual(again.body, sent.body)  # the txn id holds across processes
        topic = await reader.request("PUT", f"{V3}/rooms/{q(room)}/state/m.room.topic/",
                                     {"topic": "forwarded"}, token=alice["access_token"])
        self.assertEqual(topic.status, 200, topic.body)
        # The writer's engine built them: they are in its room, in order.
        page = await writer.request("GET", f"{V3}/rooms/{q(room)}/messages?dir=b&limit=10",
                                    token=alice["access_token"])
        types = [(e["type"], e["content"].get("body") or e["content"].get("topic"))
                 for e in page.body["chunk"]]
        self.assertEqual(types[:2], [("m.room.topic", "forwarded"),
                                     ("m.room.message", "via the reader")])
        self.assertEqual(page.body["chunk"][1]["event_id"], sent.body["event_id"])
        # The reader reads its own writes: the room's state there includes the topic.
        state = await reader.request("GET", f"{V3}/rooms/{q(room)}/state/m.room.topic/",
                                     token=bob["access_token"])
        self.assertEqual(state.body, {"topic": "forwarded"})

    async def test_the_writers_refusals_come_back_as_matrix_errors(self) -> None:
        writer, reader, _port = await self._cluster()
        alice = await reader.register("alice")
        bob = await reader.register("bob")
        room = (await reader.request("POST", V3 + "/createRoom", {},
                                     token=alice["access_token"])).body["room_id"]
        refused = await reader.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/x",
                                       {"msgtype": "m.text", "body": "not a member"},
                                       token=bob["access_token"])
        self.assertEqual((refused.status, refused.body["errcode"]), (403, "M_FORBIDDEN"))

    async def test_a_writer_that_is_down_gives_a_clear_error_at_once(self) -> None:
        writer, reader, port = await self._cluster()
        alice = await reader.register("alice")
        room = (await reader.request("POST", V3 + "/createRoom", {},
                                     token=alice["access_token"])).body["room_id"]
        await self.internal_ports[0].stopListening()
        await writer.stop()
        down = await reader.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/y",
                                    {"msgtype": "m.text", "body": "lost?"},
                                    token=alice["access_token"])
        self.assertEqual((down.status, down.body["errcode"]), (503, "M_UNKNOWN"), down.body)
        self.assertIn("writer1", down.body["error"])

    async def test_the_internal_listener_wants_the_secret(self) -> None:
        _writer, _reader, port = await self._cluster()
        url = f"http://127.0.0.1:{port}{PREFIX}append"
        http = treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, False)))
        body = json.dumps({"room_id": "!r:test.roost", "event": new_event_json(
            NewEvent("@a:test.roost", "m.room.message", {}))}).encode()
        wrong = await http.post(url, data=body, headers={"Authorization": "Bearer nope"})
        self.assertEqual(wrong.code, 401)
        none = await http.post(url, data=body)
        self.assertEqual(none.code, 401)
        unknown = await http.post(f"http://127.0.0.1:{port}{PREFIX}nothing", data=b"{}",
                                  headers={"Authorization": f"Bearer {SECRET}"})
        self.assertEqual(json.loads(await unknown.content())["error"]["errcode"],
                         "M_UNRECOGNIZED")
