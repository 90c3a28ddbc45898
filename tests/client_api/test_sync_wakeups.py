"""Who a change wakes (client_api/sync.py `Watch`): everyone whose sync it would change,
and no one else: a presence change wakes only those who share a joined room with its user."""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from roost.client_api.sync_waiter import ChangeWaiter
from tests.server_harness import RunningServer, q, start_server

V3 = "/_matrix/client/v3"


def _frozen_clock() -> task.Clock:
    clock = task.Clock()
    clock.advance(reactor.seconds())  # type: ignore[attr-defined]
    return clock


class PresenceWakeTests(TestCase):
    async def _server(self) -> tuple[RunningServer, dict[str, str], ChangeWaiter]:
        server = await start_server(self, clock=_frozen_clock())
        tokens = {n: (await server.register(n))["access_token"]
                  for n in ("alice", "bob", "carol", "dave")}
        shared = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                       token=tokens["alice"])).body["room_id"]
        joined = await server.request("POST", V3 + f"/rooms/{shared}/join", {},
                                      token=tokens["bob"])
        assert joined.status == 200, joined.body
        # carol is alone in a room of her own; dave is invited to the shared room only.
        await server.request("POST", V3 + "/createRoom", {}, token=tokens["carol"])
        invited = await server.request("POST", V3 + f"/rooms/{shared}/invite",
                                       {"user_id": "@dave:test.roost"}, token=tokens["alice"])
        assert invited.status == 200, invited.body
        builder = server.hs.sync_builder
        assert builder is not None
        return server, tokens, ChangeWaiter(server.hs.notifier, server.hs.clock,
                                            builder._user_rooms)

    async def _set_status(self, server: RunningServer, token: str, status: str) -> None:
        resp = await server.request(
            "PUT", V3 + f"/presence/{q('@alice:test.roost')}/status",
            {"presence": "online", "status_msg": status}, token=token)
        assert resp.status == 200, resp.body

    async def _watch_all(self, server: RunningServer, waiter: ChangeWaiter) -> dict[str, list[bool]]:
        """Each of bob, carol and dave waits as a long poll does."""
        builder = server.hs.sync_builder
        assert builder is not None
        fired: dict[str, list[bool]] = {}
        for name in ("bob", "carol", "dave"):
            await builder._user_rooms.rooms(f"@{name}:test.roost")  # held: armed at once
            fired[name] = []
            watch = waiter.watch(f"@{name}:test.roost", 60, fired[name].append, self.fail)
            self.addCleanup(watch.cancel)
            self.assertIsNotNone(watch._rooms)
        return fired

    async def test_presence_wakes_only_those_sharing_a_joined_room(self) -> None:
        server, tokens, waiter = await self._server()
        builder = server.hs.sync_builder
        assert builder is not None
        await builder._user_rooms.rooms("@alice:test.roost")  # alice's rooms are known here
        fired = await self._watch_all(server, waiter)
        await self._set_status(server, tokens["alice"], "here")
        self.assertEqual(fired, {"bob": [True], "carol": [], "dave": []})
        # And bob's sync does carry it, as nobody else's would.
        body = (await server.request("GET", V3 + "/sync", token=tokens["bob"])).body
        self.assertIn("@alice:test.roost",
                      [e["sender"] for e in body["presence"]["events"]])
        carol = (await server.request("GET", V3 + "/sync", token=tokens["carol"])).body
        self.assertNotIn("@alice:test.roost",
                         [e["sender"] for e in carol["presence"]["events"]])

    async def test_presence_of_a_user_whose_rooms_are_not_known_wakes_everyone(self) -> None:
        server, tokens, waiter = await self._server()
        builder = server.hs.sync_builder
        assert builder is not None
        await builder._user_rooms.rooms("@alice:test.roost")
        await server.request("POST", V3 + "/createRoom", {}, token=tokens["alice"])
        self.assertIsNone(builder._user_rooms.cached("@alice:test.roost"))  # dropped
        fired = await self._watch_all(server, waiter)
        await self._set_status(server, tokens["alice"], "here")
        self.assertEqual(fired, {"bob": [True], "carol": [True], "dave": [True]})



class BatchedWakeTests(TestCase):
    """Readers woken by a new event wait for the builder's preparation together."""

    async def _setup(self) -> tuple[RunningServer, dict[str, str], str]:
        server = await start_server(self, clock=_frozen_clock())
        tokens = {n: (await server.register(n))["access_token"] for n in ("alice", "bob", "erin")}
        room = (await server.request("POST", V3 + "/createRoom", {"preset": "public_chat"},
                                     token=tokens["alice"])).body["room_id"]
        for name in ("bob", "erin"):
            joined = await server.request("POST", V3 + f"/rooms/{room}/join", {},
                                          token=tokens[name])
            assert joined.status == 200, joined.body
        return server, tokens, room

    async def _watch(self, server: RunningServer, waiter: ChangeWaiter,
                     names: list[str]) -> dict[str, list[bool]]:
        builder = server.hs.sync_builder
        assert builder is not None
        fired: dict[str, list[bool]] = {}
        for name in names:
            await builder._user_rooms.rooms(f"@{name}:test.roost")
            fired[name] = []
            watch = waiter.watch(f"@{name}:test.roost", 60, fired[name].append, self.fail)
            self.addCleanup(watch.cancel)
        return fired

    async def _send(self, server: RunningServer, token: str, room: str, txn: str) -> None:
        resp = await server.request("PUT", V3 + f"/rooms/{room}/send/m.room.message/{txn}",
                                    {"msgtype": "m.text", "body": "hi"}, token=token)
        assert resp.status == 200, resp.body

    async def test_readers_are_held_until_prepared_then_woken_together(self) -> None:
        server, tokens, room = await self._setup()
        asked: list[int] = []
        ready: defer.Deferred[None] = defer.Deferred()

        def prepare(position: int) -> defer.Deferred[None]:
            asked.append(position)
            return ready

        waiter = ChangeWaiter(server.hs.notifier, server.hs.clock,
                              server.hs.sync_builder._user_rooms, prepare)  # type: ignore[union-attr,arg-type]
        fired = await self._watch(server, waiter, ["bob", "erin"])
        await self._send(server, tokens["alice"], room, "t1")
        self.assertEqual(fired, {"bob": [], "erin": []})  # both held
        self.assertEqual(asked, [server.hs.sync_builder.now().events])  # type: ignore[union-attr]
        ready.callback(None)
        self.assertEqual(fired, {"bob": [True], "erin": [True]})

    async def test_a_preparation_done_at_once_is_not_done_again_per_reader(self) -> None:
        """When what the readers wait for is there already (the events' push evaluation
        was stored with them), the first reader's preparation serves the others: each of
        one change's readers is woken, with one preparation, and the next change prepares
        again."""
        server, tokens, room = await self._setup()
        asked: list[int] = []

        def prepare(position: int) -> defer.Deferred[None]:
            asked.append(position)
            return defer.succeed(None)

        waiter = ChangeWaiter(server.hs.notifier, server.hs.clock,
                              server.hs.sync_builder._user_rooms, prepare)  # type: ignore[union-attr,arg-type]
        fired = await self._watch(server, waiter, ["bob", "erin"])
        await self._send(server, tokens["alice"], room, "t1")
        self.assertEqual(fired, {"bob": [True], "erin": [True]})
        first = server.hs.sync_builder.now().events  # type: ignore[union-attr]
        self.assertEqual(asked, [first])
        fired = await self._watch(server, waiter, ["bob", "erin"])
        await self._send(server, tokens["alice"], room, "t2")
        self.assertEqual(fired, {"bob": [True], "erin": [True]})
        self.assertEqual(asked, [first, server.hs.sync_builder.now().events])  # type: ignore[union-attr]

    async def test_a_failed_preparation_still_wakes_the_readers(self) -> None:
        server, tokens, room = await self._setup()

        def prepare(position: int) -> defer.Deferred[None]:
            return defer.fail(RuntimeError("the window could not be read"))

        waiter = ChangeWaiter(server.hs.notifier, server.hs.clock,
                              server.hs.sync_builder._user_rooms, prepare)  # type: ignore[union-attr,arg-type]
        fired = await self._watch(server, waiter, ["bob"])
        await self._send(server, tokens["alice"], room, "t1")
        self.assertEqual(fired, {"bob": [True]})

    async def test_the_builder_prepares_the_new_events_once_for_all(self) -> None:
        """With the real preparation: one read of the new events, then every woken long
        poll answers with the event and its unread count."""
        server, tokens, room = await self._setup()
        builder = server.hs.sync_builder
        assert builder is not None
        for name in ("bob", "erin"):  # online now, and the window starts
            first = await server.request("GET", V3 + "/sync", token=tokens[name])
            await server.request("GET", V3 + f"/sync?since={q(first.body['next_batch'])}"
                                 "&timeout=0", token=tokens[name])
        since = builder.text(builder.now())
        polls = {name: defer.ensureDeferred(server.request(
            "GET", V3 + f"/sync?since={q(since)}&timeout=60000", token=tokens[name]))
            for name in ("bob", "erin")}
        await task.deferLater(reactor, 0.2, lambda: None)
        loads = builder._recent.loads
        await self._send(server, tokens["alice"], room, "t1")
        for name, poll in polls.items():
            body = (await poll).body
            joined = body["rooms"]["join"][room]
            self.assertEqual([e["content"]["body"] for e in joined["timeline"]["events"]],
                             ["hi"], name)
            self.assertEqual(joined["unread_notifications"]["notification_count"], 1)
        self.assertEqual(builder._recent.loads - loads, 1)


class WaitTests(TestCase):
    """`ChangeWaiter.wait`, what a long poll waits on: a Deferred whose cancelling (the
    client went away) leaves nothing behind, and which fires False at the timeout."""

    async def test_cancelling_a_wait_removes_its_listener_and_timeout(self) -> None:
        server = await start_server(self, clock=_frozen_clock())
        builder = server.hs.sync_builder
        assert builder is not None
        clock = server.hs.clock
        assert isinstance(clock, task.Clock)
        waiter = ChangeWaiter(server.hs.notifier, clock, builder._user_rooms)
        user = (await server.register("alice"))["user_id"]
        await builder._user_rooms.rooms(user)  # held: the watch is armed at once
        listeners = len(server.hs.notifier._listeners)
        calls = len(clock.getDelayedCalls())
        waiting = waiter.wait(user, 30)
        self.assertEqual(len(server.hs.notifier._listeners), listeners + 1)
        self.assertEqual(len(waiter.deadlines), 1)
        self.assertEqual(len(clock.getDelayedCalls()), calls + 1)  # the queue's one timer
        waiting.cancel()
        self.assertEqual(len(server.hs.notifier._listeners), listeners)
        self.assertEqual(len(waiter.deadlines), 0)
        with self.assertRaises(defer.CancelledError):
            await waiting
        # An uncancelled wait fires False at its timeout, and leaves nothing either.
        waiting = waiter.wait(user, 30)
        clock.advance(29.999)
        self.assertFalse(waiting.called)
        clock.advance(0.001)
        self.assertIs(await waiting, False)
        self.assertEqual(len(server.hs.notifier._listeners), listeners)
        self.assertEqual(len(waiter.deadlines), 0)
        self.assertEqual(len(clock.getDelayedCalls()), calls)
