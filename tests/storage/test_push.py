"""PushActionStore: its array literal (what PostgreSQL reads back is the list of ids given,
whatever characters the ids hold) and the batch write of push evaluation."""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from roost.storage.database import Database
from roost.storage.push import ActionRow, PushActionStore, text_array
from tests.postgres_harness import fresh_database


class TextArrayTests(TestCase):
    async def _read_back(self, values: list[str]) -> list[str]:
        db = Database(reactor, await fresh_database(self), 1, 2)
        self.addCleanup(db.close)
        row = await db.run("read", lambda txn: txn.query_one(
            "SELECT %s::text[]", (text_array(values),)))
        assert row is not None
        return list(row[0])

    async def test_plain_ids_round_trip(self) -> None:
        ids = [f"@user{n}:example.org" for n in range(50)]
        self.assertEqual(await self._read_back(ids), ids)

    async def test_quotes_backslashes_commas_and_braces_round_trip(self) -> None:
        ids = ['@a"b:hs', "@c\\d:hs", "@e,f:hs", "@{g}:hs", "@ h :hs", "@plain:hs", ""]
        self.assertEqual(await self._read_back(ids), ids)

    async def test_an_empty_list_is_an_empty_array(self) -> None:
        self.assertEqual(await self._read_back([]), [])


class RecordTests(TestCase):
    """A batch's write (one statement): every row, the senders' read positions (never moved
    back), the position; safe to run twice (the evaluator may, after a failed commit)."""

    async def _store(self) -> tuple[Database, PushActionStore]:
        db = Database(reactor, await fresh_database(self), 1, 2)
        self.addCleanup(db.close)
        return db, PushActionStore(db)

    async def test_rows_reads_and_position_are_stored_and_a_rerun_changes_nothing(self) -> None:
        db, store = await self._store()
        rows: list[ActionRow] = [
            (10, 0, "!r:hs", "$a", "main", '["notify"]', False, 1000, ["@b:hs", "@c:hs"]),
            (10, 1, "!r:hs", "$a", "main", '["notify",{"set_tweak":"highlight"}]', True, 1000,
             ['@d"q:hs']),
            (11, 0, "!s:hs", "$b", "$root", '["notify"]', False, 1001, ["@b:hs"]),
        ]
        reads = [("@a:hs", "!r:hs", "main", 10), ("@a:hs", "!s:hs", "$root", 11)]
        for _ in range(2):
            await store.record(rows, reads, 11)
        stored = await db.run("read", lambda t: t.query(
            "SELECT stream_ordering, n, room_id, event_id, thread_id, actions, highlight, ts,"
            " user_ids FROM push_actions ORDER BY stream_ordering, n"))
        self.assertEqual([(*r[:5], json.loads(r[5]), *r[6:8], list(r[8])) for r in stored],
                         [(*r[:5], json.loads(r[5]), *r[6:]) for r in rows])
        self.assertEqual(await self._reads(db), sorted(reads))
        self.assertEqual(await store.get_position(), 11)

    async def test_an_older_own_read_does_not_move_back_and_an_empty_batch_moves_the_position(
            self) -> None:
        db, store = await self._store()
        await store.record([], [("@a:hs", "!r:hs", "main", 20)], 20)
        await store.record([], [("@a:hs", "!r:hs", "main", 15), ("@e:hs", "!r:hs", "main", 21)],
                           21)
        self.assertEqual(await self._reads(db), [("@a:hs", "!r:hs", "main", 20),
                                                 ("@e:hs", "!r:hs", "main", 21)])
        await store.record([], [], 30)
        self.assertEqual(await store.get_position(), 30)

    async def _reads(self, db: Database) -> list[tuple[str, str, str, int]]:
        return [tuple(r) for r in await db.run("reads", lambda t: t.query(  # type: ignore[misc]
            "SELECT user_id, room_id, thread_id, stream_ordering FROM push_own_reads"
            " ORDER BY user_id, room_id"))]
