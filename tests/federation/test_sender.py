"""The federation sender: batching, retries on a fake clock, a durable queue, EDUs.

The unit tests run a real homeserver (real PostgreSQL, real engine) with a
second sender attached to a fake transport and a fake clock; the homeserver's
own sender is stopped first so the two do not share the queue. The remote
member is appended straight through the engine (no remote server exists).
`OutageTests` at the end runs two real servers and needs the inbound
`/send` (the other half of federation).
Which servers get each event is tests/federation/test_destinations.py's.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.trial.unittest import TestCase

from roost.federation.sender import (
    MAX_PDUS_PER_TXN,
    POSITION_WRITE_S,
    EduSources,
    FederationSender,
)
from roost.federation.transport.client import RequestFailedError
from roost.rooms.engine import NewEvent
from roost.rooms.hashing import compute_event_id
from roost.rooms.versions import get_room_version
from roost.storage.federation_outbound import FederationOutboundStore
from roost.storage.room_state import RoomStateStore
from tests.federation.two_servers import V3, eventually, room_events, start_pair
from tests.server_harness import RunningServer, q, start_server

REMOTE = "remote.test"
BOB = f"@bob:{REMOTE}"


class FakeTransport:
    def __init__(self) -> None:
        self.fail = False
        self.calls: list[tuple[str, str, dict[str, Any], bool]] = []  # dest, txn, body, failed

    async def put_json(self, destination: str, path: str, body: Any, args: Any = None,
                       **options: Any) -> Any:
        failed = self.fail
        self.calls.append((destination, path.rsplit("/", 1)[1], body, failed))
        if failed:
            raise RequestFailedError("destination is down")
        return {"pdus": {}}

    def delivered_pdus(self) -> list[str]:
        return [_id(p) for _, _, body, failed in self.calls if not failed for p in body["pdus"]]

    def delivered_edus(self) -> list[dict[str, Any]]:
        return [e for _, _, body, failed in self.calls if not failed for e in body.get("edus", [])]


def _id(pdu: dict[str, Any]) -> str:
    return compute_event_id(pdu, get_room_version("11"))  # the fixture's rooms are v11


class SenderFixture:
    """`from_memory`: the sender takes local sends from the engine's memory, as wiring
    builds it; without, it reads every event back from storage."""

    def __init__(self, testcase: TestCase, from_memory: bool = True) -> None:
        self.testcase = testcase
        self.from_memory = from_memory
        self.clock = task.Clock()
        self.transport = FakeTransport()

    async def setup(self) -> None:
        self.server: RunningServer = await start_server(self.testcase)
        hs = self.server.hs
        assert hs.federation is not None and hs.federation.sender is not None
        await hs.federation.sender.stop()  # this test's sender owns the queue
        self.token = (await self.server.register("alice"))["access_token"]
        self.alice = f"@alice:{hs.config.server_name}"
        created = await self.server.request("POST", V3 + "/createRoom",
                                            {"preset": "public_chat", "room_version": "11"},
                                            token=self.token)
        self.room_id = created.body["room_id"]
        await hs.engine.append(self.room_id, NewEvent(BOB, "m.room.member",
                                                      {"membership": "join"}, BOB))
        self.store = FederationOutboundStore(hs.db)
        self.sender = await self.new_sender()

    async def new_sender(self, transport: FakeTransport | None = None) -> FederationSender:
        hs = self.server.hs
        sender = FederationSender(self.store, RoomStateStore(hs.db), hs.streams["events"],
                                  hs.notifier,
                                  transport or self.transport, hs.config.server_name, self.clock,
                                  min_retry_interval_ms=1000, max_retry_interval_ms=8000,
                                  recent=hs.engine.recent_local_events if self.from_memory
                                  else None)
        await sender.start()
        self.testcase.addCleanup(sender.stop)
        return sender

    async def send(self, n: int, prefix: str = "m") -> list[str]:
        ids = []
        for i in range(n):
            resp = await self.server.request(
                "PUT", f"{V3}/rooms/{q(self.room_id)}/send/m.room.message/{prefix}{i}",
                {"msgtype": "m.text", "body": f"{prefix} {i}"}, token=self.token)
            assert resp.status == 200, resp.body
            ids.append(resp.body["event_id"])
        return ids

    async def idle(self, sender: FederationSender) -> bool:
        return not sender.pending_work()


class BatchingTests(TestCase):
    async def test_events_go_in_order_in_transactions_of_at_most_50(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        f.transport.fail = True  # hold the first transaction so the rest pile up
        ids = await f.send(120)
        await eventually(lambda: _queued(f, 120))
        f.transport.fail = False
        f.clock.advance(1)
        await eventually(lambda: _async(len(f.transport.delivered_pdus()) == 120))
        self.assertEqual(f.transport.delivered_pdus(), ids)
        sizes = [len(body["pdus"]) for _, _, body, failed in f.transport.calls if not failed]
        self.assertTrue(all(size <= MAX_PDUS_PER_TXN for size in sizes), sizes)
        # The held transaction is retried as it was (same txn id, same PDUs); the rest
        # follow in full transactions.
        self.assertEqual(sum(sizes), 120)
        self.assertEqual(sizes[1:3], [50, 50])
        self.assertEqual({c[0] for c in f.transport.calls}, {REMOTE})
        for _, _, body, _ in f.transport.calls:
            self.assertEqual(body["origin"], f.server.hs.config.server_name)
        # Remote users' own events (bob's join) are never sent by us.
        self.assertNotIn(BOB, [p["sender"] for _, _, b, _ in f.transport.calls for p in b["pdus"]])

    async def test_local_only_rooms_send_nothing(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        other = await f.server.request("POST", V3 + "/createRoom", {}, token=f.token)
        await f.server.request("PUT", f"{V3}/rooms/{q(other.body['room_id'])}/send/m.room.message/x",
                               {"msgtype": "m.text", "body": "alone"}, token=f.token)
        ids = await f.send(1)
        await eventually(lambda: _async(len(f.transport.delivered_pdus()) == 1))
        self.assertEqual(f.transport.delivered_pdus(), ids)

    async def test_events_with_nothing_to_send_move_the_position_without_a_write_each(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        hs = f.server.hs
        alone = (await f.server.request("POST", V3 + "/createRoom", {}, token=f.token)).body
        writes: list[str] = []
        hs.db.observer = lambda desc, _s, _ok: writes.append(desc)
        self.addCleanup(setattr, hs.db, "observer", None)
        for i in range(5):
            await f.server.request("PUT", f"{V3}/rooms/{q(alone['room_id'])}/send/"
                                   f"m.room.message/alone{i}", {"msgtype": "m.text", "body": "x"},
                                   token=f.token)
        current = hs.streams["events"].current
        await eventually(lambda: _async(not f.sender.pending_work()))
        self.assertNotIn("fed_enqueue_pdus", writes)
        self.assertLess(await f.store.get_position() or 0, current)
        f.clock.advance(POSITION_WRITE_S)  # written a moment later, once
        await eventually(lambda: _stored_position_is(f, current))
        self.assertEqual(writes.count("fed_sender_set_position"), 1)
        # An event that is sent still moves the stored position in its own write.
        ids = await f.send(1)
        await eventually(lambda: _async(f.transport.delivered_pdus() == ids))
        await eventually(lambda: _stored_position_is(f, hs.streams["events"].current))


    async def test_messages_in_a_room_no_other_server_is_in_are_passed_without_a_task(self) -> None:
        """Under fan-out each such message was a task (a coroutine, its Deferred and the
        read loop's per-event coroutines) that queued nothing; now they are passed at
        once, with the same position and the same later write."""
        f = SenderFixture(self)
        await f.setup()
        hs = f.server.hs
        alone = (await f.server.request("POST", V3 + "/createRoom", {}, token=f.token)).body
        path = f"{V3}/rooms/{q(alone['room_id'])}/send/m.room.message"
        await f.server.request("PUT", f"{path}/first", {"msgtype": "m.text", "body": "x"},
                               token=f.token)  # its group's hosts become known
        await eventually(lambda: _async(not f.sender.pending_work()))
        spawned: list[object] = []
        real_spawn = f.sender._spawn
        f.sender._spawn = lambda coro: (spawned.append(coro), real_spawn(coro))[1]  # type: ignore[method-assign]
        for i in range(5):
            await f.server.request("PUT", f"{path}/m{i}", {"msgtype": "m.text", "body": "x"},
                                   token=f.token)
            self.assertEqual(f.sender._position, hs.streams["events"].current)
        self.assertEqual(spawned, [])
        f.clock.advance(POSITION_WRITE_S)
        await eventually(lambda: _stored_position_is(f, hs.streams["events"].current))
        # A room with another server's member still has its messages sent.
        ids = await f.send(1)
        await eventually(lambda: _async(f.transport.delivered_pdus() == ids))


class ReadingTests(TestCase):
    async def test_local_sends_are_not_read_back_from_storage(self) -> None:
        """Under fan-out each message was a read transaction of its own."""
        for from_memory, reads in ((True, 0), (False, 5)):
            f = SenderFixture(self, from_memory)
            await f.setup()
            hs = f.server.hs
            await eventually(lambda f=f: _async(not f.sender.pending_work()))  # type: ignore[misc]
            seen: list[str] = []
            hs.db.observer = lambda desc, _s, _ok, seen=seen: seen.append(desc)  # type: ignore[misc]
            self.addCleanup(setattr, hs.db, "observer", None)
            ids = []
            for i in range(5):  # one at a time: each is a batch of its own
                ids += await f.send(1, f"one{i}-")
                await eventually(lambda f=f, n=len(ids): _async(  # type: ignore[misc]
                    len(f.transport.delivered_pdus()) == n))
            self.assertEqual(f.transport.delivered_pdus(), ids)
            self.assertEqual(seen.count("fed_events_after"), reads, from_memory)


class RetryTests(TestCase):
    async def test_backoff_doubles_to_the_cap_and_never_gives_up(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        f.transport.fail = True
        ids = await f.send(3)
        await eventually(lambda: _async(len(f.transport.calls) >= 1))
        await eventually(lambda: f.store.get_retry(REMOTE))
        intervals = []
        for attempt in range(1, 7):
            retry = await eventually(lambda a=attempt: _retry_count(f, a))
            intervals.append(retry.retry_interval_ms)
            calls = len(f.transport.calls)
            f.clock.advance(retry.retry_interval_ms / 1000 - 0.01)
            await task.deferLater(_reactor(), 0.05, lambda: None)
            self.assertEqual(len(f.transport.calls), calls, "retried before its time")
            f.clock.advance(0.01)
            await eventually(lambda c=calls: _async(len(f.transport.calls) > c))
        self.assertEqual(intervals, [1000, 2000, 4000, 8000, 8000, 8000])
        # Every retry is the same transaction, as the spec asks.
        self.assertEqual(len({txn for _, txn, _, _ in f.transport.calls}), 1)
        await eventually(lambda: _retry_count(f, 7))
        f.transport.fail = False
        f.clock.advance(8)
        await eventually(lambda: _async(len(f.transport.delivered_pdus()) == 3))
        self.assertEqual(f.transport.delivered_pdus(), ids)
        await eventually(lambda: _async(not f.sender.pending_work()))
        self.assertIsNone(await f.store.get_retry(REMOTE))

    async def test_destination_up_retries_at_once(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        f.transport.fail = True
        await f.send(1)
        await eventually(lambda: f.store.get_retry(REMOTE))
        f.transport.fail = False
        f.sender.destination_up(REMOTE)
        await eventually(lambda: _async(len(f.transport.delivered_pdus()) == 1))


class DurableQueueTests(TestCase):
    async def test_queue_and_retry_state_survive_a_restart(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        f.transport.fail = True
        ids = await f.send(7)
        await eventually(lambda: _queued(f, 7))
        await eventually(lambda: f.store.get_retry(REMOTE))
        await f.sender.stop()
        later = await f.send(2, prefix="later")  # written while no sender runs
        working = FakeTransport()
        f.clock.advance(60)  # the stored backoff has passed
        await f.new_sender(working)
        await eventually(lambda: _async(len(working.delivered_pdus()) == 9))
        self.assertEqual(working.delivered_pdus(), ids + later)
        self.assertEqual(await f.store.pending(REMOTE, 50, 100), ([], [], []))

    async def test_a_restart_does_not_send_twice(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        ids = await f.send(4)
        await eventually(lambda: _async(len(f.transport.delivered_pdus()) == 4))
        await f.sender.stop()
        fresh = FakeTransport()
        sender = await f.new_sender(fresh)
        more = await f.send(1, prefix="after")
        await eventually(lambda: _async(len(fresh.delivered_pdus()) == 1))
        await eventually(lambda: _async(not sender.pending_work()))
        self.assertEqual(fresh.delivered_pdus(), more)
        self.assertEqual(f.transport.delivered_pdus(), ids)


class EduTests(TestCase):
    async def test_typing_receipts_and_presence_reach_the_remote_server(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        server = f.server
        hs = server.hs
        await f.sender.stop()
        # Stand-ins for the typing and presence trackers wiring hands the real sender.
        typing_users = {f.room_id: [f.alice]}
        presence = {f.alice: {"presence": "online", "currently_active": True}}
        sender = FederationSender(
            f.store, RoomStateStore(hs.db), hs.streams["events"], hs.notifier, f.transport,
            hs.config.server_name,
            f.clock, min_retry_interval_ms=1000, max_retry_interval_ms=8000,
            edus=EduSources(lambda room: typing_users.get(room, []), lambda u: presence[u],
                            lambda: hs.streams["receipts"].current))
        await sender.start()
        self.addCleanup(sender.stop)
        hs.notifier.notify("typing", 1, rooms=[f.room_id])
        [event_id] = await f.send(1)
        resp = await server.request("POST", f"{V3}/rooms/{q(f.room_id)}/receipt/m.read/{q(event_id)}",
                                    {}, token=f.token)
        self.assertEqual(resp.status, 200, resp.body)
        hs.notifier.notify("presence", 1, users=[f.alice])
        typing_users[f.room_id] = []
        hs.notifier.notify("typing", 2, rooms=[f.room_id])

        await eventually(lambda: _async(len(f.transport.delivered_edus()) == 4))
        edus = f.transport.delivered_edus()
        typing = [e["content"] for e in edus if e["edu_type"] == "m.typing"]
        self.assertEqual(typing, [{"room_id": f.room_id, "user_id": f.alice, "typing": True},
                                  {"room_id": f.room_id, "user_id": f.alice, "typing": False}])
        [receipt] = [e["content"] for e in edus if e["edu_type"] == "m.receipt"]
        self.assertEqual(receipt[f.room_id]["m.read"][f.alice]["event_ids"], [event_id])
        [pres] = [e["content"] for e in edus if e["edu_type"] == "m.presence"]
        self.assertEqual(pres["push"][0]["user_id"], f.alice)
        self.assertEqual(pres["push"][0]["presence"], "online")


class OutageTests(TestCase):
    """Two real servers. NEEDS the inbound side (served /make_join, /send_join, /send)."""

    timeout = 120

    async def test_twenty_messages_sent_during_an_outage_all_arrive(self) -> None:
        hs1, hs2 = await start_pair(self)
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        room = await hs1.request("POST", V3 + "/createRoom", {"preset": "public_chat"}, user="alice")
        room_id = room["room_id"]
        await hs2.request("POST", f"{V3}/join/{q(room_id)}?server_name={q(hs1.name)}", {},
                          user="bob")
        await hs2.stop()
        sent = []
        for i in range(20):
            body = await hs1.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/o{i}",
                                     {"msgtype": "m.text", "body": f"during outage {i}"},
                                     user="alice")
            sent.append(body["event_id"])
        await hs2.start()
        hs2.tokens["bob"] = (await hs2.request(
            "POST", V3 + "/login", {"type": "m.login.password", "identifier": {
                "type": "m.id.user", "user": "bob"}, "password": "hunter2-pw"}))["access_token"]

        async def arrived() -> bool:
            events = await room_events(hs2, "bob", room_id)
            return [e["event_id"] for e in events if e["event_id"] in sent] == sent

        await eventually(arrived, timeout_s=30)
        self.assertTrue(alice and bob)


async def _async(value: Any) -> Any:
    return value


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _queued(f: SenderFixture, n: int) -> bool:
    rows = await f.server.hs.db.run(
        "t", lambda t: t.query("SELECT COUNT(*) FROM federation_outbound_pdus"))
    return rows[0][0] >= n


async def _stored_position_is(f: SenderFixture, position: int) -> bool:
    return await f.store.get_position() == position


async def _retry_count(f: SenderFixture, count: int) -> Any:
    retry = await f.store.get_retry(REMOTE)
    return retry if retry is not None and retry.failure_count >= count else None


class SentElsewhereTests(TestCase):
    """A sender that another process runs: EDUs handed to it here are queued in the
    database and the sending process is told, never sent from here."""

    async def test_queued_edus_and_destinations_up_are_passed_on(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        told: list[tuple[str, list[str]]] = []
        hs = f.server.hs
        idle = FederationSender(f.store, RoomStateStore(hs.db), hs.streams["events"],
                                hs.notifier, f.transport, hs.config.server_name, f.clock,
                                min_retry_interval_ms=1000, max_retry_interval_ms=8000,
                                elsewhere=lambda kind, dests: told.append((kind, dests)))
        await idle.queue_edus([(REMOTE, "m.direct_to_device", {"messages": {}})])
        idle.destination_up(REMOTE)
        idle.woken_elsewhere("queued", [REMOTE])  # not started: nothing happens here
        self.assertEqual(told, [("queued", [REMOTE]), ("up", [REMOTE])])
        self.assertEqual(f.transport.calls, [])
        # The sending process, woken for it, sends what was queued.
        f.sender.woken_elsewhere("queued", [REMOTE])
        await eventually(lambda: _edu_types(f, ["m.direct_to_device"]))


async def _edu_types(f: SenderFixture, expected: list[str]) -> bool:
    return [e["edu_type"] for e in f.transport.delivered_edus()] == expected


class ShardedSenderTests(TestCase):
    """Two senders splitting the destinations (worker roles): each sends every event to
    its own destinations only, keeping its own position."""

    async def test_each_sender_serves_its_destinations_from_its_own_position(self) -> None:
        f = SenderFixture(self)
        await f.setup()
        await f.sender.stop()
        hs = f.server.hs
        carol = "@carol:other.test"
        await hs.engine.append(f.room_id, NewEvent(carol, "m.room.member",
                                                   {"membership": "join"}, carol))
        senders, transports = [], []
        for shard, destination in (("a", REMOTE), ("b", "other.test")):
            transport = FakeTransport()
            sender = FederationSender(
                FederationOutboundStore(hs.db, shard, ("a", "b")), RoomStateStore(hs.db),
                hs.streams["events"], hs.notifier, transport, hs.config.server_name, f.clock,
                min_retry_interval_ms=1000, max_retry_interval_ms=8000,
                sends_to=lambda d, mine=destination: d == mine)
            await sender.start()
            self.addCleanup(sender.stop)
            senders.append(sender)
            transports.append(transport)
        ids = await f.send(5)

        async def delivered() -> bool:
            return all(t.delivered_pdus() == ids for t in transports)

        await eventually(delivered)
        self.assertEqual({c[0] for c in transports[0].calls}, {REMOTE})
        self.assertEqual({c[0] for c in transports[1].calls}, {"other.test"})
        positions = [await FederationOutboundStore(hs.db, s, ("a", "b")).get_position()
                     for s in ("a", "b")]
        self.assertEqual(positions, [hs.streams["events"].current] * 2)
