"""EventStore.persist_batch: a batch is written whole in as few round trips as it fits."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from roost.storage.database import Database, Txn
from roost.storage.events import EventRow, EventStore, NewStateGroup, RoomBatch, TxnIdConflict
from tests.postgres_harness import fresh_database
from tests.storage.test_database import counted

ROOM = "!room:example.org"
ALICE = "@alice:example.org"


class CountingDatabase(Database):
    """The real pool, with every transaction's queries counted (round trips but BEGIN and
    COMMIT), and whether each went in autocommit (then it had neither)."""

    sent: list[Any]
    autocommit: list[bool]

    def _transaction(self, fn: Any, args: Any, kwargs: Any) -> Any:
        def noting(txn: Txn, *more: Any) -> Any:
            txn._cursor = ModeCursor(txn._cursor, self.autocommit)
            return counted(fn, self.sent)(txn, *more)

        return super()._transaction(noting, args, kwargs)


class ModeCursor:
    """A cursor noting, for each query, whether its connection was in autocommit."""

    def __init__(self, cursor: Any, modes: list[bool]) -> None:
        self._cursor, self._modes = cursor, modes

    def execute(self, sql: Any, args: Any = None) -> None:
        self._modes.append(bool(self._cursor.connection.autocommit))
        self._cursor.execute(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def message(n: int, prev: str, txn_id: str | None = None, body: str = "hi") -> EventRow:
    return EventRow(
        event_id=f"$m{n}", room_id=ROOM, type="m.room.message", state_key=None, sender=ALICE,
        depth=10 + n, origin_server_ts=1_700_000_000_000 + n,
        pdu_json=json.dumps({"content": {"body": body}}, separators=(",", ":")), prev_event_ids=[prev],
        auth_event_ids=["$create", "$power", "$alice"], stream_ordering=100 + n, state_group=7,
        txn_key=(ALICE, "DEVICE", txn_id) if txn_id else None)


def member(n: int, prev: str, user: str) -> EventRow:
    return EventRow(
        event_id=f"$j{n}", room_id=ROOM, type="m.room.member", state_key=user, sender=user,
        depth=10 + n, origin_server_ts=1_700_000_000_000 + n, pdu_json="{}",
        prev_event_ids=[prev], auth_event_ids=["$create"], stream_ordering=100 + n,
        state_group=8, membership="join")


class PersistBatchTests(TestCase):
    async def _store(self) -> tuple[EventStore, CountingDatabase]:
        db = CountingDatabase(reactor, await fresh_database(self), 1, 2)
        db.sent, db.autocommit = [], []
        self.addCleanup(db.close)
        return EventStore(db), db

    async def _rows(self, db: Database, sql: str) -> list[tuple[Any, ...]]:
        return await db.read("r", sql)

    async def test_a_send_is_one_round_trip(self) -> None:
        store, db = await self._store()
        await store.persist_batch(RoomBatch(ROOM, [message(1, "$start", "t1")],
                                            extremities=["$m1"]))
        self.assertEqual(len(db.sent), 1)  # events, edges, extremities and txn id together
        self.assertEqual(db.autocommit, [True])  # its own transaction: no BEGIN, no COMMIT
        self.assertEqual(await self._rows(db, "SELECT event_id, stream_ordering, sender, pdu"
                                               " FROM events"),
                         [("$m1", 101, ALICE, '{"content":{"body":"hi"}}')])
        self.assertEqual(await self._rows(db, "SELECT prev_event_id FROM event_edges"),
                         [("$start",)])
        self.assertEqual(sorted(await self._rows(db, "SELECT auth_event_id FROM event_auth_edges")),
                         [("$alice",), ("$create",), ("$power",)])
        self.assertEqual(await self._rows(db, "SELECT event_id FROM forward_extremities"),
                         [("$m1",)])
        self.assertEqual(await self._rows(db, "SELECT txn_id, event_id FROM event_txn_ids"),
                         [("t1", "$m1")])

    async def test_extremities_are_replaced(self) -> None:
        store, db = await self._store()
        await store.persist_batch(RoomBatch(ROOM, [message(1, "$start", "t1")],
                                            extremities=["$m1"]))
        await store.persist_batch(RoomBatch(ROOM, [message(2, "$m1", "t2")],
                                            extremities=["$m2"]))
        await store.persist_batch(RoomBatch(ROOM, [], extremities=["$m2", "$other"]))
        self.assertEqual(
            await self._rows(db, "SELECT event_id FROM forward_extremities ORDER BY event_id"),
            [("$m2",), ("$other",)])

    async def test_a_used_txn_id_refuses_the_whole_batch(self) -> None:
        store, db = await self._store()
        await store.persist_batch(RoomBatch(ROOM, [message(1, "$start", "t1")],
                                            extremities=["$m1"]))
        # Three sends in one batch, the middle one a retry of t1: nothing of it is kept.
        batch = RoomBatch(ROOM, [message(2, "$m1", "t2"), message(3, "$m2", "t1"),
                                 message(4, "$m3", "t4")],
                          [NewStateGroup(8, None, 0, {("m.room.member", ALICE): "$j5"})],
                          {("m.room.member", ALICE): ("$j5", "join")}, ["$m4"])
        with self.assertRaises(TxnIdConflict):
            await store.persist_batch(batch)
        held = {"events": 1, "event_edges": 1, "event_auth_edges": 3, "state_groups": 0,
                "state_group_entries": 0, "current_state": 0}
        for table, count in held.items():
            self.assertEqual(await self._rows(db, f"SELECT count(*) FROM {table}"), [(count,)],
                             table)
        self.assertEqual(await self._rows(db, "SELECT event_id FROM forward_extremities"),
                         [("$m1",)])
        self.assertEqual(await self._rows(db, "SELECT txn_id FROM event_txn_ids"), [("t1",)])

    async def test_a_large_batch_goes_in_parts_and_lands_whole(self) -> None:
        store, db = await self._store()
        body = "x" * 900  # about 1 KB an event: 100 events do not fit in one query
        events = [message(n, f"$m{n - 1}", f"t{n}", body) for n in range(1, 101)]
        events.insert(50, member(500, "$m50", "@bob:example.org"))
        groups = [NewStateGroup(8, None, 0, {("m.room.member", "@bob:example.org"): "$j500"})]
        await store.persist_batch(RoomBatch(
            ROOM, events, groups, {("m.room.member", "@bob:example.org"): ("$j500", "join")},
            ["$m100"]))
        self.assertGreater(len(db.sent), 3)
        self.assertNotIn(True, db.autocommit)  # in parts: between BEGIN and COMMIT
        self.assertTrue(all(len(q) < 40 * 1024 for q in db.sent))
        self.assertEqual(await self._rows(db, "SELECT count(*) FROM events"), [(101,)])
        self.assertEqual(await self._rows(db, "SELECT count(*) FROM event_edges"), [(101,)])
        self.assertEqual(await self._rows(db, "SELECT count(*) FROM event_txn_ids"), [(100,)])
        self.assertEqual(await self._rows(db, "SELECT user_id, membership FROM room_memberships"),
                         [("@bob:example.org", "join")])
        self.assertEqual(await self._rows(db, "SELECT event_id, membership FROM current_state"),
                         [("$j500", "join")])
        self.assertEqual(await self._rows(db, "SELECT state_group, event_id"
                                               " FROM state_group_entries"), [(8, "$j500")])
