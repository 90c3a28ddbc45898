"""A live event writer cut off from PostgreSQL and Redis long enough for the others to
take it for dead (issue 17): once passed, it can commit nothing below the readers, even
when the network comes back before it learns that it was passed (stream_positions.Fence).

Real processes; the writer reaches PostgreSQL and Redis through a proxy the test cuts
(tests/partition_proxy.py), as a pulled cable would."""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.cluster_harness import private_redis, start_cluster
from tests.homeserver.test_cluster_faults import (
    LAYOUT,
    V3,
    Http,
    all_event_ids,
    rooms_on_both_writers,
    sleep,
)
from tests.partition_proxy import PartitionProxy, database_proxy

WHOLE = '{"room":{"timeline":{"limit":1000}}}'


class PartitionedWriterTests(TestCase):
    timeout = 400

    async def test_a_writer_passed_while_cut_off_commits_nothing_the_readers_passed(
            self) -> None:
        redis = await private_redis(self)
        cluster = await start_cluster(
            self, {n: r for n, r in LAYOUT.items() if n != "reader2"}, redis={"port": redis.port})
        # writer2 again, now reaching PostgreSQL and Redis through proxies.
        await cluster.stop("writer2")
        db_proxy, dsn = database_proxy(cluster.raw["database"]["dsn"])
        redis_proxy = PartitionProxy("127.0.0.1", redis.port)
        for proxy in (db_proxy, redis_proxy):
            self.addCleanup(lambda p=proxy: defer.ensureDeferred(p.close()))
        cluster.configure("writer2", database={"dsn": dsn},
                          redis={"port": redis_proxy.local_port})
        await cluster.start("writer2")
        http = Http()
        base = cluster.instances["reader1"].client_url
        token, rooms = await rooms_on_both_writers(http, base)
        since = (await http.ok(base, "GET", V3 + "/sync", token=token))["next_batch"]
        seen: list[str] = []
        done = False

        async def follow() -> None:  # what incremental /sync at the reader delivers
            nonlocal since
            while not done:
                got = await http.ok(base, "GET", f"{V3}/sync?since={since}&timeout=2000"
                                    f"&filter={quote(WHOLE)}", token=token)
                for joined in got.get("rooms", {}).get("join", {}).values():
                    seen.extend(e["event_id"] for e in joined["timeline"]["events"]
                                if e["type"] == "m.room.message")
                since = got["next_batch"]

        follower = defer.ensureDeferred(follow())

        async def send(room: str, tag: str) -> tuple[int, str]:
            code, answer = await http.call(
                base, "PUT", f"{V3}/rooms/{quote(room)}/send/m.room.message/{tag}",
                {"msgtype": "m.text", "body": tag}, token)
            return code, answer.get("event_id", answer.get("errcode", ""))

        self.assertEqual((await send(rooms["writer2"], "before"))[0], 200)
        db_proxy.partition()
        redis_proxy.partition()
        # writer1 moves on; writer2's stale claim holds the reader until, with none of
        # writer2's connections left in PostgreSQL, the others pass it.
        moved = await defer.gatherResults([defer.ensureDeferred(send(rooms["writer1"], f"w1-{i}"))
                                           for i in range(20)])
        self.assertEqual({code for code, _ in moved}, {200})
        for _ in range(600):
            if {e for _, e in moved} <= set(seen):
                break
            await sleep(0.1)
        self.assertIn("writer writer2 is gone", cluster.log("reader1"))

        # The network comes back; writes reach writer2 before it hears it was passed.
        db_proxy.heal()
        redis_proxy.heal()
        after = await defer.gatherResults([defer.ensureDeferred(send(rooms["writer2"], f"w2-{i}"))
                                           for i in range(10)])
        # It stops once it learns (its stored claim, or the bus), to be restarted.
        await cluster.instances["writer2"].child.ended  # type: ignore[union-attr]
        cluster.own_config.pop("writer2")
        await cluster.start("writer2")
        code, last = await send(rooms["writer2"], "restarted")
        self.assertEqual(code, 200, last)
        for _ in range(600):
            if last in seen:
                break
            await sleep(0.1)
        done = True
        await follower
        # Every message stored in writer2's room reached the reader's /sync: none was
        # committed below a position the reader had passed. The sends refused meanwhile
        # were answered with an error; the acknowledged ones are stored.
        stored = await all_event_ids(http, base, rooms["writer2"], token, "m.room.message")
        self.assertEqual(sorted(stored - set(seen)), [], f"sends after the heal: {after}")
        self.assertLessEqual({e for c, e in after if c == 200}, stored)
        for code, answer in after:
            self.assertIn(code, (200, 500, 503), answer)

