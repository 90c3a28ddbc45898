"""Issue 10, finding 5: a send never fails because someone else retried a transaction id.

After a restart nothing remembers recent txn ids in memory, so clients'
retries reach the engine, whose batch then conflicts on the txn table and is
undone. Before the fix the other sends of the batch were put back once, and a
second conflict (another retry arriving meanwhile) failed them with 500.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from roost.rooms.engine_types import NewEvent
from tests.server_harness import start_server

V3 = "/_matrix/client/v3"
ALICE = "@alice:test.roost"


class _RetriesArriveWhileSettling:
    """The real event store; each time the engine looks up stored txn ids after a
    conflict, another client retries the same txn id (up to `rounds` times)."""

    def __init__(self, store: Any, retry: Any, rounds: int) -> None:
        self._store, self._retry, self.rounds = store, retry, rounds
        self.retries: list[defer.Deferred[Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def txn_events(self, keys: Any) -> Any:
        if self.rounds > 0:
            self.rounds -= 1
            self.retries.append(self._retry())
        return await self._store.txn_events(keys)


class RetriedSendsTests(TestCase):
    async def test_retries_arriving_again_and_again_never_fail_other_senders(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=token)).body["room_id"]
        engine: Any = server.hs.engine
        key = (ALICE, "DEV", f"send/{room}/m.room.message/t1")

        def message(body: str, txn_key: Any = None) -> NewEvent:
            return NewEvent(ALICE, "m.room.message", {"msgtype": "m.text", "body": body},
                            txn_key=txn_key)

        first = await engine.append(room, message("first", key))

        def retry() -> defer.Deferred[Any]:
            return defer.ensureDeferred(engine.append(room, message("first", key)))

        store = _RetriesArriveWhileSettling(engine._events, retry, rounds=4)
        engine._events = store
        fresh = [defer.ensureDeferred(engine.append(room, message(f"fresh {i}")))
                 for i in range(3)]
        retried = retry()
        results = await defer.gatherResults(fresh, consumeErrors=True)
        self.assertEqual(len({e.event_id for e in results}), 3)
        self.assertEqual(store.rounds, 0)  # the conflicts did recur while the sends waited
        for answer in [retried, *store.retries]:
            self.assertEqual((await answer).event_id, first.event_id)
        bodies = await server.request("GET", V3 + f"/rooms/{room}/messages?dir=b&limit=10",
                                      token=token)
        self.assertEqual(sorted(e["content"]["body"] for e in bodies.body["chunk"]
                                if e["type"] == "m.room.message"),
                         ["first", "fresh 0", "fresh 1", "fresh 2"])

    async def test_one_new_txn_id_twice_in_one_batch_makes_one_event(self) -> None:
        server = await start_server(self)
        token = (await server.register("alice"))["access_token"]
        room = (await server.request("POST", V3 + "/createRoom", {}, token=token)).body["room_id"]
        engine: Any = server.hs.engine
        key = (ALICE, "DEV", f"send/{room}/m.room.message/twice")
        sends = [defer.ensureDeferred(engine.append(room, NewEvent(
            ALICE, "m.room.message", {"msgtype": "m.text", "body": body}, txn_key=key)))
            for body in ("a", "a")]
        sends.append(defer.ensureDeferred(engine.append(room, NewEvent(
            ALICE, "m.room.message", {"msgtype": "m.text", "body": "other"}))))
        a, again, other = await defer.gatherResults(sends, consumeErrors=True)
        self.assertEqual(a.event_id, again.event_id)
        self.assertNotEqual(other.event_id, a.event_id)
