"""The WebSocket push stream over a real listener, with Autobahn's Twisted client.

Each test runs a real homeserver on PostgreSQL and talks to /_roost/ws the
way a chat client would; REST calls on the side check that the socket and
/sync agree. Waits are for events (a frame, a close) with a generous timeout,
never sleeps standing in for assertions.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerProtocol,
    connectWS,
)
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from roost.client_api import websocket_base
from tests.server_harness import RunningServer, q, start_server

V3 = "/_matrix/client/v3"
WAIT_S = 15


class _Client(WebSocketClientProtocol):
    answers_pings = True

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onPing(self, payload: bytes) -> None:
        self.factory.pings += 1
        if self.answers_pings:
            super().onPing(payload)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.frames.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"handshake failed: {code} {reason}"))
        if not self.factory.closed.called:
            self.factory.closed.callback((code, reason))


class Socket:
    """A connected client: send frames, await the next one, await the close."""

    def __init__(self, factory: WebSocketClientFactory, protocol: _Client) -> None:
        self.factory = factory
        self.protocol = protocol

    def send(self, frame: Any) -> None:
        self.protocol.sendMessage(json.dumps(frame).encode())

    def send_raw(self, payload: bytes, binary: bool = False) -> None:
        self.protocol.sendMessage(payload, isBinary=binary)

    async def next(self) -> Any:
        got = self.factory.frames.get()
        got.addTimeout(WAIT_S, reactor)
        return await got

    async def next_matching(self, **fields: Any) -> Any:
        """The next frame whose top-level fields match, skipping others (sync pushes)."""
        while True:
            frame = await self.next()
            if all(frame.get(k) == v for k, v in fields.items()):
                return frame

    async def closed(self) -> tuple[int | None, str | None]:
        closed = self.factory.closed
        closed.addTimeout(WAIT_S, reactor)
        return await closed

    def close(self) -> None:
        self.protocol.sendClose(1000)

    async def shut(self) -> None:
        """Close and wait until the server has seen it: cleanups run before the server stops."""
        if not self.factory.closed.called:
            self.protocol.dropConnection(abort=True)
        await self.closed()


def _factory(server: RunningServer, token: str | None) -> WebSocketClientFactory:
    url = f"ws://127.0.0.1:{server.port.getHost().port}/_roost/ws"
    headers = {"Authorization": f"Bearer {token}"} if token else None
    factory = WebSocketClientFactory(url, headers=headers)
    factory.protocol = _Client
    factory.opened = defer.Deferred()
    factory.closed = defer.Deferred()
    factory.frames = defer.DeferredQueue()
    factory.pings = 0
    return factory


async def connect(testcase: TestCase, server: RunningServer, token: str | None = None,
                  client: type[_Client] = _Client) -> Socket:
    """Open a socket (with the Bearer header if `token`); closed when the test ends."""
    factory = _factory(server, token)
    factory.protocol = client
    connector = connectWS(factory)
    testcase.addCleanup(connector.disconnect)
    factory.opened.addTimeout(WAIT_S, reactor)
    protocol = await factory.opened
    sock = Socket(factory, protocol)
    testcase.addCleanup(lambda: defer.ensureDeferred(sock.shut()))
    return sock


async def connect_and_auth(testcase: TestCase, server: RunningServer, token: str) -> Socket:
    """Open a socket authenticated by its first message, as a browser would."""
    sock = await connect(testcase, server)
    sock.send({"op": "auth", "token": token})
    ready = await sock.next()
    testcase.assertEqual(ready["type"], "ready", ready)
    return sock


async def _setup(server: RunningServer) -> tuple[str, str, str]:
    alice = (await server.register("alice"))["access_token"]
    bob = (await server.register("bob"))["access_token"]
    created = await server.request("POST", V3 + "/createRoom",
                                   {"name": "Chat", "invite": ["@bob:test.roost"]}, token=alice)
    room = created.body["room_id"]
    joined = await server.request("POST", V3 + f"/rooms/{room}/join", {}, token=bob)
    assert joined.status == 200, joined.body
    return alice, bob, room


async def _send(server: RunningServer, token: str, room: str, body: str, txn: str) -> str:
    resp = await server.request("PUT", V3 + f"/rooms/{room}/send/m.room.message/{txn}",
                                {"msgtype": "m.text", "body": body}, token=token)
    assert resp.status == 200, resp.body
    return resp.body["event_id"]


def _bodies(frame: Any, room: str) -> list[str]:
    joined = frame["body"]["rooms"]["join"].get(room, {})
    return [e["content"].get("body") for e in joined.get("timeline", {}).get("events", [])
            if e["type"] == "m.room.message"]


def _server_factory(server: RunningServer) -> Any:
    return server.hs.client_site.resource.children[b"_roost"].children[b"ws"]._factory


def _tune(server: RunningServer, **settings: Any) -> None:
    """Change the socket settings of a running server (smaller limits, telltale timer lengths)."""
    factory = _server_factory(server)
    factory.services = replace(factory.services,
                               settings=replace(factory.services.settings, **settings))


def _timer_due_in(clock: task.Clock, seconds: float) -> bool:
    """Whether a call is scheduled `seconds` from now on the fake clock (a waiting loop)."""
    due = clock.seconds() + seconds
    return any(abs(call.getTime() - due) < 1e-6 for call in clock.getDelayedCalls())


def _fake_clock() -> task.Clock:
    clock = task.Clock()
    clock.advance(1_800_000_000)
    return clock


async def _until(predicate: Any) -> None:
    """Wait (polling the reactor) until `predicate()` holds; fail after WAIT_S."""
    for _ in range(WAIT_S * 100):
        if predicate():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not reached")


class ConnectTests(TestCase):
    async def test_header_auth_then_a_message_sent_over_rest_is_pushed(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        sock = await connect(self, server, bob)
        ready = await sock.next()
        self.assertEqual(ready, {"type": "ready", "user_id": "@bob:test.roost",
                                 "device_id": ready["device_id"]})
        sock.send({"op": "sync", "since": None, "id": "s1"})
        self.assertEqual(await sock.next(), {"id": "s1", "result": {}})
        initial = await sock.next()
        self.assertEqual(initial["type"], "sync")
        self.assertIn(room, initial["body"]["rooms"]["join"])
        self.assertEqual(initial["next_batch"], initial["body"]["next_batch"])
        await _send(server, alice, room, "hello bob", "a1")
        pushed = await sock.next_matching(type="sync")
        self.assertEqual(_bodies(pushed, room), ["hello bob"])
        self.assertEqual(pushed["body"]["rooms"]["join"][room]["timeline"]["events"][0]["sender"],
                         "@alice:test.roost")

    async def test_first_message_auth_and_presence_online(self) -> None:
        server = await start_server(self)
        alice, bob, _room = await _setup(server)
        sock = await connect(self, server)
        sock.send({"id": "early", "op": "send", "room_id": "!x:test.roost", "type": "m.room.message",
                   "content": {}, "txn_id": "t"})
        refused = await sock.next()
        self.assertEqual((refused["id"], refused["error"]["errcode"]), ("early", "M_MISSING_TOKEN"))
        sock.send({"op": "auth", "token": bob})
        ready = await sock.next()
        self.assertEqual((ready["type"], ready["user_id"]), ("ready", "@bob:test.roost"))
        status = await server.request("GET", V3 + f"/presence/{q('@bob:test.roost')}/status",
                                      token=alice)
        self.assertEqual(status.body.get("presence"), "online", status.body)


class RequestTests(TestCase):
    async def test_send_over_the_socket_reaches_the_other_users_sync(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        token = (await server.request("GET", V3 + "/sync", token=alice)).body["next_batch"]
        sock = await connect_and_auth(self, server, bob)
        sock.send({"id": "c1", "op": "send", "room_id": room, "type": "m.room.message",
                   "content": {"msgtype": "m.text", "body": "from the socket"}, "txn_id": "w1"})
        sent = await sock.next()
        self.assertEqual(sent["id"], "c1")
        event_id = sent["result"]["event_id"]
        # The same txn id is the same send, as over REST.
        sock.send({"id": "c2", "op": "send", "room_id": room, "type": "m.room.message",
                   "content": {"msgtype": "m.text", "body": "from the socket"}, "txn_id": "w1"})
        self.assertEqual(await sock.next(), {"id": "c2", "result": {"event_id": event_id}})
        sock.send({"id": "c3", "op": "typing", "room_id": room, "typing": True, "timeout": 20000})
        self.assertEqual(await sock.next(), {"id": "c3", "result": {}})
        sock.send({"id": "c4", "op": "receipt", "room_id": room, "event_id": event_id})
        self.assertEqual(await sock.next(), {"id": "c4", "result": {}})
        resp = await server.request("GET", V3 + f"/sync?since={token}", token=alice)
        joined = resp.body["rooms"]["join"][room]
        events = joined["timeline"]["events"]
        self.assertEqual([(e["event_id"], e["sender"], e["content"]["body"]) for e in events],
                         [(event_id, "@bob:test.roost", "from the socket")])
        ephemeral = {e["type"]: e["content"] for e in joined["ephemeral"]["events"]}
        self.assertEqual(ephemeral["m.typing"], {"user_ids": ["@bob:test.roost"]})
        self.assertIn("@bob:test.roost", ephemeral["m.receipt"][event_id]["m.read"])

    async def test_join_leave_and_rest_errors_over_the_socket(self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        carol = (await server.register("carol"))["access_token"]
        created = await server.request("POST", V3 + "/createRoom",
                                       {"preset": "public_chat", "room_alias_name": "lobby"},
                                       token=alice)
        room = created.body["room_id"]
        sock = await connect_and_auth(self, server, carol)
        sock.send({"id": "j", "op": "join", "room_id_or_alias": "#lobby:test.roost"})
        self.assertEqual(await sock.next(), {"id": "j", "result": {"room_id": room}})
        sock.send({"id": "l", "op": "leave", "room_id": room})
        self.assertEqual(await sock.next(), {"id": "l", "result": {}})
        members = await server.request("GET", V3 + f"/rooms/{room}/state/m.room.member/"
                                       + q("@carol:test.roost"), token=alice)
        self.assertEqual(members.body["membership"], "leave")
        # Errors are the REST endpoint's, errcode for errcode.
        sock.send({"id": "s", "op": "send", "room_id": room, "type": "m.room.message",
                   "content": {"body": "x"}, "txn_id": "t1"})
        over_socket = await sock.next()
        over_rest = await server.request("PUT", V3 + f"/rooms/{room}/send/m.room.message/t1",
                                         {"body": "x"}, token=carol)
        self.assertEqual(over_socket, {"id": "s", "error": over_rest.body})
        self.assertEqual(over_rest.body["errcode"], "M_FORBIDDEN")
        sock.send({"id": "u", "op": "send", "room_id": "!nope:test.roost", "type": "m.room.message",
                   "content": {"body": "x"}, "txn_id": "t2"})
        self.assertEqual((await sock.next())["error"]["errcode"], "M_NOT_FOUND")
        sock.send({"id": "b", "op": "typing", "room_id": room, "typing": "yes"})
        self.assertEqual((await sock.next())["error"]["errcode"], "M_BAD_JSON")


class _Received:
    """The message bodies a client has read from sync frames, a limited timeline's gap included.

    A delta with more new events than the filter's timeline limit is pushed
    limited, as /sync answers it: the newest events and a prev_batch. A client
    reads the gap with /messages from prev_batch back to the token the delta
    was built from; so does this, with `to` set to that token, so an event the
    token claims but no frame held is still missed, and "nothing lost, nothing
    repeated" is checked whether or not a delta happened to be limited.
    """

    def __init__(self, server: RunningServer, token: str, room: str, initial: Any) -> None:
        self.server, self.token, self.room = server, token, room
        self.bodies: list[str] = []
        self.gaps = 0  # how many limited timelines were filled (the test reads it)
        self.since = initial["next_batch"]

    async def take(self, frame: Any) -> None:
        """Read one sync frame built from `self.since`, and move on to its next_batch."""
        timeline = _timeline(frame, self.room)
        events = timeline.get("events", [])
        if timeline.get("limited"):
            self.gaps += 1
            events = await self._gap(timeline["prev_batch"]) + events
        self.bodies += [e["content"]["body"].split(" x")[0] for e in events
                        if e["type"] == "m.room.message"]
        self.since = frame["next_batch"]

    async def _gap(self, start: str) -> list[Any]:
        """The events after `self.since` and before `start`, oldest first, via /messages."""
        gap: list[Any] = []
        while True:
            resp = await self.server.request(
                "GET", V3 + f"/rooms/{q(self.room)}/messages?dir=b&limit=50"
                f"&from={q(start)}&to={q(self.since)}", token=self.token)
            assert resp.status == 200, resp.body
            gap += resp.body["chunk"]
            if "end" not in resp.body:
                return gap[::-1]
            start = resp.body["end"]


def _timeline(frame: Any, room: str) -> Any:
    return frame["body"]["rooms"]["join"].get(room, {}).get("timeline", {})


class ResumeTests(TestCase):
    async def test_reconnect_resumes_from_the_last_token_without_loss_or_repeats(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        sock = await connect_and_auth(self, server, bob)
        sock.send({"op": "sync", "since": None})
        await sock.next_matching(type="sync")
        await _send(server, alice, room, "m1", "t1")
        first = await sock.next_matching(type="sync")
        self.assertEqual(_bodies(first, room), ["m1"])
        last_token = first["next_batch"]
        sock.close()
        await sock.closed()
        # Sent while nobody listens.
        await _send(server, alice, room, "m2", "t2")
        await _send(server, alice, room, "m3", "t3")
        again = await connect_and_auth(self, server, bob)
        again.send({"op": "sync", "since": last_token, "filter": {"room": {"timeline": {
            "limit": 50}}}})
        seen: list[str] = []
        while seen[-1:] != ["m4"]:
            frame = await again.next_matching(type="sync")
            seen += _bodies(frame, room)
            last_token = frame["next_batch"]
            if seen == ["m2", "m3"]:
                await _send(server, alice, room, "m4", "t4")
        self.assertEqual(seen, ["m2", "m3", "m4"])
        # Moving from the socket to /sync with the socket's token: nothing repeated, nothing lost.
        await _send(server, alice, room, "m5", "t5")
        resp = await server.request("GET", V3 + f"/sync?since={last_token}", token=bob)
        events = resp.body["rooms"]["join"][room]["timeline"]["events"]
        self.assertEqual([e["content"]["body"] for e in events], ["m5"])
        # And back: the socket resumes from /sync's token.
        third = await connect_and_auth(self, server, bob)
        third.send({"op": "sync", "since": resp.body["next_batch"]})
        await _send(server, alice, room, "m6", "t6")
        self.assertEqual(_bodies(await third.next_matching(type="sync"), room), ["m6"])

    async def test_a_resumed_delta_over_the_timeline_limit_is_limited_with_a_readable_gap(
            self) -> None:
        """More landed than the limit: the push is /sync's limited answer, and the events it
        leaves out are exactly those /messages returns between the token and prev_batch."""
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        sock = await connect_and_auth(self, server, bob)
        sock.send({"op": "sync", "since": None})
        received = _Received(server, bob, room, await sock.next_matching(type="sync"))
        await sock.shut()
        sent = [f"m{i}" for i in range(5)]
        for body in sent:
            await _send(server, alice, room, body, body)
        again = await connect_and_auth(self, server, bob)
        limit = {"room": {"timeline": {"limit": 2}}}
        again.send({"op": "sync", "since": received.since, "filter": limit})
        pushed = await again.next_matching(type="sync")
        timeline = _timeline(pushed, room)
        self.assertEqual((_bodies(pushed, room), timeline["limited"]), (["m3", "m4"], True))
        rest = await server.request("GET", V3 + f"/sync?since={q(received.since)}&filter="
                                    + q(json.dumps(limit)), token=bob)
        def shown(t: Any) -> Any:  # unsigned.age is the serving time's
            return [e["event_id"] for e in t["events"]], t["limited"], t["prev_batch"]
        self.assertEqual(shown(_timeline({"body": rest.body}, room)), shown(timeline))
        await received.take(pushed)
        self.assertEqual((received.bodies, received.gaps), (sent, 1))

    async def test_a_delta_larger_than_the_incoming_frame_bound_is_pushed(self) -> None:
        """Autobahn's message bound (256 KiB) is for what clients send: a resumed delta of
        fourteen 20 KB messages is one /sync body over it, and must still be pushed."""
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        since = (await server.request("GET", V3 + "/sync", token=bob)).body["next_batch"]
        sent = [f"big {i}" for i in range(14)]
        for i, body in enumerate(sent):
            await _send(server, alice, room, f"{body} {'x' * 20_000}", f"b{i}")
        sock = await connect_and_auth(self, server, bob)
        sock.send({"op": "sync", "since": since, "filter": {"room": {"timeline": {"limit": 20}}}})
        pushed = await sock.next_matching(type="sync")
        self.assertGreater(len(json.dumps(pushed)), 4 * 64 * 1024)
        self.assertEqual([b.split(" x")[0] for b in _bodies(pushed, room)], sent)
        # The push loop goes on: the next delta is pushed as before.
        await _send(server, alice, room, "after", "a1")
        self.assertEqual(_bodies(await sock.next_matching(type="sync"), room), ["after"])

    async def test_stored_filter_by_id_and_bad_sync_requests(self) -> None:
        server = await start_server(self)
        alice, bob, room = await _setup(server)
        stored = await server.request("POST", V3 + "/user/@bob:test.roost/filter",
                                      {"room": {"timeline": {"types": ["m.room.topic"]}}},
                                      token=bob)
        token = (await server.request("GET", V3 + "/sync", token=bob)).body["next_batch"]
        sock = await connect_and_auth(self, server, bob)
        for bad, errcode in (({"since": "garbage"}, "M_INVALID_PARAM"),
                             ({"filter": "999"}, "M_NOT_FOUND"),
                             ({"filter": {"room": []}}, "M_BAD_JSON")):
            sock.send({"id": "bad", "op": "sync", **bad})
            reply = await sock.next()
            self.assertEqual(reply["error"]["errcode"], errcode, bad)
        sock.send({"id": "ok", "op": "sync", "since": token, "filter": stored.body["filter_id"]})
        self.assertEqual(await sock.next(), {"id": "ok", "result": {}})
        await _send(server, alice, room, "filtered out", "f1")
        await server.request("PUT", V3 + f"/rooms/{room}/state/m.room.topic", {"topic": "news"},
                             token=alice)
        frame = await sock.next_matching(type="sync")
        events = frame["body"]["rooms"]["join"][room]["timeline"]["events"]
        self.assertEqual([e["type"] for e in events], ["m.room.topic"])


class BadInputTests(TestCase):
    async def test_each_bad_frame_gets_an_error_and_the_socket_stays_usable(self) -> None:
        server = await start_server(self)
        _alice, bob, room = await _setup(server)
        sock = await connect_and_auth(self, server, bob)
        cases: list[tuple[bytes, bool, Any, str]] = [
            (b"this is not json", False, None, "M_NOT_JSON"),
            (b"\x00\x01binary", True, None, "M_NOT_JSON"),
            (b"[1, 2, 3]", False, None, "M_BAD_JSON"),
            (json.dumps({"id": "u1", "op": "fly"}).encode(), False, "u1", "M_UNRECOGNIZED"),
            (json.dumps({"op": "send", "room_id": room}).encode(), False, None, "M_MISSING_PARAM"),
            (json.dumps({"id": "big", "op": "send", "pad": "x" * 70_000}).encode(), False, None,
             "M_TOO_LARGE"),
            (json.dumps({"id": "n1", "op": "send", "room_id": room, "type": "m.room.message",
                         "content": {"body": "x"}}).encode(), False, "n1", "M_MISSING_PARAM"),
            (json.dumps({"id": "n2", "op": "send", "room_id": room, "type": "m.room.message",
                         "content": [1], "txn_id": "z"}).encode(), False, "n2", "M_BAD_JSON"),
        ]
        for payload, binary, fid, errcode in cases:
            sock.send_raw(payload, binary)
            reply = await sock.next()
            self.assertEqual((reply["id"], reply["error"]["errcode"]), (fid, errcode), payload[:40])
        sock.send({"id": "fine", "op": "send", "room_id": room, "type": "m.room.message",
                   "content": {"msgtype": "m.text", "body": "still here"}, "txn_id": "ok1"})
        reply = await sock.next()
        self.assertEqual(reply["id"], "fine")
        self.assertTrue(reply["result"]["event_id"].startswith("$"))


class AuthTests(TestCase):
    async def test_bad_auth_message_gets_an_error_and_close(self) -> None:
        server = await start_server(self)
        for frame, errcode in (({"op": "auth", "token": "not-a-token"}, "M_UNKNOWN_TOKEN"),
                               ({"op": "auth"}, "M_MISSING_TOKEN")):
            sock = await connect(self, server)
            sock.send(frame)
            frame = await sock.next()
            self.assertEqual((frame["type"], frame["error"]["errcode"]), ("error", errcode))
            code, _reason = await sock.closed()
            self.assertEqual(code, 4001)

    async def test_bad_header_token_is_refused_at_the_handshake(self) -> None:
        server = await start_server(self)
        factory = _factory(server, "not-a-token")
        connector = connectWS(factory)
        self.addCleanup(connector.disconnect)
        factory.opened.addTimeout(WAIT_S, reactor)
        with self.assertRaises(ConnectionError) as caught:
            await factory.opened
        self.assertIn("401", str(caught.exception))

    async def test_logout_over_rest_closes_the_socket_at_the_next_request(self) -> None:
        server = await start_server(self)
        _alice, bob, room = await _setup(server)
        sock = await connect(self, server, bob)
        await sock.next_matching(type="ready")
        logout = await server.request("POST", V3 + "/logout", {}, token=bob)
        self.assertEqual(logout.status, 200)
        sock.send({"id": "after", "op": "typing", "room_id": room, "typing": True})
        frame = await sock.next()
        self.assertEqual((frame["type"], frame["error"]["errcode"]), ("error", "M_UNKNOWN_TOKEN"))
        code, _reason = await sock.closed()
        self.assertEqual(code, 4001)

    async def test_logout_closes_an_idle_socket_when_the_periodic_check_runs(self) -> None:
        clock = _fake_clock()
        server = await start_server(self, clock=clock)
        _tune(server, recheck_s=55)
        _alice, bob, _room = await _setup(server)
        sock = await connect(self, server, bob)
        await sock.next_matching(type="ready")
        sock.send({"op": "sync", "since": None})
        await sock.next_matching(type="sync")
        await _until(lambda: _timer_due_in(clock, 55))  # the push loop waits for a change
        logout = await server.request("POST", V3 + "/logout", {}, token=bob)
        self.assertEqual(logout.status, 200)
        clock.advance(56)
        frame = await sock.next()
        self.assertEqual((frame["type"], frame["error"]["errcode"]), ("error", "M_UNKNOWN_TOKEN"))
        self.assertEqual((await sock.closed())[0], 4001)

    async def test_an_expired_token_closes_the_socket_with_soft_logout(self) -> None:
        clock = _fake_clock()
        server = await start_server(self, clock=clock)
        _tune(server, recheck_s=55)
        bob = (await server.register("bob", refresh_token=True))["access_token"]
        sock = await connect_and_auth(self, server, bob)
        sock.send({"op": "sync", "since": None})
        await sock.next_matching(type="sync")
        await _until(lambda: _timer_due_in(clock, 55))
        clock.advance(16 * 60)  # past the 15-minute access token lifetime
        frame = await sock.next()
        self.assertEqual(frame["error"]["errcode"], "M_UNKNOWN_TOKEN")
        self.assertTrue(frame["error"]["soft_logout"])
        self.assertEqual((await sock.closed())[0], 4001)

    async def test_a_socket_that_never_authenticates_is_closed(self) -> None:
        clock = _fake_clock()
        server = await start_server(self, clock=clock)
        _tune(server, auth_timeout_s=44)
        sock = await connect(self, server)
        await _until(lambda: _timer_due_in(clock, 44))
        clock.advance(45)
        frame = await sock.next()
        self.assertEqual(frame["error"]["errcode"], "M_MISSING_TOKEN")
        self.assertEqual((await sock.closed())[0], 4001)

    async def test_rate_limits_are_the_rest_endpoints(self) -> None:
        server = await start_server(
            self, rate_limits={"message": {"per_second": 0.001, "burst": 1}})
        _alice, bob, room = await _setup(server)
        sock = await connect_and_auth(self, server, bob)
        for txn in ("r1", "r2"):
            sock.send({"id": txn, "op": "send", "room_id": room, "type": "m.room.message",
                       "content": {"body": txn}, "txn_id": txn})
        self.assertIn("event_id", (await sock.next())["result"])
        limited = await sock.next()
        self.assertEqual((limited["id"], limited["error"]["errcode"]), ("r2", "M_LIMIT_EXCEEDED"))
        self.assertGreater(limited["error"]["retry_after_ms"], 0)


class SlowClientTests(TestCase):
    async def test_a_client_that_stops_reading_is_closed_with_a_token_to_resume_from(
            self) -> None:
        clock = _fake_clock()
        server = await start_server(self, clock=clock)
        _tune(server, drain_timeout_s=77)
        alice, bob, room = await _setup(server)
        sock = await connect_and_auth(self, server, bob)
        sock.send({"op": "sync", "since": None})
        received = _Received(server, bob, room, await sock.next_matching(type="sync"))
        # Stop reading, with a small receive window, so the server's buffer fills.
        client = sock.protocol.transport
        client.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.pauseProducing()
        sent: list[str] = []
        padding = "x" * 20_000
        while not _timer_due_in(clock, 77):  # the server waits for the client to drain
            self.assertLess(len(sent), 400, "the server never waited for the client")
            sent.append(f"big {len(sent)}")
            await _send(server, alice, room, f"{sent[-1]} {padding}", f"b{len(sent)}")
        clock.advance(78)  # the client did not drain in time
        client.resumeProducing()
        last_token = None
        while True:
            frame = await sock.next()
            if frame.get("type") == "resume":
                break
            # A delta that waited for the drain while more than 10 (the default
            # limit) messages landed is pushed limited, as /sync would answer.
            await received.take(frame)
            self.assertEqual(received.bodies, sent[:len(received.bodies)])  # none skipped
            last_token = frame["next_batch"]
        self.assertEqual(frame["next_batch"], last_token)
        self.assertEqual((await sock.closed())[0], 4008)
        self.assertLess(len(received.bodies), len(sent))
        # Resuming from the token loses nothing and repeats nothing.
        again = await connect_and_auth(self, server, bob)
        again.send({"op": "sync", "since": frame["next_batch"],
                    "filter": {"room": {"timeline": {"limit": 100}}}})  # MAX_TIMELINE_LIMIT
        while len(received.bodies) < len(sent):
            await received.take(await again.next_matching(type="sync"))
            self.assertEqual(received.bodies, sent[:len(received.bodies)])  # none skipped
        self.assertEqual(received.bodies, sent)


class IdleSocketTests(TestCase):
    """What an idle socket holds: bench/ws_fanout.py measures 1,000 of them."""

    async def test_an_idle_socket_has_no_instance_dict_and_no_running_coroutine(self) -> None:
        server = await start_server(self)
        _alice, bob, _room = await _setup(server)
        sock = await connect(self, server, bob)
        await sock.next_matching(type="ready")
        sock.send({"op": "sync", "since": None})
        await sock.next_matching(type="sync")
        factory = _server_factory(server)
        await _until(lambda: all(s._watch is not None for s in factory.open_sockets))
        [idle] = factory.open_sockets
        # Every attribute, autobahn's included, is in a slot; its options are read from
        # the factory, not copied onto the socket.
        self.assertEqual(vars(idle), {})
        self.assertEqual(idle.autoPingInterval, factory.autoPingInterval)
        self.assertEqual(idle.maxMessagePayloadSize, factory.maxMessagePayloadSize)
        # The push loop waits as a watch on the notifier, not as a suspended round.
        self.assertIsNone(idle._stream)

    def test_slots_hide_only_the_class_defaults_the_socket_sets_again(self) -> None:
        """A slot shadows a class attribute of the same name until it is set: each such
        name must be one SyncSocket.__init__ sets (an autobahn upgrade may add others)."""
        shadowed = {n for n in websocket_base.AUTOBAHN_STATE if hasattr(WebSocketServerProtocol, n)}
        self.assertEqual(shadowed, {"factory", "transport", "connected", "peer",
                                    "_valid_events", "_results", "_listeners"})


class _SilentClient(_Client):
    answers_pings = False


class KeepaliveTests(TestCase):
    async def test_a_peer_that_answers_pings_stays_and_a_silent_one_is_dropped(self) -> None:
        server = await start_server(self)
        _tune(server, ping_interval_s=0.1, ping_timeout_s=2.0)
        _alice, bob, _room = await _setup(server)
        answering = await connect(self, server, bob)
        silent = await connect(self, server, bob, client=_SilentClient)
        code, _reason = await silent.closed()  # dropped, without a closing handshake
        self.assertEqual(code, 1006)
        self.assertGreaterEqual(silent.factory.pings, 1)
        await _until(lambda: answering.factory.pings >= 3)
        self.assertFalse(answering.factory.closed.called)
        self.assertEqual(len(_server_factory(server).open_sockets), 1)
