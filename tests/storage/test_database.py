"""The connection pool: transactions are all-or-nothing and retried on conflicts."""

from __future__ import annotations

import psycopg2
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from roost.storage.database import Database
from tests.postgres_harness import fresh_database


class DatabaseTests(TestCase):
    async def _db(self) -> Database:
        db = Database(reactor, await fresh_database(self), 1, 4)
        self.addCleanup(db.close)
        await db.run("t", lambda t: t.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INT)"))
        return db

    async def test_error_rolls_back_the_whole_transaction(self) -> None:
        db = await self._db()

        def txn_fn(txn):
            txn.execute("INSERT INTO kv VALUES ('a', 1)")
            txn.execute("INSERT INTO kv VALUES ('a', 2)")  # duplicate key

        with self.assertRaises(psycopg2.IntegrityError):
            await db.run("dup", txn_fn)
        self.assertEqual(await db.run("c", lambda t: t.query("SELECT * FROM kv")), [])

    async def test_serialization_failure_is_retried(self) -> None:
        db = await self._db()
        attempts = []

        def txn_fn(txn):
            attempts.append(1)
            txn.execute("INSERT INTO kv VALUES ('b', %s)", (len(attempts),))
            if len(attempts) < 3:
                txn.execute(
                    "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure'; END $$")
            return len(attempts)

        self.assertEqual(await db.run("retry", txn_fn), 3)
        self.assertEqual(await db.run("c", lambda t: t.query("SELECT v FROM kv")), [(3,)])

    async def test_after_commit_callbacks_run_only_on_commit(self) -> None:
        db = await self._db()
        ran = []

        def ok(txn):
            txn.execute("INSERT INTO kv VALUES ('c', 1)")
            txn.call_after(lambda: ran.append("ok"))

        def fails(txn):
            txn.call_after(lambda: ran.append("fails"))
            txn.execute("SELECT * FROM no_such_table")

        await db.run("ok", ok)
        with self.assertRaises(psycopg2.Error):
            await db.run("fails", fails)
        self.assertEqual(ran, ["ok"])
