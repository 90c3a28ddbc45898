"""Unread counts at a client reader that does not run push evaluation (issue 17).

The writer's evaluator publishes each batch's notifications on the bus and the reader
applies them to its own cache (push/shared_counts.py). These check, through /sync at
the reader, that the counts are right when the increments arrive, after a message the
reader missed, and after the reader restarts; and that the deliveries in between are
served from the cache, not read from PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from roost.push.shared_counts import KIND, FollowedCounts
from tests.contrib.test_nginx import free_port
from tests.homeserver.test_replication_wiring import _send, _start_worker, _workers
from tests.postgres_harness import fresh_database
from tests.redis_harness import isolated_redis
from tests.server_harness import RunningServer, q, test_config
from tests.storage.test_replication import until

V3 = "/_matrix/client/v3"


class ReplicatedCountsTests(TestCase):
    timeout = 120

    async def _cluster(self) -> None:
        dsn = await fresh_database(self)
        redis = await isolated_redis(self)
        self._dsn, self._internal = dsn, free_port()
        data_dir = self.mktemp()  # one token secret for both
        self._configs = {
            name: test_config(data_dir, workers=_workers(self._internal), redis={
                "enabled": True, "host": redis.host, "port": redis.port,
                "key_prefix": redis.prefix}).for_worker(name)
            for name in ("writer", "reader")}
        self.writer = await self._start("writer")
        self.reader = await self._start("reader")
        self.alice = await self.writer.register("alice")
        self.bob = await self.writer.register("bob")
        self.room = (await self.writer.request(
            "POST", V3 + "/createRoom", {"preset": "public_chat"},
            token=self.alice["access_token"])).body["room_id"]
        joined = await self.writer.request("POST", f"{V3}/rooms/{q(self.room)}/join", {},
                                           token=self.bob["access_token"])
        self.assertEqual(joined.status, 200, joined.body)

    async def _start(self, name: str) -> RunningServer:
        return await _start_worker(self, self._configs[name], self._dsn, self._internal)

    def _follower(self) -> FollowedCounts:
        assert self.reader.hs.push is not None
        follower = self.reader.hs.push.unread._evaluator
        assert isinstance(follower, FollowedCounts)
        return follower

    async def _following(self) -> FollowedCounts:
        """The reader's follower once it holds the evaluator's position of everything sent."""
        follower = self._follower()
        target = self.writer.hs.streams["events"].current
        await until(lambda: self.reader.hs.streams["events"].current >= target
                    and follower.position is not None and follower.position >= target,
                    "the reader follows the evaluator")
        return follower

    async def _sync(self, since: str | None, sent: str | None = None) -> tuple[int, str]:
        """Bob's notification count in the room from a sync at the reader, and its token:
        with `sent`, from the answer whose timeline has that event (a long poll may first
        wake for something else, such as a presence change from the other process)."""
        for _ in range(20):
            path = V3 + "/sync" if since is None else f"{V3}/sync?since={q(since)}&timeout=30000"
            got = await self.reader.request("GET", path, token=self.bob["access_token"])
            self.assertEqual(got.status, 200, got.body)
            since = got.body["next_batch"]
            room = got.body.get("rooms", {}).get("join", {}).get(self.room)
            if room is None:
                continue
            timeline = [e["event_id"] for e in room.get("timeline", {}).get("events", [])]
            if sent is None or sent in timeline:
                return room["unread_notifications"]["notification_count"], since
        raise AssertionError(f"{sent} never arrived at the reader")

    async def test_counts_follow_the_increments_on_the_bus(self) -> None:
        await self._cluster()
        follower = await self._following()
        count, since = await self._sync(None)
        self.assertEqual(count, 0)
        self.assertEqual(len(follower.counts), 1)  # read from storage once, and kept
        misses = follower.counts.misses
        for n in range(1, 4):
            event_id = await _send(self.writer, self.alice, self.room, f"m{n}")
            count, since = await self._sync(since, event_id)
            self.assertEqual(count, n)
        self.assertEqual(follower.counts.misses, misses)  # no storage read since
        # A receipt (taken at the reader) drops bob's entry: read again, now 0.
        receipt = await self.reader.request(
            "POST", f"{V3}/rooms/{q(self.room)}/receipt/m.read/{q(event_id)}", {},
            token=self.bob["access_token"])
        self.assertEqual(receipt.status, 200, receipt.body)
        count, since = await self._sync(since)
        self.assertEqual(count, 0)
        sent = await _send(self.writer, self.alice, self.room, "after-receipt")
        count, _ = await self._sync(since, sent)
        self.assertEqual(count, 1)

    async def test_a_missed_message_is_noticed_and_the_counts_read_again(self) -> None:
        await self._cluster()
        follower = await self._following()
        count, since = await self._sync(None)
        self.assertEqual((count, len(follower.counts)), (0, 1))
        bus = self.reader.hs.replication.bus
        lost: list[dict[str, Any]] = []

        def lossy(instance: str, message: dict[str, Any]) -> None:
            if not lost and message.get("a"):  # the batch with the first message: lost
                lost.append(message)
                return
            follower.heard(instance, message)

        bus._handlers[KIND] = [lossy]
        await _send(self.writer, self.alice, self.room, "lost")
        await until(lambda: bool(lost), "the first batch's message is lost")
        gaps = follower.gaps
        sent = await _send(self.writer, self.alice, self.room, "heard")
        count, since = await self._sync(since, sent)
        self.assertEqual(count, 2)  # the cache alone would say 1
        self.assertEqual(follower.gaps, gaps + 1)
        sent = await _send(self.writer, self.alice, self.room, "third")
        count, _ = await self._sync(since, sent)
        self.assertEqual(count, 3)

    async def test_a_restarted_reader_counts_what_was_sent_while_it_was_down(self) -> None:
        await self._cluster()
        follower = await self._following()
        count, since = await self._sync(None)
        self.assertEqual(count, 0)
        sent = await _send(self.writer, self.alice, self.room, "before")
        count, since = await self._sync(since, sent)
        self.assertEqual(count, 1)
        await self.reader.stop()
        for n in range(3):
            sent = await _send(self.writer, self.alice, self.room, f"down{n}")
        self.reader = await self._start("reader")
        self.assertIsNot(self._follower(), follower)
        count, since = await self._sync(since, sent)  # no message heard yet: storage
        self.assertEqual(count, 4)
        sent = await _send(self.writer, self.alice, self.room, "back")
        follower = await self._following()
        count, since = await self._sync(since, sent)
        self.assertEqual(count, 5)
        misses = follower.counts.misses
        sent = await _send(self.writer, self.alice, self.room, "cached")
        count, _ = await self._sync(since, sent)
        self.assertEqual(count, 6)
        self.assertEqual(follower.counts.misses, misses)  # the increment, not storage

    async def test_a_read_ahead_of_the_messages_heard_is_used_once_not_kept(self) -> None:
        await self._cluster()
        follower = await self._following()
        bus = self.reader.hs.replication.bus
        held: list[tuple[str, dict[str, Any]]] = []
        bus._handlers[KIND] = [lambda instance, message: held.append((instance, message))]
        await _send(self.writer, self.alice, self.room, "m1")
        await until(lambda: any(m.get("a") for _, m in held), "the batch's message is held")
        # Storage has the batch already; this reader has not heard of it yet.
        assert self.reader.hs.push is not None
        store = self.reader.hs.push.unread._store
        read = await follower.counts.read_through(self.bob["user_id"], [self.room], store,
                                                  follower.position or 0)
        self.assertEqual(read[self.room]["main"], (1, 0))
        self.assertEqual(len(follower.counts), 0)  # as of a position not held here
        bus._handlers[KIND] = [follower.heard]
        for instance, message in held:
            follower.heard(instance, message)
        count, since = await self._sync(None)
        self.assertEqual(count, 1)  # kept, the read and the increment would make 2
        sent = await _send(self.writer, self.alice, self.room, "m2")
        count, _ = await self._sync(since, sent)
        self.assertEqual(count, 2)
