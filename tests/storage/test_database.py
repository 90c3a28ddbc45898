"""The connection pool: transactions are all-or-nothing and retried on conflicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from roost.storage.database import Database, Prepared, Txn
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


class ReadsWithoutTransactionTests(TestCase):
    """`Database.read`/`read_one`/`run_reads`: SELECTs in autocommit, on the same pool."""

    async def _db(self) -> Database:
        # One pool thread: every call uses the same connection, which the tests inspect.
        db = Database(reactor, await fresh_database(self), 1, 1)
        self.addCleanup(db.close)
        await db.run("t", lambda t: t.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INT)"))
        await db.run("t", lambda t: t.execute("INSERT INTO kv VALUES ('a', 1), ('b', 2)"))
        return db

    def assert_connections_back_in_transaction_mode(self, db: Database) -> None:
        connections = list(db._pool.connections.values())
        self.assertEqual(len(connections), 1)
        for conn in connections:
            self.assertFalse(conn.autocommit)
            self.assertEqual(conn.info.transaction_status,
                             psycopg2.extensions.TRANSACTION_STATUS_IDLE)

    async def test_reads_return_rows_and_run_without_begin(self) -> None:
        db = await self._db()
        self.assertEqual(await db.read("r", "SELECT k, v FROM kv ORDER BY k"),
                         [("a", 1), ("b", 2)])
        self.assertEqual(await db.read_one("r", "SELECT v FROM kv WHERE k = %s", ("b",)), (2,))
        self.assertIsNone(await db.read_one("r", "SELECT v FROM kv WHERE k = 'z'"))
        # Without BEGIN the statement's transaction starts with the statement; inside
        # `run` it started at the BEGIN sent before it.
        same_start = ("SELECT xact_start = query_start FROM pg_stat_activity"
                      " WHERE pid = pg_backend_pid()")
        self.assertEqual(await db.read_one("r", same_start), (True,))
        self.assertEqual(await db.run("r", lambda t: t.query_one(same_start)), (False,))
        self.assert_connections_back_in_transaction_mode(db)

    async def test_run_after_a_read_is_still_one_transaction(self) -> None:
        db = await self._db()
        await db.read("r", "SELECT 1")

        def txn_fn(txn):
            txn.execute("INSERT INTO kv VALUES ('c', 3)")
            txn.execute("INSERT INTO kv VALUES ('a', 9)")  # duplicate key: all rolled back

        with self.assertRaises(psycopg2.IntegrityError):
            await db.run("dup", txn_fn)
        self.assertEqual(await db.read("r", "SELECT k FROM kv ORDER BY k"), [("a",), ("b",)])

    async def test_errors_reach_the_caller_and_leave_nothing_open(self) -> None:
        db = await self._db()
        with self.assertRaises(psycopg2.errors.UndefinedTable):
            await db.read("r", "SELECT * FROM no_such_table")
        self.assert_connections_back_in_transaction_mode(db)
        self.assertEqual(await db.read_one("r", "SELECT count(*) FROM kv"), (2,))

        def fails(txn):
            txn.query("SELECT 1")
            raise KeyError("in the function")

        with self.assertRaises(KeyError):
            await db.run_reads("r", fails)
        self.assert_connections_back_in_transaction_mode(db)

    async def test_only_selects_run_without_a_transaction(self) -> None:
        db = await self._db()
        with self.assertRaises(ValueError):
            await db.read("w", "DELETE FROM kv")
        with self.assertRaises(ValueError):
            await db.run_reads("w", lambda t: t.execute("UPDATE kv SET v = 0"))
        with self.assertRaises(ValueError):
            await db.run_reads("w", lambda t: t.call_after(lambda: None))
        self.assertEqual(await db.read("r", "SELECT v FROM kv ORDER BY k"), [(1,), (2,)])
        self.assert_connections_back_in_transaction_mode(db)

    async def test_serialization_failure_is_retried_and_observed(self) -> None:
        db = await self._db()
        await db.run("t", lambda t: t.execute(
            "CREATE SEQUENCE tries; CREATE FUNCTION flaky() RETURNS bigint AS $$"
            " DECLARE n bigint := nextval('tries'); BEGIN IF n < 3 THEN"
            " RAISE EXCEPTION USING ERRCODE = 'serialization_failure'; END IF; RETURN n;"
            " END $$ LANGUAGE plpgsql"))
        seen: list[tuple[str, bool]] = []
        db.observer = lambda desc, seconds, committed: seen.append((desc, committed))
        self.assertEqual(await db.read_one("flaky", "SELECT flaky()"), (3,))
        self.assertEqual(seen, [("flaky", False), ("flaky", False), ("flaky", True)])
        self.assert_connections_back_in_transaction_mode(db)

    async def test_a_lost_connection_is_replaced_and_the_read_sent_again(self) -> None:
        db = await self._db()
        (pid,) = await db.read_one("pid", "SELECT pg_backend_pid()")
        other = Database(reactor, db.dsn, 1, 1)
        self.addCleanup(other.close)
        self.assertEqual(await other.read_one("kill", "SELECT pg_terminate_backend(%s)", (pid,)),
                         (True,))
        # The pool's connection is dead; the read notices, reconnects, and answers.
        (new_pid,) = await db.read_one("pid", "SELECT pg_backend_pid()")
        self.assertNotEqual(new_pid, pid)
        self.assert_connections_back_in_transaction_mode(db)
        self.assertEqual(await db.run("r", lambda t: t.query("SELECT count(*) FROM kv")), [(2,)])

    async def test_a_read_fails_when_the_connection_cannot_be_replaced(self) -> None:
        db = await self._db()
        seen: list[bool] = []
        db.observer = lambda desc, seconds, committed: seen.append(committed)
        # The read ends its own connection, and every new one, so both attempts fail.
        with self.assertRaises(psycopg2.OperationalError):
            await db.read("suicide", "SELECT pg_terminate_backend(pg_backend_pid())")
        self.assertEqual(seen, [False, False])
        self.assertEqual(await db.read_one("r", "SELECT count(*) FROM kv"), (2,))
        self.assert_connections_back_in_transaction_mode(db)


class CountingCursor:
    """A transaction's cursor that counts the queries sent through it (round trips)."""

    def __init__(self, cursor: Any, sent: list[bytes | str]) -> None:
        self._cursor, self._sent = cursor, sent

    def execute(self, sql: Any, args: Any = None) -> None:
        self._sent.append(sql)
        self._cursor.execute(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def counted(fn: Callable[..., Any], sent: list[bytes | str]) -> Callable[..., Any]:
    """`fn` as a transaction function whose queries are counted into `sent`."""

    def run(txn: Txn, *args: Any) -> Any:
        txn._cursor = CountingCursor(txn._cursor, sent)
        return fn(txn, *args)

    return run


# Values whose quoting must come out as psycopg2's own: quotes, backslashes, percent
# signs, NULL, booleans, arrays, non-ASCII, integers past 32 bits.
AWKWARD = [
    ("q'uote", None, True, ["a'b", 'c"d', None], 2**40),
    ("back\\slash %s %% %(x)s", 0, False, [], -(2**53)),
    ("ünï\u2028cödé 🎉", -1, None, ["\\", "%"], 7),
]


class StatementsTests(TestCase):
    """`Txn.statements()`: writes sent together, as if sent one by one."""

    async def _db(self) -> Database:
        db = Database(reactor, await fresh_database(self), 1, 2)
        self.addCleanup(db.close)
        await db.run("t", lambda t: t.execute(
            "CREATE TABLE w (k TEXT PRIMARY KEY, n INT, b BOOLEAN, a TEXT[], big BIGINT);"
            " CREATE TABLE w2 (LIKE w INCLUDING ALL)"))
        return db

    async def test_statements_run_in_order_in_one_round_trip(self) -> None:
        db = await self._db()
        await db.run("t", lambda t: t.execute("INSERT INTO w (k, n) VALUES ('x', 1), ('y', 2)"))
        sent: list[bytes | str] = []

        def write(txn: Txn) -> int:
            out = txn.statements()
            # Each sees the one before: the key deleted first can be inserted again.
            out.execute("DELETE FROM w WHERE k = %s", ("x",))
            out.execute("INSERT INTO w (k, n) VALUES (%s, %s)", ("x", 10))
            out.execute_values("INSERT INTO w (k, n) VALUES %s ON CONFLICT DO NOTHING",
                               [("y", 20), ("z", 30), ("v", 40)])
            return out.send()

        # The row count of the last statement: two of its three rows were new.
        self.assertEqual(await db.run("w", counted(write, sent)), 2)
        self.assertEqual(len(sent), 1)
        self.assertEqual(await db.read("r", "SELECT k, n FROM w ORDER BY k"),
                         [("v", 40), ("x", 10), ("y", 2), ("z", 30)])

    async def test_values_come_out_as_execute_values_writes_them(self) -> None:
        db = await self._db()

        def write(txn: Txn) -> None:
            out = txn.statements()
            out.execute_values("INSERT INTO w (k, n, b, a, big) VALUES %s", AWKWARD, page_size=2)
            out.send()
            txn.execute_values("INSERT INTO w2 (k, n, b, a, big) VALUES %s", AWKWARD)

        await db.run("w", write)
        stored = await db.read("r", "SELECT * FROM w ORDER BY k")
        self.assertEqual(stored, await db.read("r", "SELECT * FROM w2 ORDER BY k"))
        self.assertEqual(sorted(stored), sorted((k, n, b, a, big) for k, n, b, a, big in AWKWARD))

    async def test_a_long_write_goes_in_parts_within_the_limit(self) -> None:
        db = await self._db()
        sent: list[bytes | str] = []

        def write(txn: Txn) -> int:
            out = txn.statements(limit=200)
            for i in range(20):
                out.execute("INSERT INTO w (k, n) VALUES (%s, %s)", (f"key{i:02}", i))
            out.execute("INSERT INTO w (k, n) VALUES (%s, %s)", ("x" * 500, -1))  # alone
            out.execute("UPDATE w SET n = n + 1 WHERE n >= 10")
            return out.send()

        self.assertEqual(await db.run("w", counted(write, sent)), 10)
        self.assertTrue(all(len(q) <= 200 for q in sent if b"xxxxx" not in q), sent)
        self.assertGreater(len(sent), 3)
        self.assertEqual(await db.read("r", "SELECT n FROM w ORDER BY n"),
                         [(-1,), *[(i,) for i in range(10)], *[(i + 1,) for i in range(10, 20)]])

    async def test_an_error_anywhere_rolls_back_every_part(self) -> None:
        db = await self._db()

        def write(txn: Txn) -> None:
            out = txn.statements(limit=100)
            for i in range(10):  # several parts sent before the failing one
                out.execute("INSERT INTO w (k, n) VALUES (%s, %s)", (f"key{i}", i))
            out.execute("INSERT INTO w (k, n) VALUES ('key3', 0)")  # duplicate key
            out.send()

        with self.assertRaises(psycopg2.IntegrityError):
            await db.run("w", write)
        self.assertEqual(await db.read("r", "SELECT count(*) FROM w"), [(0,)])

    async def test_nothing_queued_sends_nothing(self) -> None:
        db = await self._db()
        sent: list[bytes | str] = []
        self.assertEqual(await db.run("w", counted(lambda t: t.statements().send(), sent)), 0)
        self.assertEqual(sent, [])

    async def test_reads_without_a_transaction_write_nothing_this_way(self) -> None:
        db = await self._db()
        with self.assertRaises(ValueError):
            await db.run_reads("w", lambda t: t.statements())
        with self.assertRaises(ValueError):
            await db.run("w", lambda t: t.statements().execute_values(
                "INSERT INTO w (k, n) VALUES %s WHERE n > %s", [("a", 1)]))


class PreparedStatementTests(TestCase):
    """`Prepared` SELECTs run by `ReadTxn.query_prepared`: planned once per connection,
    the same rows as the SQL run plainly."""

    SQL = "SELECT k, v FROM kv WHERE v >= %s AND k = ANY(%s) ORDER BY k LIMIT %s"

    async def _db(self) -> Database:
        db = Database(reactor, await fresh_database(self), 1, 1)  # one connection
        self.addCleanup(db.close)
        await db.run("t", lambda t: t.execute(
            "CREATE TABLE kv (k TEXT PRIMARY KEY, v INT);"
            " INSERT INTO kv VALUES ('a', 1), ('b', 2), ('c', 3), ('d', 4)"))
        return db

    async def _prepared_here(self, db: Database) -> list[tuple[str, int, int]]:
        """(name, generic plans, custom plans) of the connection's prepared statements."""
        return await db.read("p", "SELECT name, generic_plans, custom_plans"
                             " FROM pg_prepared_statements ORDER BY name")

    async def test_rows_are_those_of_the_plain_statement(self) -> None:
        db = await self._db()
        statement = Prepared(self.SQL, ("plan_cache_mode = force_generic_plan",))
        for args in [(1, ["a", "c", "d"], 2), (3, ["a", "b", "c", "d"], 10), (9, ["a"], 5),
                     (0, [], 3), (None, ["a"], 3)]:
            self.assertEqual(
                await db.run_reads("p", lambda t, a=args: t.query_prepared(statement, a)),
                await db.read("plain", self.SQL, args), args)

    async def test_prepared_once_per_connection_then_executed(self) -> None:
        db = await self._db()
        statement = Prepared(self.SQL, ("plan_cache_mode = force_generic_plan",))
        self.assertEqual(await self._prepared_here(db), [])
        for limit in range(1, 6):
            await db.run_reads("p", lambda t, n=limit: t.query_prepared(statement, (0, ["a"], n)))
        # One statement on the connection; each run used its one generic plan.
        self.assertEqual(await self._prepared_here(db), [(statement.name, 5, 0)])
        # Another text is another statement.
        other = Prepared(self.SQL.replace("ORDER BY k", "ORDER BY k DESC"))
        self.assertEqual(await db.run_reads("p", lambda t: t.query_prepared(other, (0, ["a", "b"], 1))),
                         [("b", 2)])
        self.assertEqual(sorted(n for n, _, _ in await self._prepared_here(db)),
                         sorted([statement.name, other.name]))

    async def test_settings_last_for_the_statement_alone(self) -> None:
        db = await self._db()
        statement = Prepared("SELECT current_setting('enable_bitmapscan'), %s::int",
                             ("enable_bitmapscan = off",))
        self.assertEqual(await db.run_reads("p", lambda t: t.query_prepared(statement, (7,))),
                         [("off", 7)])
        self.assertEqual(await db.read_one("s", "SELECT current_setting('enable_bitmapscan')"),
                         ("on",))
        self.assertEqual(await db.run("s", lambda t: t.query_one(
            "SELECT current_setting('enable_bitmapscan')")), ("on",))

    async def test_a_statement_the_session_lost_is_prepared_again(self) -> None:
        db = await self._db()
        statement = Prepared(self.SQL)
        run = lambda t: t.query_prepared(statement, (2, ["b", "c"], 9))  # noqa: E731
        self.assertEqual(await db.run_reads("p", run), [("b", 2), ("c", 3)])
        await db.run("drop", lambda t: t.execute("DEALLOCATE ALL"))
        self.assertEqual(await db.run_reads("p", run), [("b", 2), ("c", 3)])
        self.assertEqual([n for n, _, _ in await self._prepared_here(db)], [statement.name])

    async def test_a_new_connection_prepares_again(self) -> None:
        db = await self._db()
        statement = Prepared(self.SQL)
        run = lambda t: t.query_prepared(statement, (4, ["d"], 1))  # noqa: E731
        self.assertEqual(await db.run_reads("p", run), [("d", 4)])
        (pid,) = await db.read_one("pid", "SELECT pg_backend_pid()")
        other = Database(reactor, db.dsn, 1, 1)
        self.addCleanup(other.close)
        await other.read_one("kill", "SELECT pg_terminate_backend(%s)", (pid,))
        # The read that finds the connection dead is sent again on a new one.
        self.assertEqual(await db.run_reads("p", run), [("d", 4)])
        self.assertEqual([n for n, _, _ in await self._prepared_here(db)], [statement.name])

    async def test_only_selects_and_planner_settings(self) -> None:
        with self.assertRaises(ValueError):
            Prepared("DELETE FROM kv WHERE k = %s")
        with self.assertRaises(ValueError):
            Prepared("SELECT 1", ("enable_bitmapscan = off; DROP TABLE kv",))
        with self.assertRaises(ValueError):
            Prepared("SELECT k FROM kv WHERE k LIKE 'a%%' AND v = %s")
        db = await self._db()
        with self.assertRaises(ValueError):  # wrong number of arguments
            await db.run_reads("p", lambda t: t.query_prepared(Prepared(self.SQL), (1,)))
        self.assertEqual(await self._prepared_here(db), [])
