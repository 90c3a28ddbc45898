"""Plain parameters written as SQL literals: the same bytes as psycopg2's mogrify, read back by
PostgreSQL as the values given, and mogrify for anything else."""

from __future__ import annotations

import random
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from roost.storage import sql_literals
from roost.storage.database import STATEMENTS_BYTES, Database, Statements, Txn
from tests.postgres_harness import admin_dsn, fresh_database

# Strings a quoting bug would show on: quotes, backslashes (ordinary characters in a
# standard string), what looks like an E'' string or a comment, %, control characters,
# U+2028, astral characters.
NASTY = ["", "'", "''", "\\", "\\'", "'\\", "a'b\\c", "E'\\x41'", "'; DROP TABLE w; --",
         "--", "/*", "%", "%s", "%%", "%(x)s", "\t\n\r\x01\x1f\x7f", "é\u2028\u2029\ufeff",
         "\U0001f600\U0010ffff", "$$", "$tag$", '"', "\\\\'\\\\"]


def random_text(rng: random.Random) -> str:
    pool = "ab'\\%s$-;/*\"E\t\n\x01\x7fé\u2028\U0001f600"
    return "".join(rng.choice(pool) for _ in range(rng.randrange(12)))


def random_plain(rng: random.Random) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 1, 2**31, -(2**63), 2**70, -(2**70),
                           rng.randrange(-(2**53), 2**53)])
    if kind == 2:
        return rng.choice(NASTY)
    return random_text(rng)


class LiteralTests(TestCase):
    def setUp(self) -> None:
        self.conn = psycopg2.connect(admin_dsn())
        self.addCleanup(self.conn.close)
        self.cursor = self.conn.cursor()

    def test_the_connections_here_read_plain_literals(self) -> None:
        self.assertTrue(sql_literals.plain_connection(self.conn))

    def test_statements_are_mogrifys_bytes(self) -> None:
        rng = random.Random(11)
        templates = ["SELECT %s", "INSERT INTO t (a, b, c) VALUES (%s, %s, %s)",
                     "UPDATE t SET a = %s WHERE b = %s AND c = 1-%s", "SELECT 1"]
        for _ in range(3000):
            sql = rng.choice(templates)
            args = tuple(random_plain(rng) for _ in range(sql.count("%s")))
            self.assertEqual(sql_literals.statement(sql, args), self.cursor.mogrify(sql, args),
                             (sql, args))
            self.assertEqual(sql_literals.statement(sql, list(args)),
                             self.cursor.mogrify(sql, list(args)))

    def test_values_are_mogrifys_bytes(self) -> None:
        rng = random.Random(12)
        for _ in range(500):
            width = rng.randrange(1, 5)
            rows = [tuple(random_plain(rng) for _ in range(width))
                    for _ in range(rng.randrange(1, 6))]
            row = "(" + ",".join(["%s"] * width) + ")"
            expected = self.cursor.mogrify(
                f"INSERT INTO t VALUES {','.join([row] * len(rows))} ON CONFLICT DO NOTHING",
                [v for r in rows for v in r])
            self.assertEqual(sql_literals.values("INSERT INTO t ", rows, " ON CONFLICT DO NOTHING"),
                             expected, rows)

    def test_postgresql_reads_back_what_was_written(self) -> None:
        rng = random.Random(13)
        values = NASTY + [random_plain(rng) for _ in range(300)]
        values = [v for v in values if not (type(v) is int and abs(v) >= 2**63)]
        written = sql_literals.statement(
            "SELECT " + ", ".join(["%s"] * len(values)), values)
        assert written is not None
        self.cursor.execute(written)
        self.assertEqual(list(self.cursor.fetchone()), values)

    def test_anything_else_is_left_to_mogrify(self) -> None:
        class Text(str):
            pass

        for value in (1.5, b"x", [1], {"a": 1}, Text("x"), "a\x00b", "\ud800", (1,)):
            self.assertIsNone(sql_literals.statement("SELECT %s", (value,)), value)
            self.assertIsNone(sql_literals.values("INSERT INTO t ", [(value,)], ""), value)
        self.assertIsNone(sql_literals.statement("SELECT '%%', %s", ("x",)))
        self.assertIsNone(sql_literals.statement("SELECT %(x)s", {"x": 1}))  # type: ignore[arg-type]
        self.assertIsNone(sql_literals.statement("SELECT %s, %s", ("x",)))
        self.assertIsNone(sql_literals.values("INSERT INTO t ", [("x",)], " WHERE a LIKE '%%'"))

    def test_statement_texts_are_not_kept(self) -> None:
        """Some texts are built per batch (push's statement grows with its rows): keeping
        each text seen (a first version cached them) held memory bench/memory.py saw."""
        import tracemalloc

        texts = ["INSERT INTO t VALUES " + ", ".join(["(%s, %s)"] * n) for n in range(1, 201)]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for text in texts:
                sql_literals.statement(text, ["x", 1] * text.count("(%s"))
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertLess(kept, 20_000)

    def test_a_connection_without_standard_strings_gets_mogrify(self) -> None:
        self.cursor.execute("SET standard_conforming_strings = off")
        self.assertFalse(sql_literals.plain_connection(self.conn))
        out = Statements(self.cursor, STATEMENTS_BYTES)
        out.execute("SELECT %s", ("a'b\\c",))
        self.assertEqual(out._queued, [self.cursor.mogrify("SELECT %s", ("a'b\\c",))])
        # psycopg2 doubles the backslash for this connection; the plain literal would not.
        self.assertNotEqual(out._queued[0], b"SELECT 'a''b\\c'")
        out.send()
        self.assertEqual(self.cursor.fetchone(), ("a'b\\c",))


class StatementsWriteLiteralsTests(TestCase):
    async def test_plain_parameters_are_written_without_mogrify(self) -> None:
        """A persist's ~30 parameters went through mogrify's adapters, on the pool thread,
        for every send; the same bytes are now written directly."""
        db = Database(reactor, await fresh_database(self), 1, 2)
        self.addCleanup(db.close)
        await db.run("t", lambda t: t.execute("CREATE TABLE w (k TEXT PRIMARY KEY, n BIGINT,"
                                              " b BOOLEAN)"))
        mogrified: list[Any] = []

        def write(txn: Txn) -> None:
            out = txn.statements()
            mogrify = out._cursor.mogrify
            out._cursor = _Counting(out._cursor, mogrified)
            out.execute("INSERT INTO w (k, n, b) VALUES (%s, %s, %s)", ("it's", -5, True))
            out.execute_values("INSERT INTO w (k, n, b) VALUES %s",
                               [("a\\b", 2**40, None), ("'; --", None, False)])
            self.assertEqual(len(mogrified), 0)
            out.execute("INSERT INTO w (k, n) VALUES (%s, %s)", ("f", 1.0))  # not plain
            self.assertEqual(mogrified, [("INSERT INTO w (k, n) VALUES (%s, %s)", ("f", 1.0))])
            self.assertEqual(out._queued[-1], mogrify("INSERT INTO w (k, n) VALUES (%s, %s)",
                                                      ("f", 1.0)))
            out.send()

        await db.run("w", write)
        self.assertEqual(await db.read("r", "SELECT k, n, b FROM w ORDER BY k"),
                         [("'; --", None, False), ("a\\b", 2**40, None), ("f", 1, None),
                          ("it's", -5, True)])

    async def test_a_nul_is_refused_as_before(self) -> None:
        db = Database(reactor, await fresh_database(self), 1, 2)
        self.addCleanup(db.close)

        def write(txn: Txn) -> None:
            txn.statements().execute("SELECT %s", ("a\x00b",))

        with self.assertRaises(ValueError):
            await db.run("w", write)


class _Counting:
    """A cursor noting each mogrify call."""

    def __init__(self, cursor: Any, calls: list[Any]) -> None:
        self._cursor, self._calls = cursor, calls

    def mogrify(self, sql: Any, args: Any = None) -> Any:
        self._calls.append((sql, args))
        return self._cursor.mogrify(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)
