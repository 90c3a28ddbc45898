"""One test per finding of issue 10's concurrency part: each failed on the code before it.

1. a long poll missed its wake-up when a write became readable only after a
   slower, earlier write finished;
2. a kick was served inside rooms.join when the woken reader read a stale
   membership cache;
3. an event was skipped when rooms were created at once and syncs followed;
4. (tokens: tests/client_api/test_stream_token.py)
5. (retried sends: tests/rooms/test_engine_retries.py)
6. (embedded PostgreSQL: tests/storage/test_embedded_lifecycle.py)
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from tests.server_harness import RunningServer, start_server

V3 = "/_matrix/client/v3"


async def _sync(server: RunningServer, token: str, since: str | None = None,
                timeout_ms: int = 0) -> Any:
    query = f"?timeout={timeout_ms}" + (f"&since={since}" if since else "")
    resp = await server.request("GET", V3 + "/sync" + query, token=token)
    assert resp.status == 200, resp.body
    return resp.body


async def _send(server: RunningServer, token: str, room: str, body: str, txn: str) -> str:
    resp = await server.request("PUT", V3 + f"/rooms/{room}/send/m.room.message/{txn}",
                                {"msgtype": "m.text", "body": body}, token=token)
    assert resp.status == 200, resp.body
    return str(resp.body["event_id"])


class _GatedStore:
    """The real event store, with persisting in one room held until released."""

    def __init__(self, store: Any, room_id: str) -> None:
        self._store = store
        self._room_id = room_id
        self.entered: defer.Deferred[None] = defer.Deferred()
        self.release: defer.Deferred[None] = defer.Deferred()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def persist_batch(self, batch: Any) -> Any:
        if batch.room_id == self._room_id and not self.release.called:
            self.entered.callback(None)
            await self.release
        return await self._store.persist_batch(batch)


def _frozen_clock() -> task.Clock:
    """Long polls time out only if a test advances this clock: any answer is a wake-up."""
    clock = task.Clock()
    clock.advance(reactor.seconds())  # type: ignore[attr-defined]
    return clock


class MissedWakeUpTests(TestCase):
    async def test_a_write_readable_only_after_an_earlier_one_still_wakes_its_readers(
            self) -> None:
        clock = _frozen_clock()
        server = await start_server(self, clock=clock)
        alice = (await server.register("alice"))["access_token"]
        bob = (await server.register("bob"))["access_token"]
        slow = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        clock.advance(1)  # (two creations at one instant would make the same room id)
        shared = (await server.request("POST", V3 + "/createRoom", {"invite": ["@bob:test.roost"]},
                                       token=alice)).body["room_id"]
        await server.request("POST", V3 + f"/rooms/{shared}/join", {}, token=bob)
        since = (await _sync(server, bob))["next_batch"]
        engine: Any = server.hs.engine
        gate = _GatedStore(engine._events, slow)
        engine._events = gate
        poll = defer.ensureDeferred(_sync(server, bob, since, timeout_ms=15_000))
        # Alice's send in a room Bob is not in takes a position and is held unpersisted...
        held = defer.ensureDeferred(_send(server, alice, slow, "held", "h1"))
        await gate.entered
        # ...so her message to Bob, one position later, is written but not yet readable.
        sent = await _send(server, alice, shared, "for bob", "b1")
        await task.deferLater(reactor, 0.2, lambda: None)
        gate.release.callback(None)
        await held
        body = await poll
        timeline = body["rooms"]["join"].get(shared, {}).get("timeline", {}).get("events", [])
        self.assertEqual([e["event_id"] for e in timeline], [sent])

    # Before the fix the poll was never woken: it hung (the clock is frozen).
    test_a_write_readable_only_after_an_earlier_one_still_wakes_its_readers.timeout = 60  # type: ignore[attr-defined]


class KickServedAsJoinTests(TestCase):
    async def test_a_kick_wakes_the_kicked_users_poll_under_rooms_leave(self) -> None:
        server = await start_server(self, clock=_frozen_clock())
        alice = (await server.register("alice"))["access_token"]
        bob = (await server.register("bob"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=alice)).body["room_id"]
        for trial in range(12):
            await server.request("POST", V3 + f"/rooms/{room}/join", {}, token=bob)
            since = (await _sync(server, bob))["next_batch"]
            await _sync(server, bob, since)  # the membership cache holds Bob's rooms
            poll = defer.ensureDeferred(_sync(server, bob, since, timeout_ms=15_000))
            await task.deferLater(reactor, 0.05, lambda: None)
            kicked = await server.request("POST", V3 + f"/rooms/{room}/kick",
                                          {"user_id": "@bob:test.roost"}, token=alice)
            self.assertEqual(kicked.status, 200, kicked.body)
            body = await poll
            self.assertNotIn(room, body["rooms"]["join"], f"trial {trial}")
            last = body["rooms"]["leave"][room]["timeline"]["events"][-1]
            self.assertEqual((last["type"], last["content"]["membership"]),
                             ("m.room.member", "leave"), f"trial {trial}")


class SkippedEventTests(TestCase):
    async def test_rooms_created_at_once_deliver_every_event_exactly_once(self) -> None:
        # The real clock: rooms created at one instant of a frozen one would share an id.
        # Long polls wait 60 s; every answer before the end comes from a wake-up.
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        home = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        for trial in range(3):
            seen, rooms = await self._seven_rooms_at_once(server, alice, home, trial)
            for room in rooms:
                stored = await server.request(
                    "GET", V3 + f"/rooms/{room}/messages?dir=f&limit=100", token=alice)
                truth = [e["event_id"] for e in stored.body["chunk"]]
                self.assertEqual(seen.get(room), truth, f"trial {trial}")

    async def _seven_rooms_at_once(self, server: RunningServer, alice: str, home: str,
                                   trial: int) -> tuple[dict[str, list[str]], list[str]]:
        """Event ids per room that Alice's incremental syncs saw while she made seven rooms."""
        filt = '{"room":{"timeline":{"limit":100}}}'
        since = (await _sync(server, alice))["next_batch"]
        seen: dict[str, list[str]] = {}
        end = f"end {trial}"

        async def follow() -> None:
            nonlocal since
            while True:
                resp = await server.request(
                    "GET", V3 + f"/sync?timeout=60000&since={since}&filter={filt}", token=alice)
                body = resp.body
                finished = False
                for room_id, room in body["rooms"]["join"].items():
                    for e in room["timeline"]["events"]:
                        seen.setdefault(room_id, []).append(e["event_id"])
                        finished = finished or e["content"].get("body") == end
                since = body["next_batch"]
                if finished:
                    return

        rooms: list[str] = []

        async def create_and_mark(i: int) -> None:
            room = (await server.request("POST", V3 + "/createRoom", {},
                                         token=alice)).body["room_id"]
            rooms.append(room)
            await _send(server, alice, room, f"marker {trial}.{i}", f"m{trial}.{i}")

        follower = defer.ensureDeferred(follow())
        await defer.gatherResults([defer.ensureDeferred(create_and_mark(i)) for i in range(7)],
                                  consumeErrors=True)
        await _send(server, alice, home, end, f"end{trial}")
        await follower
        return seen, rooms

    test_rooms_created_at_once_deliver_every_event_exactly_once.timeout = 90  # type: ignore[attr-defined]


class StateAtTheTokenTests(TestCase):
    async def test_initial_state_is_the_state_at_the_token_not_a_head_ahead_of_it(
            self) -> None:
        server = await start_server(self)
        alice = (await server.register("alice"))["access_token"]
        slow = (await server.request("POST", V3 + "/createRoom", {}, token=alice)).body["room_id"]
        room = (await server.request("POST", V3 + "/createRoom", {"name": "before"},
                                     token=alice)).body["room_id"]
        engine: Any = server.hs.engine
        gate = _GatedStore(engine._events, slow)
        engine._events = gate
        held = defer.ensureDeferred(_send(server, alice, slow, "held", "h1"))
        await gate.entered
        # Persisted, and in the room's head, but not readable: the held write is before it.
        renamed = await server.request("PUT", V3 + f"/rooms/{room}/state/m.room.name",
                                       {"name": "after"}, token=alice)
        self.assertEqual(renamed.status, 200, renamed.body)
        first = await _sync(server, alice)
        names = [e["content"] for e in first["rooms"]["join"][room]["state"]["events"]
                 + first["rooms"]["join"][room]["timeline"]["events"]
                 if e["type"] == "m.room.name"]
        self.assertEqual(names, [{"name": "before"}])
        gate.release.callback(None)
        await held
        later = await _sync(server, alice, first["next_batch"])
        self.assertEqual([e["event_id"] for e in later["rooms"]["join"][room]["timeline"]
                          ["events"]], [renamed.body["event_id"]])
