"""Schema migrations on an empty database, on a migrated one, and against a newer schema."""

from __future__ import annotations

import psycopg2
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from roost.storage.database import Database
from roost.storage.migrations import SchemaTooNewError, known_migrations, migrate
from tests.postgres_harness import empty_database, fresh_database


class MigrationTests(TestCase):
    async def _db(self, dsn: str) -> Database:
        db = Database(reactor, dsn, 1, 2)
        self.addCleanup(db.close)
        return db

    async def test_empty_database_gets_every_migration_in_order(self) -> None:
        db = await self._db(await empty_database(self))
        applied = await migrate(db)
        self.assertEqual(applied, len(known_migrations()))
        rows = await db.run("versions", lambda t: t.query(
            "SELECT version, name FROM schema_version ORDER BY version"))
        self.assertEqual([(m.version, m.name) for m in known_migrations()], rows)
        tables = await db.run("tables", lambda t: t.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        self.assertIn(("users",), tables)

    async def test_migrated_database_applies_nothing(self) -> None:
        db = await self._db(await fresh_database(self))
        self.assertEqual(await migrate(db), 0)
        self.assertEqual(await migrate(db), 0)

    async def test_newer_schema_refuses_to_start(self) -> None:
        db = await self._db(await fresh_database(self))
        newest = known_migrations()[-1].version
        await db.run("future", lambda t: t.execute(
            "INSERT INTO schema_version (version, name) VALUES (%s, 'future.sql')", (newest + 1,)))
        with self.assertRaises(SchemaTooNewError):
            await migrate(db)

    async def test_concurrent_migrators_apply_each_migration_once(self) -> None:
        from twisted.internet import defer

        dsn = await empty_database(self)
        first, second = await self._db(dsn), await self._db(dsn)
        counts = await defer.gatherResults([
            defer.ensureDeferred(migrate(first)), defer.ensureDeferred(migrate(second))])
        self.assertEqual(sum(counts), len(known_migrations()))

    async def test_failed_migration_leaves_nothing_half_applied(self) -> None:
        from roost.storage import migrations as m

        db = await self._db(await empty_database(self))
        await m.migrate(db)
        bad = m.Migration(len(known_migrations()) + 1, "9999_bad.sql",
                          "CREATE TABLE half_done (x INT); SELECT no_such_function();")
        with self.assertRaises(psycopg2.Error):
            await db.run("bad", m._apply_one, bad)
        rows = await db.run("check", lambda t: t.query(
            "SELECT 1 FROM pg_tables WHERE tablename = 'half_done'"))
        self.assertEqual(rows, [])
        version = await db.run("v", lambda t: t.query_one("SELECT MAX(version) FROM schema_version"))
        self.assertEqual(version[0], len(known_migrations()))
