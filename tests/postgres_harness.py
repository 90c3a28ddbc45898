"""Throwaway PostgreSQL databases for tests.

The tests use the PostgreSQL on 127.0.0.1:5432 when one answers, and
otherwise start a private embedded one (pgserver) for the test run. A
template database is migrated once per schema (its name carries a hash of
the migrations) and each test clones it, which takes milliseconds instead of
replaying every migration.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import tempfile
import uuid
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from roost.storage.database import Database
from roost.storage.migrations import known_migrations, migrate

_admin_dsn: str | None = None
_templates_ready: set[str] = set()
_embedded: Any = None


def admin_dsn() -> str:
    """A DSN for the `postgres` database of whichever server the tests use."""
    global _admin_dsn, _embedded
    if _admin_dsn is not None:
        return _admin_dsn
    local = os.environ.get("ROOST_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    try:
        psycopg2.connect(local, connect_timeout=3).close()
        _admin_dsn = local
    except psycopg2.OperationalError:
        import pgserver

        folder = tempfile.mkdtemp(prefix="roost-test-pg-")
        _embedded = pgserver.get_server(folder, cleanup_mode="delete")
        atexit.register(_embedded.cleanup)
        _admin_dsn = _embedded.get_uri("postgres")
    return _admin_dsn


def dsn_for(database: str) -> str:
    """The admin DSN pointed at another database (works for key=value and URI forms)."""
    base = admin_dsn()
    if base.startswith("postgres"):
        head, _, query = base.partition("?")
        head = head.rsplit("/", 1)[0] + "/" + database
        return head + ("?" + query if query else "")
    return base.replace("dbname=postgres", f"dbname={database}")


def _admin_execute(sql: str, args: tuple[Any, ...] = ()) -> None:
    conn = psycopg2.connect(admin_dsn())
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, args)
    finally:
        conn.close()


def _template_name() -> str:
    digest = hashlib.sha256()
    for m in known_migrations():
        digest.update(m.name.encode() + m.sql.encode())
    return f"roost_tmpl_{digest.hexdigest()[:16]}"


async def _ensure_template() -> str:
    """Create and migrate the template once; an advisory lock serialises test processes."""
    name = _template_name()
    if name in _templates_ready:
        return name
    lock = psycopg2.connect(admin_dsn())
    lock.autocommit = True
    try:
        with lock.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(7411)")
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                building = name + "_build"
                cur.execute(f'DROP DATABASE IF EXISTS "{building}"')
                cur.execute(f'CREATE DATABASE "{building}" TEMPLATE template0 ENCODING \'UTF8\'')
                db = Database(reactor, dsn_for(building), 1, 1)
                try:
                    await migrate(db)
                finally:
                    db.close()
                cur.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
            cur.execute("SELECT pg_advisory_unlock(7411)")
    finally:
        lock.close()
    _templates_ready.add(name)
    return name


async def fresh_database(testcase: TestCase) -> str:
    """A new migrated database for this test, dropped when the test ends; returns its DSN."""
    template = await _ensure_template()
    name = f"roost_test_{uuid.uuid4().hex[:16]}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    testcase.addCleanup(_admin_execute, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return dsn_for(name)


async def empty_database(testcase: TestCase) -> str:
    """A database with no schema at all, for testing migrations themselves."""
    name = f"roost_test_{uuid.uuid4().hex[:16]}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\'')
    testcase.addCleanup(_admin_execute, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return dsn_for(name)
