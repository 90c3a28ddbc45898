"""Numbered SQL migrations applied at start, one transaction each.

A migration file is `NNNN_description.sql` under `roost/storage/migrations/`.
Its number is recorded in `schema_version` in the same transaction as its
statements, so a crash between two migrations leaves the database at a known
version. A server refuses to start against a schema newer than it knows,
because running old code on a newer schema corrupts data silently.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from roost.storage.database import Database, Txn

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any fixed number: serialises concurrent migrators on one database.
_LOCK_ID = 0x526F6F7374


class SchemaTooNewError(Exception):
    """The database was migrated by a newer Roost than this one."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def known_migrations() -> list[Migration]:
    """The migrations shipped with this code, in order."""
    found = []
    for entry in resources.files("roost.storage").joinpath("migrations").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise AssertionError(f"migration numbers must run 1..n without gaps: {versions}")
    return found


def _current_version(txn: Txn) -> int:
    txn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    row = txn.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version")
    return int(row[0]) if row else 0


def _apply_one(txn: Txn, migration: Migration) -> bool:
    txn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
    if _current_version(txn) >= migration.version:
        return False  # another process applied it while we waited
    txn.execute(migration.sql)
    txn.execute(
        "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
        (migration.version, migration.name),
    )
    return True


def _check_version(txn: Txn) -> int:
    txn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
    return _current_version(txn)


async def migrate(db: Database) -> int:
    """Bring the schema up to date; return the number of migrations applied."""
    migrations = known_migrations()
    newest = migrations[-1].version if migrations else 0
    current = await db.run("schema_version", _check_version)
    if current > newest:
        raise SchemaTooNewError(
            f"database schema is at version {current}, but this Roost knows only up to {newest}"
        )
    applied = 0
    for migration in migrations:
        if migration.version <= current:
            continue
        if await db.run(f"migrate_{migration.version}", _apply_one, migration):
            logger.info("applied migration %s", migration.name)
            applied += 1
    return applied
