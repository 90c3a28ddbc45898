"""The only user of psycopg2: a connection pool off the reactor thread.

Every piece of SQL runs inside `Database.run(desc, txn_fn, ...)`: the function
gets a `Txn` on a pool thread, and the whole function is one transaction. Reads
whose statements need no common snapshot may use `run_reads` / `read` /
`read_one` instead: the same, in autocommit (no BEGIN and COMMIT round trips). When
PostgreSQL reports a serialization failure or a deadlock the transaction is
rolled back and the function runs again, so transaction functions must be safe
to re-run. Callbacks registered with `txn.call_after` run on the reactor only
once the transaction has committed, which is how the stores tell the notifier.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extras
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorThreads

from roost.storage import sql_literals
from roost.storage.pool_threads import PoolThreads

logger = logging.getLogger(__name__)

R = TypeVar("R")

# SQLSTATEs worth a retry: serialization_failure, deadlock_detected.
_RETRY_CODES = {"40001", "40P01"}
MAX_ATTEMPTS = 8
# The most of a Statements writer's text sent at once (but a longer statement alone): the
# size events.EVENTS_PER_STATEMENT keeps one INSERT of events near.
STATEMENTS_BYTES = 32 * 1024


class Txn:
    """A cursor plus the callbacks to run once the transaction commits."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.after_commit: list[Callable[[], None]] = []

    def execute(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> None:
        self._cursor.execute(sql, args)

    def execute_values(self, sql: str, rows: Iterable[Sequence[Any]], page_size: int = 500) -> None:
        """Insert many rows in one statement: `VALUES %s` in sql is expanded."""
        psycopg2.extras.execute_values(self._cursor, sql, list(rows), page_size=page_size)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def query(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        self.execute(sql, args)
        return self._cursor.fetchall()

    def query_one(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> tuple[Any, ...] | None:
        self.execute(sql, args)
        return self._cursor.fetchone()

    def call_after(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the reactor thread after this transaction commits."""
        self.after_commit.append(callback)

    def statements(self, limit: int = STATEMENTS_BYTES) -> Statements:
        """A writer whose statements go to PostgreSQL together when it is sent (see
        Statements): for a transaction's writes whose results are not read one by one."""
        return Statements(self._cursor, limit)


class Statements:
    """Writes of one transaction sent to PostgreSQL as one query string: one round trip.

    psycopg2 runs each `execute` as a round trip of its own (a pool thread's send,
    wait and result, about a tenth of a millisecond of this process's CPU with
    Python's share of it), so a write of several statements whose row counts are
    not read in between is cheaper sent whole. Each statement is formatted here as
    `execute`/`execute_values` would send it (`mogrify`: psycopg2's own quoting)
    and the statements run in order, in the caller's transaction, as if sent one
    by one: an error in one aborts the transaction as before. The text sent at
    once stays under `limit` bytes unless one statement alone is larger (libpq
    keeps a connection's output buffer at the largest query it ever sent): past
    it, what is queued is sent first. `send` returns the row count of the last
    statement sent, which is how a caller reads one count (put that one last).
    """

    def __init__(self, cursor: Any, limit: int) -> None:
        self._cursor = cursor
        self._limit = limit
        self._queued: list[bytes] = []
        self._size = 0
        # Plain parameters (str, int, bool, None) written by sql_literals, the same bytes
        # as mogrify's at a fraction of its cost, where the connection reads them alike.
        self._plain = sql_literals.plain_connection(cursor.connection)

    def execute(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> None:
        written = sql_literals.statement(sql, args) if self._plain else None  # type: ignore[arg-type]
        self._add(written if written is not None else self._cursor.mogrify(sql, args))

    def execute_values(self, sql: str, rows: Iterable[Sequence[Any]], page_size: int = 500) -> None:
        """As Txn.execute_values: `VALUES %s` in sql expanded, `page_size` rows a statement."""
        head, marker, tail = sql.partition("VALUES %s")
        if not marker or "%s" in head or "%s" in tail:
            raise ValueError("execute_values wants one 'VALUES %s' and no other parameter")
        rows = list(rows)
        for start in range(0, len(rows), page_size):
            page = rows[start:start + page_size]
            written = sql_literals.values(head, page, tail) if self._plain else None
            if written is None:
                row = "(" + ",".join(["%s"] * len(page[0])) + ")"
                written = self._cursor.mogrify(
                    f"{head}VALUES {','.join([row] * len(page))}{tail}",
                    [value for values in page for value in values])
            self._add(written)

    def _add(self, statement: bytes) -> None:
        if self._queued and self._size + len(statement) > self._limit:
            self.send()
        self._queued.append(statement)
        self._size += len(statement) + 1

    def send(self) -> int:
        """Run what is queued; the row count of its last statement (0 if none was queued)."""
        if not self._queued:
            return 0
        query = b";".join(self._queued)
        self._queued, self._size = [], 0
        self._cursor.execute(query)
        return int(self._cursor.rowcount)


class Script(Statements):
    """A transaction's writes queued whole and sent by `Database.run_script`: as one query
    in autocommit when they fit in `limit` bytes (PostgreSQL runs the statements of one
    query as one transaction, all or nothing: no BEGIN and COMMIT round trips), else one
    `limit` at a time between BEGIN and COMMIT, as Statements would."""

    def _add(self, statement: bytes) -> None:
        self._queued.append(statement)
        self._size += len(statement) + 1

    def send(self) -> int:
        raise ValueError("a script is sent whole by Database.run_script")

    def _run(self, conn: Any) -> None:
        """On the pool thread: the queued writes, committed."""
        if not self._queued:
            return
        if self._size <= self._limit + 1:
            conn.autocommit = True
            try:
                self._cursor.execute(b";".join(self._queued))
            finally:
                if not conn.closed:
                    conn.autocommit = False
            return
        queued, self._queued, self._size = self._queued, [], 0
        chunk: list[bytes] = []
        size = 0
        for statement in queued:
            if chunk and size + len(statement) > self._limit:
                self._cursor.execute(b";".join(chunk))
                chunk, size = [], 0
            chunk.append(statement)
            size += len(statement) + 1
        self._cursor.execute(b";".join(chunk))  # committed by the caller (_transaction)


class Prepared:
    """A SELECT that each connection plans once and then runs by name.

    Planning a statement is server CPU on every run: for a /messages page (one SELECT
    with seven subqueries) about 0.2-0.5 ms of PostgreSQL's CPU, as much as executing
    it (bench/big_room.py). Prepared, the server parses and plans it the first time a
    connection runs it (PREPARE, once per connection and statement) and afterwards only
    executes it (EXECUTE with the arguments): the rows are those of the same SQL run
    plainly, whatever the plan.

    `settings` are planner settings applied to this statement alone (SET LOCAL, in the
    same round trip as EXECUTE); with `plan_cache_mode = force_generic_plan` among them
    the plan is made once for any arguments, so choose the SQL and settings such that
    one plan fits every argument (see storage/room_pages.py). The name is derived
    from the SQL and settings, so each distinct text is a statement of its own. Each
    holds its plan in every connection's backend (about 115 KB for a page's): prepare
    statements run often, in a few shapes.
    """

    _SETTING = re.compile(r"[a-z_]+ = [a-z_0-9]+")

    def __init__(self, sql: str, settings: Sequence[str] = ()) -> None:
        if sql.lstrip()[:6].upper() != "SELECT":
            raise ValueError(f"only SELECTs are prepared, not {sql[:40]!r}")
        bad = [s for s in settings if not self._SETTING.fullmatch(s)]
        if bad:
            raise ValueError(f"not a planner setting: {bad}")
        pieces = sql.split("%s")
        if any("%" in piece for piece in pieces):
            raise ValueError("a prepared statement's SQL has no % but its %s placeholders")
        self.sql = sql
        self.arity = len(pieces) - 1
        digest = hashlib.sha1("\0".join([sql, *settings]).encode("utf-8")).hexdigest()[:20]
        self.name = f"roost_{digest}"
        self.prepare_sql = f"PREPARE {self.name} AS " + "".join(
            piece + (f"${i}" if i <= self.arity else "") for i, piece in enumerate(pieces, 1))
        arguments = f" ({', '.join(['%s'] * self.arity)})" if self.arity else ""
        self.execute_sql = "".join(f"SET LOCAL {s}; " for s in settings) + \
            f"EXECUTE {self.name}{arguments}"


# connection -> names of the statements prepared on it. A connection that is replaced
# (cp_reconnect, a lost backend) is a new object, which starts with none.
_prepared_on: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_prepared_lock = threading.Lock()


class ReadTxn(Txn):
    """The txn of `Database.run_reads`: SELECTs only, each committed as it ends."""

    def query_prepared(self, prepared: Prepared, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of `prepared` run with `args`: prepared on this connection first if it
        is not yet. Only here, in autocommit: the SET LOCALs and EXECUTE are one implicit
        transaction (the settings end with it), and a statement the session no longer has
        (a DEALLOCATE, a pooler between) fails alone, so it is prepared again and sent once
        more, which inside a transaction would have aborted it."""
        if len(args) != prepared.arity:
            raise ValueError(f"{prepared.name} takes {prepared.arity} arguments, not {len(args)}")
        conn = self._cursor.connection
        with _prepared_lock:
            names = _prepared_on.setdefault(conn, set())
        for attempt in (1, 2):
            if prepared.name not in names:
                self._cursor.execute(prepared.prepare_sql)
                names.add(prepared.name)
            try:
                self._cursor.execute(prepared.execute_sql, args)
            except psycopg2.errors.InvalidSqlStatementName:
                if attempt == 2:
                    raise
                names.clear()  # the session has lost what it had prepared
                continue
            break
        return self._cursor.fetchall()

    def execute(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> None:
        if sql.lstrip()[:6].upper() != "SELECT":
            raise ValueError(f"run_reads runs SELECTs only, not {sql[:40]!r}")
        self._cursor.execute(sql, args)

    def execute_values(self, sql: str, rows: Iterable[Sequence[Any]], page_size: int = 500) -> None:
        raise ValueError("run_reads runs SELECTs only")

    def call_after(self, callback: Callable[[], None]) -> None:
        raise ValueError("run_reads commits nothing to call back after")

    def statements(self, limit: int = STATEMENTS_BYTES) -> Statements:
        raise ValueError("run_reads runs SELECTs only")


class Database:
    """A pool of psycopg2 connections, each used by one of the pool's threads (PoolThreads)."""

    def __init__(self, reactor: IReactorCore | IReactorThreads, dsn: str, pool_min: int = 2,
                 pool_max: int = 10, application_name: str | None = None):
        """`application_name` names this process's connections in pg_stat_activity: with
        several processes, whether any connection of an instance is left tells the
        others that none of its transactions can still commit (shared_streams.py).
        `pool_min` threads start at once, each opening its connection on its first
        transaction; more start as work needs them, up to `pool_max`, and end with their
        connections once idle for a while (pool_threads.IDLE_SECONDS)."""
        self._reactor = reactor
        self.dsn = dsn
        # (desc, seconds, committed) after each attempt; set when metrics are on.
        self.observer: Callable[[str, float, bool], None] | None = None
        # adbapi's pool keeps the connections (one per thread, opened and prepared on
        # first use); its own threads are not used (cp_min 0: none start).
        self._pool = adbapi.ConnectionPool(
            "psycopg2",
            dsn,
            cp_min=0,
            cp_max=pool_max,
            cp_reconnect=True,
            cp_noisy=False,
            cp_openfun=functools.partial(_prepare_connection, application_name=application_name),
            cp_reactor=reactor,
        )
        self._threads = PoolThreads(reactor, pool_max, pool_min,
                                    on_retire=self._close_thread_connection)

    def _close_thread_connection(self) -> None:
        """On a pool thread that is ending, idle (PoolThreads): close its connection, if
        it opened one; a later thread opens its own (a thread id can be reused)."""
        conn = self._pool.connections.get(self._pool.threadID())
        if conn is not None:
            self._pool.disconnect(conn)

    async def run(self, desc: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run `fn(txn, *args, **kwargs)` as one transaction, retrying on conflicts."""
        result, txn = await self._retrying(desc, self._transaction, fn, args, kwargs)
        for callback in txn.after_commit:
            try:
                callback()
            except Exception:
                logger.exception("%s: after-commit callback failed", desc)
        return result  # type: ignore[no-any-return]

    async def _retrying(self, desc: str, job: Callable[..., Any], *job_args: Any) -> Any:
        """`job(*job_args)` on a pool thread, run again after a serialization failure or a
        deadlock (the transaction was undone, so running it again is safe) up to
        MAX_ATTEMPTS times; every attempt is reported to the observer."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            start = time.monotonic()
            try:
                result = await self._threads.call(job, *job_args)
            except psycopg2.Error as e:
                self._observe(desc, start, False)
                if e.pgcode in _RETRY_CODES and attempt < MAX_ATTEMPTS:
                    logger.info("%s: retrying after %s (attempt %d)", desc, e.pgcode, attempt)
                    continue
                raise
            self._observe(desc, start, True)
            return result
        raise AssertionError("unreachable")

    def _transaction(self, fn: Callable[..., R], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> tuple[R, Txn]:
        """On a pool thread: `fn` as one transaction on the thread's connection, what
        adbapi's runInteraction did (with cp_reconnect): a cursor that cannot be opened
        means a new connection, tried once; after an error the transaction is rolled
        back and the connection checked (SELECT 1), and one that fails that leaves the
        pool, so the thread's next transaction connects afresh; the error is raised."""
        conn = self._pool.connect()
        try:
            cursor = conn.cursor()
        except Exception:
            logger.warning("opening a cursor failed; connecting again", exc_info=True)
            self._pool.disconnect(conn)
            conn = self._pool.connect()
            cursor = conn.cursor()
        try:
            txn = Txn(cursor)
            result = fn(txn, *args, **kwargs)
            cursor.close()
            conn.commit()
            return result, txn
        except BaseException:
            try:
                conn.rollback()
                with conn.cursor() as check:
                    check.execute("SELECT 1")
                conn.commit()
            except BaseException as e:
                logger.warning("rollback failed (%s); the connection is dropped", e)
                self._pool.disconnect(conn)
            raise

    async def run_script(self, desc: str, fn: Callable[..., R], *args: Any) -> R:
        """Run `fn(script, *args)`, which queues one transaction's writes on a `Script` and
        reads nothing back, then send them (see Script): a small write is one round trip
        instead of three (BEGIN, the writes, COMMIT). An error in any statement undoes all of
        them, as in `run`, whose retries (serialization failure, deadlock) and observer apply;
        `fn` runs again on a retry, so it must be safe to re-run."""
        return await self._retrying(desc, self._script, fn, args)  # type: ignore[no-any-return]

    def _script(self, fn: Callable[..., R], args: tuple[Any, ...]) -> R:
        """On a pool thread: `fn`'s script sent, with `_transaction`'s care of the connection."""
        def queue_and_send(txn: Txn) -> R:
            script = Script(txn._cursor, STATEMENTS_BYTES)
            result = fn(script, *args)
            script._run(txn._cursor.connection)
            return result

        result, _ = self._transaction(queue_and_send, (), {})
        return result

    async def read(self, desc: str, sql: str,
                   args: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one SELECT, run without BEGIN and COMMIT: see `run_reads`."""
        return await self.run_reads(desc, _query_all, sql, args)

    async def read_one(self, desc: str, sql: str,
                       args: Sequence[Any] | dict[str, Any] = ()) -> tuple[Any, ...] | None:
        """The first row of one SELECT (None if none), without BEGIN and COMMIT."""
        return await self.run_reads(desc, _query_first, sql, args)

    async def run_reads(self, desc: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run `fn(txn, *args, **kwargs)`, whose statements are all SELECTs, in autocommit.

        `run` costs three round trips for one SELECT (psycopg2 sends BEGIN and
        COMMIT on their own) and about twice the pool thread's CPU
        (bench/db_read.py). Here each statement is a transaction of its own with
        its own snapshot: exactly what the statements of a `run` see already,
        since every connection is READ COMMITTED (a snapshot per statement), but
        no lock outlives its statement. So use it only for reads whose statements
        need no snapshot shared between them and take no row locks (FOR UPDATE);
        the txn refuses anything but a SELECT. Retries on serialization failure
        or deadlock, the observer and the slow-transaction log are those of
        `run`; a connection found broken is replaced and `fn` run once more.
        """
        reconnected = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            lost: list[bool] = []
            start = time.monotonic()
            try:
                result = await self._threads.call(self._autocommit_reads, lost, fn, args,
                                                  kwargs)
            except psycopg2.Error as e:
                self._observe(desc, start, False)
                if e.pgcode in _RETRY_CODES and attempt < MAX_ATTEMPTS:
                    logger.info("%s: retrying after %s (attempt %d)", desc, e.pgcode, attempt)
                    continue
                if lost and not reconnected:  # reads are safe to send again, once
                    logger.info("%s: retrying on a new connection after %s", desc, e)
                    reconnected = True
                    continue
                raise
            self._observe(desc, start, True)
            return result
        raise AssertionError("unreachable")

    def _autocommit_reads(self, lost: list[bool], fn: Callable[..., R],
                          args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """On a pool thread: this thread's connection runs `fn` in autocommit, and goes
        back to transactions (what `run` expects of it) whatever happens; a broken
        connection leaves the pool, so the thread's next use connects afresh."""
        conn = self._pool.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                return fn(ReadTxn(cursor), *args, **kwargs)
        except psycopg2.Error:
            if conn.closed:
                lost.append(True)
                self._pool.disconnect(conn)
            raise
        finally:
            if not conn.closed:
                conn.autocommit = False

    def _observe(self, desc: str, start: float, committed: bool) -> None:
        duration = time.monotonic() - start
        if self.observer is not None:
            self.observer(desc, duration, committed)
        if committed and duration > 1.0:
            logger.warning("%s: slow transaction, %.3fs", desc, duration)

    async def current_database(self) -> str:
        """The database's name on its server (names this deployment, e.g. in Redis)."""
        row = await self.run("current_database",
                             lambda t: t.query_one("SELECT current_database()"))
        return str(row[0]) if row else ""

    def pool_state(self) -> tuple[int, int, int]:
        """(connections busy, connections open, transactions waiting for one): for metrics."""
        return self._threads.state()

    def close(self) -> defer.Deferred[None] | None:
        self._threads.stop()  # queued work done, threads ended: then the connections close
        self._pool.close()
        return None


def violated_constraint(error: BaseException) -> str | None:
    """The unique constraint a failed write violated, if that is why it failed."""
    if isinstance(error, psycopg2.errors.UniqueViolation):
        return error.diag.constraint_name  # type: ignore[no-any-return]
    return None


def _query_all(txn: Txn, sql: str, args: Sequence[Any] | dict[str, Any]) -> list[tuple[Any, ...]]:
    return txn.query(sql, args)


def _query_first(txn: Txn, sql: str, args: Sequence[Any] | dict[str, Any]) -> tuple[Any, ...] | None:
    return txn.query_one(sql, args)


def _prepare_connection(conn: Any, application_name: str | None = None) -> None:
    """READ COMMITTED as the session's default on the server, not through psycopg2's
    set_session: then psycopg2 sends a plain BEGIN, and switching the connection to
    autocommit and back for `Database.run_reads` costs no round trip (with set_session
    every switch sent a SET default_transaction_isolation)."""
    with conn.cursor() as cur:
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED")
        if application_name is not None:
            cur.execute("SET application_name = %s", (application_name,))
    conn.commit()


def application_name(instance: str) -> str:
    """The application_name of an instance's connections (see Database)."""
    return f"roost:{instance}"


def like_escape(term: str) -> str:
    """`term` with LIKE's wildcards escaped, to match it as a plain substring."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
