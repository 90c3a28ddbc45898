"""The replication bus on a real Redis, and shared streams kept in step through it and PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from roost.storage.database import Database, application_name
from roost.storage.device_inbox import DeviceInboxStore
from roost.storage.device_lists import DeviceListStore
from roost.storage.notifier import Notifier, StreamChange
from roost.storage.redis import connect_redis
from roost.storage.replication import ReplicationBus
from roost.storage.shared_streams import Replication
from roost.storage.stream_positions import StreamPositionStore, WriterFenced
from roost.storage.sync_data import AccountDataStore, ReceiptStore
from tests.postgres_harness import fresh_database
from tests.redis_harness import _free_port, _spawn, _stop, _wait_until_up, redis_for_tests


async def until(condition: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    """Wait for `condition` (a liveness bound, not a speed assertion)."""
    for _ in range(int(limit / 0.02)):
        if condition():
            return
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"never happened: {what}")


async def retired_once_gone(store: StreamPositionStore, stream: str, instance: str,
                            limit: float = 15.0) -> bool:
    """`retire_if_gone` asked until it retires: a closed connection's backend leaves
    pg_stat_activity a moment after the client closes its socket (the backend exits on
    its own time), and until then the writer rightly still counts as alive."""
    for _ in range(int(limit / 0.02)):
        if await store.retire_if_gone(stream, instance, application_name(instance), 10):
            return True
        await task.deferLater(reactor, 0.02, lambda: None)
    return False


class BusTests(TestCase):
    async def _bus(self, host: str, port: int, channel: str, instance: str) -> ReplicationBus:
        publisher = await connect_redis(None, host, port, 0, None)
        self.addCleanup(lambda: defer.ensureDeferred(publisher.close()))
        bus = ReplicationBus(publisher, host, port, None, channel, instance)
        await bus.start()
        self.addCleanup(lambda: defer.ensureDeferred(bus.stop()))
        return bus

    async def test_messages_reach_the_other_processes_and_not_the_sender(self) -> None:
        host, port = await redis_for_tests(self)
        channel = f"roost-test:{uuid.uuid4().hex}:replication"
        a = await self._bus(host, port, channel, "a")
        b = await self._bus(host, port, channel, "b")
        heard: dict[str, list[Any]] = {"a": [], "b": []}
        a.subscribe("cache", lambda sender, m: heard["a"].append((sender, m["keys"])))
        b.subscribe("cache", lambda sender, m: heard["b"].append((sender, m["keys"])))
        a.publish("cache", {"keys": ["x"]})
        await until(lambda: heard["b"], "b hears a")
        self.assertEqual(heard, {"a": [], "b": [("a", ["x"])]})

    async def test_a_malformed_message_is_ignored(self) -> None:
        host, port = await redis_for_tests(self)
        channel = f"roost-test:{uuid.uuid4().hex}:replication"
        b = await self._bus(host, port, channel, "b")
        heard: list[Any] = []
        b.subscribe("cache", lambda sender, m: heard.append(m))
        raw = await connect_redis(None, host, port, 0, None)
        self.addCleanup(lambda: defer.ensureDeferred(raw.close()))
        await raw.execute("PUBLISH", channel, "not json")
        await raw.execute("PUBLISH", channel, '{"k": "cache", "i": "z", "keys": []}')
        await until(lambda: heard, "the good message")
        self.assertEqual(len(heard), 1)


@dataclass
class _Process:
    replication: Replication
    bus: ReplicationBus
    stream: Any
    heard: list[StreamChange]


class SharedStreamReplicationTests(TestCase):
    async def _process(self, db: Database, host: str, port: int, channel: str,
                       instance: str, table_max: int = 0) -> _Process:
        publisher = await connect_redis(None, host, port, 0, None)
        bus = ReplicationBus(publisher, host, port, None, channel, instance)
        replication = Replication(bus, db, reactor)
        stream = await replication.stream("receipts", table_max, ["a"])
        notifier = Notifier()
        heard: list[StreamChange] = []
        notifier.add_listener(heard.append)
        stream.announce_to(notifier, "receipts")
        await bus.start()
        replication.start()

        async def close() -> None:
            await replication.stop()
            await bus.stop()
            await publisher.close()

        self.addCleanup(lambda: defer.ensureDeferred(close()))
        return _Process(replication, bus, stream, heard)

    async def _db(self) -> Database:
        db = Database(reactor, await fresh_database(self), 1, 3)
        self.addCleanup(db.close)
        return db

    async def _receipt(self, store: ReceiptStore, stream: Any, room: str, user: str) -> int:
        [position] = stream.allocate(1)
        await store.put(room, user, "m.read", "", "$e", 1, position)
        stream.finish([position], rooms=[room], users=[user])
        return position

    async def test_a_follower_wakes_on_the_writers_commit_with_its_rooms(self) -> None:
        db = await self._db()
        host, port = await redis_for_tests(self)
        channel = f"roost-test:{uuid.uuid4().hex}:replication"
        writer = await self._process(db, host, port, channel, "a")
        follower = await self._process(db, host, port, channel, "r")
        position = await self._receipt(ReceiptStore(db), writer.stream, "!room", "@u")
        await until(lambda: follower.stream.current >= position, "the follower advances")
        self.assertIn("!room", {r for h in follower.heard for r in h.rooms})

    async def test_a_process_started_later_begins_at_the_stored_position(self) -> None:
        db = await self._db()
        host, port = await redis_for_tests(self)
        channel = f"roost-test:{uuid.uuid4().hex}:replication"
        writer = await self._process(db, host, port, channel, "a")
        position = await self._receipt(ReceiptStore(db), writer.stream, "!room", "@u")
        await writer.replication.stop()  # flushes the claim
        late = await self._process(db, host, port, channel, "r")
        self.assertEqual(late.stream.current, position)

    async def test_positions_survive_a_redis_restart(self) -> None:
        db = await self._db()
        port, workdir = _free_port(), Path(tempfile.mkdtemp(prefix="roost-redis-"))
        self.addCleanup(shutil.rmtree, workdir, True)
        server = await self._redis(workdir, port, "first")
        channel = "roost-test:replication"
        writer = await self._process(db, "127.0.0.1", port, channel, "a")
        follower = await self._process(db, "127.0.0.1", port, channel, "r")
        store = ReceiptStore(db)
        first = await self._receipt(store, writer.stream, "!one", "@u")
        await until(lambda: follower.stream.current >= first, "live delivery")
        _stop(server)
        await until(lambda: not follower.bus.connected, "the follower notices")
        # Redis is gone: the follower polls the stored positions instead, and the
        # readers it wakes are those of the rooms written meanwhile.
        second = await self._receipt(store, writer.stream, "!two", "@u")
        await until(lambda: follower.stream.current >= second, "catch-up by polling")
        self.assertIn("!two", {r for h in follower.heard for r in h.rooms})
        await self._redis(workdir, port, "second")
        await until(lambda: writer.bus.connected and follower.bus.connected, "reconnection", 30)
        received = follower.bus.received
        third = await self._receipt(store, writer.stream, "!three", "@u")
        await until(lambda: follower.stream.current >= third, "delivery after the restart")
        self.assertIn("!three", {r for h in follower.heard for r in h.rooms})
        await until(lambda: follower.bus.received > received, "over the bus again")

    async def _redis(self, workdir: Path, port: int, name: str) -> Any:
        proc = _spawn(workdir, port, workdir / f"{name}.log")
        self.addCleanup(_stop, proc)
        self.assertTrue(await _wait_until_up(proc, port))
        return proc


class DeadWriterTests(TestCase):
    """A writer killed with a write in flight stops holding readers back once its
    process has no connection left, and starts above them when it returns."""

    async def test_readers_pass_a_writer_whose_process_is_gone(self) -> None:
        dsn = await fresh_database(self)
        db_a = Database(reactor, dsn, 1, 2, application_name=application_name("a"))
        self.addCleanup(db_a.close)
        db_b = Database(reactor, dsn, 1, 2, application_name=application_name("b"))
        alive = Replication(None, db_a, reactor, instance="a", retire_after=0)
        self.addCleanup(lambda: defer.ensureDeferred(alive.stop()))
        writers = ["a", "b"]
        mine = await alive.stream("receipts", 0, writers)
        notifier = Notifier()
        heard: list[StreamChange] = []
        notifier.add_listener(heard.append)
        mine.announce_to(notifier, "receipts")
        doomed = await Replication(None, db_b, reactor, instance="b").stream(
            "receipts", 0, writers)
        [in_flight] = doomed.allocate(1)  # never finished: the process dies first
        [written] = mine.allocate(1)
        await ReceiptStore(db_a).put("!room", "@u", "m.read", "", "$e", 1, written)
        mine.finish([written], rooms=["!room"])
        for _ in range(2):  # seen unmoved, then looked for: its connections are there
            await alive.retire_stalled()
        self.assertLess(mine.current, written)
        db_b.close()  # kill -9: its connections go, with them any write in flight
        for _ in range(500):
            await alive.retire_stalled()
            if mine.current >= written:
                break
            await task.deferLater(reactor, 0.02, lambda: None)
        self.assertGreaterEqual(mine.current, written)
        self.assertIn("!room", {r for h in heard for r in h.rooms})
        # Back again, it allocates only above what readers have passed.
        db_again = Database(reactor, dsn, 1, 2, application_name=application_name("b"))
        self.addCleanup(db_again.close)
        back = await Replication(None, db_again, reactor, instance="b").stream(
            "receipts", 0, writers)
        [after] = back.allocate(1)
        self.assertGreater(after, mine.current)
        self.assertNotEqual(after, in_flight)

    async def test_a_writer_retired_while_alive_writes_no_more(self) -> None:
        dsn = await fresh_database(self)
        db = Database(reactor, dsn, 1, 2, application_name=application_name("b"))
        self.addCleanup(db.close)
        told: list[str] = []
        replication = Replication(None, db, reactor, instance="b", on_retired=told.append)
        self.addCleanup(lambda: defer.ensureDeferred(replication.stop()))
        stream = await replication.stream("receipts", 0, ["a", "b"])
        stream.allocate(1)
        # What the others store when they take it for dead (cut off from PostgreSQL).
        await StreamPositionStore(db).store("receipts", "b", 100)
        await replication.catch_up()
        self.assertEqual(told, ["receipts"])
        self.assertRaises(RuntimeError, stream.allocate, 1)

    async def test_a_retired_writer_can_commit_nothing_through_its_fence(self) -> None:
        """Its transactions check the fence: passed, its process reconnecting to PostgreSQL
        (its network back before it heard) commits nothing; it is told, and so is a new
        process under the same name fencing an old one."""
        dsn = await fresh_database(self)
        told: list[str] = []
        db_b = Database(reactor, dsn, 1, 2, application_name=application_name("b"))
        writer = Replication(None, db_b, reactor, instance="b", on_retired=told.append)
        stream = await writer.stream("events", 0, ["a", "b"])
        fence = stream.fence
        assert fence is not None
        await db_b.run("holds", fence.check)
        db_b.close()  # cut off: its connections are gone
        db_a = Database(reactor, dsn, 1, 2, application_name=application_name("a"))
        self.addCleanup(db_a.close)
        self.assertTrue(await retired_once_gone(StreamPositionStore(db_a), "events", "b"))
        back = Database(reactor, dsn, 1, 2, application_name=application_name("b"))
        self.addCleanup(back.close)
        with self.assertRaises(WriterFenced):
            await back.run("late", fence.check)
        fence.lost()
        self.assertEqual(told, ["events"])
        self.assertRaises(WriterFenced, stream.allocate, 1)
        # Restarted, it registers a new epoch and holds again, which fences any older one.
        again = await Replication(None, back, reactor, instance="b").stream(
            "events", 0, ["a", "b"])
        assert again.fence is not None
        await back.run("holds again", again.fence.check)
        with self.assertRaises(WriterFenced):
            await back.run("the old one", fence.check)

    async def test_the_other_streams_writes_check_their_fence_too(self) -> None:
        """Receipts, account data, to-device messages and device lists have every process
        as a writer: one passed while cut off commits none of them either (a late write
        below the readers' position would never be served: a to-device message below a
        device's acknowledged token would even be deleted unread)."""
        dsn = await fresh_database(self)
        told: list[str] = []
        db_b = Database(reactor, dsn, 1, 2, application_name=application_name("b"))
        writer = Replication(None, db_b, reactor, instance="b", on_retired=told.append)
        names = ["receipts", "account_data", "to_device", "device_lists"]
        fences = {}
        for name in names:
            fence = (await writer.stream(name, 0, ["a", "b"])).fence
            assert fence is not None
            fences[name] = fence
        db_b.close()  # cut off: its connections are gone
        db_a = Database(reactor, dsn, 1, 2, application_name=application_name("a"))
        self.addCleanup(db_a.close)
        for name in names:
            self.assertTrue(await retired_once_gone(StreamPositionStore(db_a), name, "b"))
        back = Database(reactor, dsn, 1, 2, application_name=application_name("b"))
        self.addCleanup(back.close)
        writes = {
            "receipts": lambda f: ReceiptStore(back).put("!r", "@u", "m.read", "", "$e", 1, 3, f),
            "account_data": lambda f: AccountDataStore(back).put("@u", "", "t", {}, 3, f),
            "to_device": lambda f: DeviceInboxStore(back).deliver([], 3, ("@u", "D", "t1"), None,
                                                                  f),
            "device_lists": lambda f: DeviceListStore(back, "x").add_changes([(3, "@u", "D")], f),
        }
        for name in names:
            with self.assertRaises(WriterFenced):
                await writes[name](fences[name])
        self.assertEqual(told, names)
        self.assertEqual(await ReceiptStore(db_a).max_stream_id(), 0)
        self.assertEqual(await AccountDataStore(db_a).max_stream_id(), 0)
        self.assertEqual(await DeviceListStore(db_a, "x").max_stream_id(), 0)
        # The refused to-device transaction kept nothing, not even its txn id.
        self.assertTrue(await writes["to_device"](None))

    async def test_a_writer_never_started_or_stopped_is_passed_without_waiting(self) -> None:
        dsn = await fresh_database(self)
        db = Database(reactor, dsn, 1, 2, application_name=application_name("a"))
        self.addCleanup(db.close)
        alive = Replication(None, db, reactor, instance="a")  # retire_after: 5 s, unused
        self.addCleanup(lambda: defer.ensureDeferred(alive.stop()))
        stream = await alive.stream("receipts", 0, ["a", "tool"])  # "tool" never ran
        [written] = stream.allocate(1)
        stream.finish([written], rooms=["!r"])
        self.assertLess(stream.current, written)
        await alive.retire_stalled()
        self.assertGreaterEqual(stream.current, written)
