"""Where each writer of a shared stream has persisted up to, kept in PostgreSQL.

The replication bus carries positions as they move; this table is what a
process reads when it starts, and again after it lost Redis for a while,
so that it never waits on a message it missed. A row `(stream, instance,
position)` means: every write of `instance` to `stream` at or below
`position` has committed, and its later writes will be above it.

`changes_between` answers the catch-up's other question: which rooms and
users the writes in a range concern, so that the readers they wake are
exactly those a live announcement would have woken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from roost.storage.database import Database, Txn

_LOCK = 0x5354524D  # with the stream's hash: the advisory lock of `register` and `load`

# stream -> the query of (room, user) pairs its writes in (after, upto] concern.
_CONCERNS = {
    "events": "SELECT DISTINCT room_id, CASE WHEN type = 'm.room.member' THEN state_key END"
              " FROM events WHERE stream_ordering > %s AND stream_ordering <= %s",
    "receipts": "SELECT DISTINCT room_id, user_id FROM receipts"
                " WHERE stream_id > %s AND stream_id <= %s",
    "account_data": "SELECT DISTINCT NULL, user_id FROM account_data"
                    " WHERE stream_id > %s AND stream_id <= %s",
    "to_device": "SELECT DISTINCT NULL, user_id FROM device_inbox"
                 " WHERE stream_id > %s AND stream_id <= %s",
    "device_lists": "SELECT DISTINCT NULL, user_id FROM device_lists_stream"
                    " WHERE stream_id > %s AND stream_id <= %s",
}


class WriterFenced(RuntimeError):
    """The other processes passed this writer (took it for dead): its write is refused."""


class Fence:
    """A writer's hold on its place in one stream, checked inside its writing transactions.

    The others retire a writer only once no connection of its process is left
    (`retire_if_gone`), but a process cut off from PostgreSQL for a while is
    alive: it can reconnect and commit a write at a position the readers have
    since passed, a write no reader would ever read. `check`, run in the
    writing transaction, makes that impossible: it locks the writer's row
    (FOR KEY SHARE: the writer's own claim updates do not conflict with it)
    and refuses the transaction unless the row still has the epoch this
    writer registered with. A retirement locks the row FOR UPDATE and bumps
    the epoch, so either the write committed first (the retirement then sees
    the writer's connection, or reads the write as it passes it) or the write
    is refused.
    """

    def __init__(self, stream: str, instance: str, epoch: int,
                 on_lost: Callable[[], None] | None = None) -> None:
        self.stream = stream
        self.instance = instance
        self.epoch = epoch
        self._on_lost = on_lost

    def check(self, t: Txn) -> None:
        """In a writing transaction: raise WriterFenced if this writer was retired."""
        row = t.query_one("SELECT epoch FROM stream_positions WHERE stream = %s"
                          " AND instance = %s FOR KEY SHARE", (self.stream, self.instance))
        if row is None or int(row[0]) != self.epoch:
            raise WriterFenced(f"{self.instance} was retired from the {self.stream} stream"
                               " by the other processes")

    def lost(self) -> None:
        """On the reactor, after a refused transaction: tell the owner (stop the process)."""
        if self._on_lost is not None:
            self._on_lost()


T = TypeVar("T")


async def run_fenced(db: Database, desc: str, fence: Fence | None,
                     fn: Callable[[Txn], T]) -> T:
    """Run the writing transaction `fn` of a stream's writer, which commits only while the
    writer holds its place (`fence`; None: the only writer, nothing to check). Refused,
    the fence's owner is told (the process stops) and WriterFenced is raised."""
    if fence is None:
        return await db.run(desc, fn)

    def fenced(t: Txn) -> T:
        fence.check(t)
        return fn(t)

    try:
        return await db.run(desc, fenced)
    except WriterFenced:
        fence.lost()
        raise


class StreamPositionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self, stream: str) -> dict[str, int]:
        """Every stored writer's position in `stream`."""

        def txn(t: Txn) -> list[tuple[Any, ...]]:
            # shared: never at the same time as a writer's `register`
            t.execute("SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))", (_LOCK, stream))
            return t.query("SELECT instance, position FROM stream_positions WHERE stream = %s",
                           (stream,))

        rows = await self._db.run("stream_positions_load", txn)
        return {instance: int(position) for instance, position in rows}

    async def register(self, stream: str, instance: str, table_max: int
                       ) -> tuple[int, dict[str, int], int]:
        """A writer's start: its first claim, at or above every stored claim and `table_max`.

        Taken under a lock that `load` shares, so a process that loaded the
        claims without this writer's holds the others at or below what this
        writer starts from: nothing it writes can fall below a reader's
        position. Returns the start, the other writers' claims and this
        writer's new epoch (its Fence: an older process of the same name, if
        one is still alive, can write no more).
        """

        def txn(t: Txn) -> tuple[int, dict[str, int], int]:
            t.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK, stream))
            rows = t.query("SELECT instance, position FROM stream_positions WHERE stream = %s",
                           (stream,))
            claims = {i: int(p) for i, p in rows}
            start = max([table_max, *claims.values()])
            row = t.query_one(
                "INSERT INTO stream_positions (stream, instance, position, epoch)"
                " VALUES (%s, %s, %s, 1) ON CONFLICT (stream, instance) DO UPDATE"
                " SET position = EXCLUDED.position, epoch = stream_positions.epoch + 1"
                " RETURNING epoch", (stream, instance, start))
            claims.pop(instance, None)
            return start, claims, int(row[0]) if row else 1

        return await self._db.run("stream_positions_register", txn)

    async def store(self, stream: str, instance: str, position: int) -> None:
        """Record a writer's position; never moves a stored one backwards."""

        def txn(t: Txn) -> None:
            t.execute(
                "INSERT INTO stream_positions (stream, instance, position) VALUES (%s, %s, %s)"
                " ON CONFLICT (stream, instance) DO UPDATE"
                " SET position = GREATEST(stream_positions.position, EXCLUDED.position)",
                (stream, instance, position))

        await self._db.run("stream_positions_store", txn)

    async def retire_if_gone(self, stream: str, instance: str, connections_named: str,
                             claim: int) -> bool:
        """Move a writer's claim up to `claim` if it has no connection left.

        With no connection of that instance's process in pg_stat_activity, none
        of its transactions can still commit: it is as good as idle, and its
        readers may pass it. Stored under `register`'s lock, so the same instance
        starting again begins above `claim`. True if it was retired.
        """

        def txn(t: Txn) -> bool:
            t.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK, stream))
            # Waits for the writer's transactions holding its Fence; once passed, any
            # later one sees the new epoch and is refused.
            t.execute("SELECT 1 FROM stream_positions WHERE stream = %s AND instance = %s"
                      " FOR UPDATE", (stream, instance))
            row = t.query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                              " AND datname = current_database()",
                              (connections_named,))
            if row is None or row[0]:
                return False
            t.execute(
                "INSERT INTO stream_positions (stream, instance, position) VALUES (%s, %s, %s)"
                " ON CONFLICT (stream, instance) DO UPDATE"
                " SET position = GREATEST(stream_positions.position, EXCLUDED.position),"
                " epoch = stream_positions.epoch + 1",
                (stream, instance, claim))
            return True

        return await self._db.run("stream_positions_retire", txn)

    async def changes_between(self, stream: str, after: int, upto: int
                              ) -> tuple[set[str], set[str]] | None:
        """The rooms and users of `stream`'s writes in (after, upto]; None if not known."""
        sql = _CONCERNS.get(stream)
        if sql is None:
            return None
        rows = await self._db.run("stream_changes_between",
                                  lambda t: t.query(sql, (after, upto)))
        return ({room for room, _ in rows if room}, {user for _, user in rows if user})
