"""/sync's long poll without coroutines (client_api/sync_poll.py) against the general path.

Two receivers in the same situation (joined to the same room, the same stored filter that
leaves out each other's presence) poll with the current token at once, one through the
fast path and one with the JSON resource's fast handlers off: the answers, read as raw
bytes from the socket, must be the same byte for byte (but the Date header), woken by a
message whether they are the first receiver (built) or a later one (build_at_once), and on
a timeout. A client gone while waiting, presence changed by the poll itself, and requests
the fast path declines (malformed, unknown filter, a token it cannot check from memory) must
end as the general path ends them.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from roost.client_api.resource import JsonResource
from roost.client_api.sync_poll import _Poll
from roost.client_api.sync_waiter import Watch
from tests.client_api.sync_helpers import call, frozen_clock
from tests.server_harness import RunningServer, q, start_server

SYNC = "/_matrix/client/v3/sync"
NO_PRESENCE = {"presence": {"types": []}}


class _RawClient(protocol.Protocol):
    """One keep-alive HTTP/1.1 connection: whole requests out, whole answers (by
    Content-Length) back as raw bytes."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiting: defer.Deferred[bytes] | None = None
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep or self.waiting is None:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b": ")
            if name.lower() == b"content-length":
                length = int(value)
        if len(rest) >= length:
            self.buffer = rest[length:]
            waiting, self.waiting = self.waiting, None
            waiting.callback(head + sep + rest[:length])

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)

    def get(self, target: str, token: str | None, extra: bytes = b"") -> defer.Deferred[bytes]:
        auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
        self.waiting = defer.Deferred()
        self.transport.write(b"GET %s HTTP/1.1\r\nHost: test\r\n%s%s\r\n"  # type: ignore[union-attr]
                             % (target.encode(), auth, extra))
        return self.waiting


async def _connect(server: RunningServer) -> _RawClient:
    return await protocol.ClientCreator(reactor, _RawClient).connectTCP(
        "127.0.0.1", server.port.getHost().port)


def _without_date(raw: bytes) -> bytes:
    return b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Date: "))


class FastPollTests(TestCase):
    async def _setup(self) -> tuple[RunningServer, dict[str, Any], str]:
        """alice's room with bob and carol in it, each with the same stored filter (id 0)
        and online; returns (server, users, room)."""
        server = await start_server(self, clock=frozen_clock())
        users = {name: await server.register(name) for name in ("alice", "bob", "carol")}
        alice = users["alice"]["access_token"]
        room = (await call(server, "POST", "/createRoom", alice,
                           {"preset": "public_chat"}))["room_id"]
        for name in ("bob", "carol"):
            token = users[name]["access_token"]
            await call(server, "POST", f"/rooms/{q(room)}/join", token)
            stored = await call(server, "POST", f"/user/{q(users[name]['user_id'])}/filter",
                                token, NO_PRESENCE)
            self.assertEqual(stored["filter_id"], "0")
            await call(server, "GET", "/sync?filter=0&timeout=0", token)  # (filter known)
        return server, users, room

    def _api(self, server: RunningServer) -> JsonResource:
        api = server.hs.client_site.resource.children[b"_matrix"]
        assert isinstance(api, JsonResource)
        return api

    def _waiting(self, server: RunningServer) -> list[Any]:
        return [w for w in server.hs.notifier._listeners if isinstance(w, Watch)]

    async def _until_waiting(self, server: RunningServer, count: int) -> None:
        for _ in range(600):
            if len(self._waiting(server)) >= count:
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail("the polls never waited")

    async def _two_polls(self, server: RunningServer, users: dict[str, Any],
                         fast_first: bool) -> tuple[defer.Deferred[bytes], ...]:
        """bob's poll through the fast path and carol's through the general one, both with
        the current token and waiting (in that order if `fast_first`)."""
        api = self._api(server)
        builder = server.hs.sync_builder
        assert builder is not None
        target = f"{SYNC}?filter=0&timeout=20000&since={builder.now()}"
        polls: dict[str, defer.Deferred[bytes]] = {}
        for name in (("bob", "carol") if fast_first else ("carol", "bob")):
            api.fast = name == "bob"
            client = await _connect(server)
            self.addCleanup(client.transport.loseConnection)
            polls[name] = client.get(target, users[name]["access_token"])
            await self._until_waiting(server, len(polls))
        api.fast = True
        kinds = sorted(type(w).__name__ for w in self._waiting(server))
        self.assertEqual(kinds, ["Watch", "_Poll"])
        return polls["bob"], polls["carol"]

    async def test_woken_polls_answer_the_same_bytes(self) -> None:
        server, users, room = await self._setup()
        alice = users["alice"]["access_token"]
        for i, fast_first in enumerate((True, False, True)):
            bob, carol = await self._two_polls(server, users, fast_first)
            await call(server, "PUT", f"/rooms/{q(room)}/send/m.room.message/m{i}", alice,
                       {"msgtype": "m.text", "body": f"message {i}"})
            fast, general = await bob, await carol
            self.assertIn(b"message %d" % i, fast)
            self.assertEqual(_without_date(fast), _without_date(general))
        self.assertEqual(self._waiting(server), [])

    async def test_timed_out_polls_answer_the_same_bytes(self) -> None:
        server, users, _ = await self._setup()
        bob, carol = await self._two_polls(server, users, True)
        clock = server.hs.clock
        assert isinstance(clock, task.Clock)
        clock.advance(19.999)
        self.assertFalse(bob.called or carol.called)
        clock.advance(0.002)
        fast, general = await bob, await carol
        self.assertIn(b'"rooms":{"join":{}', fast)  # (an empty delta)
        self.assertEqual(_without_date(fast), _without_date(general))
        self.assertEqual(self._waiting(server), [])

    async def test_client_gone_while_waiting(self) -> None:
        """What cancelling the general path's wait did: no listener or deadline left,
        presence's connection closed, the request logged as cancelled at INFO."""
        server, users, _ = await self._setup()
        presence = server.hs.presence
        assert presence is not None
        lines: list[str] = []
        handler = logging.Handler(logging.INFO)
        handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
        log = logging.getLogger("roost.client_api.resource")
        log.addHandler(handler)
        level = log.level
        log.setLevel(logging.INFO)
        self.addCleanup(log.removeHandler, handler)
        self.addCleanup(log.setLevel, level)
        builder = server.hs.sync_builder
        assert builder is not None
        ends = {}
        for fast in (True, False):
            self._api(server).fast = fast
            client = await _connect(server)
            client.get(f"{SYNC}?filter=0&timeout=20000&since={builder.now()}",
                       users["bob"]["access_token"])
            await self._until_waiting(server, 1)
            self.assertEqual(type(self._waiting(server)[0]) is _Poll, fast)
            self.assertEqual(presence._users[users["bob"]["user_id"]].connections, 1)
            waiter = self._waiting(server)[0]._waiter
            self.assertEqual(len(waiter.deadlines), 1)
            client.transport.loseConnection()
            await client.lost
            for _ in range(100):
                if not self._waiting(server):
                    break
                await task.deferLater(reactor, 0.01, lambda: None)
            state = presence._users[users["bob"]["user_id"]]
            ends[fast] = (len(self._waiting(server)), len(waiter.deadlines),
                          state.connections, state.presence)
        self.assertEqual(ends[True], ends[False])
        self.assertEqual(ends[True][0], 0)
        self.assertEqual(ends[True][2], 0)
        cancelled = [line for line in lines if "cancelled: client went away" in line]
        self.assertEqual(len(cancelled), 2)
        self.assertEqual(cancelled[0], cancelled[1])
        self.assertTrue(cancelled[0].startswith("GET /_matrix/client/v3/sync?filter=0"))

    async def test_logged_as_the_general_path_logs(self) -> None:
        server, users, room = await self._setup()
        lines: list[str] = []
        handler = logging.Handler(logging.INFO)
        handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
        log = logging.getLogger("roost.client_api.resource")
        log.addHandler(handler)
        level = log.level
        log.setLevel(logging.INFO)
        self.addCleanup(log.removeHandler, handler)
        self.addCleanup(log.setLevel, level)
        bob, carol = await self._two_polls(server, users, True)
        await call(server, "PUT", f"/rooms/{q(room)}/send/m.room.message/x",
                   users["alice"]["access_token"], {"msgtype": "m.text", "body": "x"})
        await bob, await carol
        polls = [line.split() for line in lines if " /_matrix/client/v3/sync?" in line]
        self.assertEqual(len(polls), 2)
        for words in polls:
            self.assertEqual(len(words), 6)
            self.assertTrue(words[0].startswith("req"))
            self.assertEqual(words[1:2] + words[3:4], ["GET", "200"])
            self.assertTrue(words[4].endswith("ms"))
        self.assertEqual(sorted(w[5] for w in polls),
                         [users["bob"]["user_id"], users["carol"]["user_id"]])
        self.assertEqual(polls[0][2], polls[1][2])

    async def test_poll_that_brings_its_user_online_is_answered_at_once(self) -> None:
        """`polled` changes presence (offline -> online) after the token was compared: the
        poll is answered with that change at once, as `_long_poll` answers it."""
        server, users, _ = await self._setup()
        bob = users["bob"]["access_token"]
        await call(server, "PUT", f"/presence/{q(users['bob']['user_id'])}/status", bob,
                   {"presence": "offline"})
        builder = server.hs.sync_builder
        assert builder is not None
        bodies = {}
        for fast in (True, False):
            await call(server, "PUT", f"/presence/{q(users['bob']['user_id'])}/status", bob,
                       {"presence": "offline"})
            self._api(server).fast = fast
            since = str(builder.now())
            client = await _connect(server)
            self.addCleanup(client.transport.loseConnection)
            raw = await client.get(f"{SYNC}?timeout=20000&since={since}", bob)
            self.assertIn(b" 200 OK", raw.split(b"\r\n")[0])
            bodies[fast] = raw
            self.assertEqual(self._waiting(server), [])
        self.assertIn(b"next_batch", bodies[True])

    async def test_declined_requests_answer_as_the_general_path(self) -> None:
        """Malformed or unknown arguments, a bad Authorization header, a token the server
        must look up: the fast path declines and the general path answers."""
        server, users, _ = await self._setup()
        bob = users["bob"]["access_token"]
        builder = server.hs.sync_builder
        assert builder is not None
        now = builder.now()
        cases: list[tuple[str, str | None, bytes]] = [
            (f"{SYNC}?since=garbage&timeout=5", bob, b""),
            (f"{SYNC}?since={now}&timeout=-1", bob, b""),
            (f"{SYNC}?since={now}&timeout=5&filter=77", bob, b""),
            (f"{SYNC}?since={now}&timeout=5&set_presence=away", bob, b""),
            (f"{SYNC}?since={now}&timeout=5", "not-a-token", b""),
            (f"{SYNC}?since={now}&timeout=5", None, b"Authorization: Basic eDp5\r\n"),
            (f"{SYNC}?since={now}&timeout=5", None, b""),
        ]
        for target, token, extra in cases:
            answers = []
            for fast in (True, False):
                self._api(server).fast = fast
                client = await _connect(server)
                self.addCleanup(client.transport.loseConnection)
                answers.append(_without_date(await client.get(target, token, extra)))
            self.assertEqual(answers[0], answers[1], target)
            self.assertNotIn(b" 200 OK", answers[0].split(b"\r\n")[0], target)
        self.assertEqual(self._waiting(server), [])

    async def test_other_gets_are_not_looked_up(self) -> None:
        """A GET whose last path segment no fast route has is not matched a second time
        (for a fast handler) before `_handle` matches it."""
        server, users, room = await self._setup()
        api = self._api(server)
        await call(server, "GET", f"/rooms/{q(room)}/joined_members", users["bob"]["access_token"])
        await call(server, "GET", "/sync?filter=0&timeout=0", users["bob"]["access_token"])
        self.assertEqual(list(api._fast_routes), [b"/_matrix/client/v3/sync"])
        self.assertEqual(api._fast_ends, frozenset({b"sync"}))
