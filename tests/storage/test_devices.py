"""DeviceStore's session check: concurrent checks share a query, each still sees the
database as it was when its request came in."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from roost.storage.accounts import UserStore
from roost.storage.database import Database
from roost.storage.devices import DeviceStore
from roost.storage.session_cache import MAX_AGE_S, REFRESH_AFTER_S
from tests.postgres_harness import fresh_database


class SessionAuthTests(TestCase):
    async def _store(self) -> tuple[Database, DeviceStore, list[str]]:
        db = Database(reactor, await fresh_database(self), 1, 4)
        self.addCleanup(db.close)
        queries: list[str] = []
        db.observer = lambda desc, _s, _ok: queries.append(desc)
        await db.run("seed", lambda txn: [
            txn.execute("INSERT INTO users (user_id, is_admin, created_ts) VALUES (%s, %s, 0)",
                        (f"@u{n}:hs", n == 0)) for n in range(3)] and [
            txn.execute("INSERT INTO devices (user_id, device_id) VALUES (%s, 'D')",
                        (f"@u{n}:hs",)) for n in range(3)] and [
            txn.execute("INSERT INTO sessions (session_id, user_id, device_id, created_ts)"
                        " VALUES (%s, %s, 'D', 0)", (f"s{n}", f"@u{n}:hs")) for n in range(3)])
        queries.clear()
        return db, DeviceStore(db), queries

    async def test_concurrent_checks_share_a_query_and_get_their_own_answers(self) -> None:
        _db, store, queries = await self._store()
        ids = [f"s{n % 4}" for n in range(20)]  # s3 does not exist
        answers = await defer.gatherResults(
            [defer.ensureDeferred(store.session_auth(i)) for i in ids])
        expected = {"s0": ("@u0:hs", "D", True), "s1": ("@u1:hs", "D", False),
                    "s2": ("@u2:hs", "D", False), "s3": None}
        self.assertEqual(answers, [expected[i] for i in ids])
        # The first starts a query at once; the nineteen arriving meanwhile share the next.
        self.assertEqual(queries, ["session_auth", "session_auth"])

    async def test_a_check_arriving_after_a_logout_sees_it(self) -> None:
        """And the row the first check read is not kept: it raced the logout."""
        db, store, queries = await self._store()
        # The first check's query reads the row, then its answer is held back until the
        # logout has committed: the order that matters, made certain rather than hoped for.
        gate: defer.Deferred[None] = defer.Deferred()
        real_read = db.read

        async def held_read(desc: str, sql: str, args=()):  # type: ignore[no-untyped-def]
            result = await real_read(desc, sql, args)
            if desc == "session_auth" and not gate.called:
                await gate
            return result

        db.read = held_read  # type: ignore[method-assign]
        first = defer.ensureDeferred(store.session_auth("s1"))
        while queries.count("session_auth") < 1:  # its query has run
            await deferLater(reactor, 0.01)
        await store.end_session("s1", delete_device=False)
        after = defer.ensureDeferred(store.session_auth("s1"))  # arrived after the logout
        gate.callback(None)
        self.assertEqual(await first, ("@u1:hs", "D", False))  # read before the logout
        self.assertIsNone(await after)
        self.assertIsNone(store.cached_session("s1"))
        self.assertIsNone(await store.session_auth("s1"))
        self.assertEqual(queries.count("session_auth"), 3)

    async def test_live_sessions_are_kept_and_every_revoking_write_drops_them(self) -> None:
        db, store, queries = await self._store()
        for session in ("s0", "s1", "s2"):
            await store.session_auth(session)
        queries.clear()
        self.assertEqual(await store.session_auth("s1"), ("@u1:hs", "D", False))
        self.assertEqual(queries, [])  # from memory
        await store.end_session("s1", delete_device=False)
        self.assertIsNone(await store.session_auth("s1"))
        await store.delete_devices("@u2:hs", ["D"])
        self.assertIsNone(await store.session_auth("s2"))
        await UserStore(db).deactivate("@u0:hs")
        self.assertIsNone(await store.session_auth("s0"))


class SessionRefreshTests(TestCase):
    """A session in use is read again in the background before it is too old to serve."""

    _store = SessionAuthTests._store

    async def _aged_store(self) -> tuple[Database, DeviceStore, list[str], list[float]]:
        db, store, queries = await self._store()
        now = [1000.0]
        store.sessions._monotonic = lambda: now[0]  # the cache's clock, moved by the test
        for session in ("s1", "s2"):
            await store.session_auth(session)
        queries.clear()
        return db, store, queries, now

    async def _settled(self, queries: list[str], count: int) -> None:
        for _ in range(1000):  # a liveness bound, not a timing: the read has run
            if queries.count("session_auth") >= count:
                break
            await deferLater(reactor, 0.01)
        await deferLater(reactor, 0.01)

    async def test_a_session_past_its_refresh_age_is_served_and_read_again_behind(self) -> None:
        _db, store, queries, now = await self._aged_store()
        now[0] += REFRESH_AFTER_S + 0.1
        answer = store.session_auth("s1")  # from memory: no query to wait for
        self.assertEqual(await answer, ("@u1:hs", "D", False))
        await self._settled(queries, 1)
        now[0] += MAX_AGE_S - REFRESH_AFTER_S  # past the first read's age, not the second's
        self.assertEqual(store.cached_session("s1"), ("@u1:hs", "D", False))
        self.assertIsNone(store.cached_session("s2"))  # not in use: it just ages out
        self.assertEqual(queries, ["session_auth"])

    async def test_a_session_ended_without_an_announcement_is_forgotten_by_the_read(self) -> None:
        db, store, queries, now = await self._aged_store()
        await db.run("operator", lambda t: t.execute(
            "DELETE FROM sessions WHERE session_id = 's1'"))
        now[0] += REFRESH_AFTER_S + 0.1
        await store.session_auth("s1")  # still served (within MAX_AGE_S), read again behind
        await self._settled(queries, 1)
        self.assertIsNone(store.cached_session("s1"))
        self.assertIsNone(await store.session_auth("s1"))


class LastSeenTests(TestCase):
    async def test_gathered_in_memory_written_in_one_statement_never_going_back(self) -> None:
        db = Database(reactor, await fresh_database(self), 1, 2)
        self.addCleanup(db.close)
        await db.run("seed", lambda txn: txn.execute(
            "INSERT INTO users (user_id, created_ts) VALUES ('@u:hs', 0)") or [txn.execute(
            "INSERT INTO devices (user_id, device_id, last_seen_ts, last_seen_ip)"
            " VALUES ('@u:hs', %s, %s, '10.0.0.1')", (d, ts)) for d, ts in (("A", 100), ("B", 500))])
        store, other = DeviceStore(db), DeviceStore(db)  # `other`: another process, say
        queries: list[str] = []
        db.observer = lambda desc, _s, _ok: queries.append(desc)
        store.seen("@u:hs", "A", 200, "10.0.0.2")
        store.seen("@u:hs", "A", 300, "10.0.0.3")
        store.seen("@u:hs", "B", 400, "10.0.0.4")  # older than what is stored
        store.seen("@u:hs", "GONE", 400, None)  # a device deleted meanwhile
        mine = {d.device_id: (d.last_seen_ts, d.last_seen_ip) for d in await store.list_devices("@u:hs")}
        self.assertEqual(mine, {"A": (300, "10.0.0.3"), "B": (500, "10.0.0.1")})
        theirs = await other.get_device("@u:hs", "A")
        assert theirs is not None
        self.assertEqual(theirs.last_seen_ts, 100)
        queries.clear()
        await store.flush_seen()
        await store.flush_seen()  # nothing new: no statement
        self.assertEqual(queries, ["flush_last_seen"])
        stored = {d.device_id: (d.last_seen_ts, d.last_seen_ip) for d in await other.list_devices("@u:hs")}
        self.assertEqual(stored, {"A": (300, "10.0.0.3"), "B": (500, "10.0.0.1")})
