"""What sharing a stream between processes costs (issue 17): wake-up latency and CPU.

    .venv/bin/python bench/replication.py [--positions 2000] [--writers 2] [--burst 1]

Builds, in this one process, one `Replication` per instance on a fresh database
and the Redis on 127.0.0.1:6379, exactly as separate processes would have them
(each its own bus connection, its own stored claims): `--writers` writers of one
stream and one follower. Each round, a writer finishes a write and the
follower's notifier hears it through Redis; reported: the latency from
`finish` to the follower's announcement (p50/p99), and the CPU of this process
per position (every end's handling of the messages together: the writer's
publish and claim store, the other writers' idle advance, the follower).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from twisted.internet import defer, reactor, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ADMIN_DSN, _admin, print_result, summary  # noqa: E402
from roost.storage.database import Database  # noqa: E402
from roost.storage.migrations import migrate  # noqa: E402
from roost.storage.notifier import Notifier  # noqa: E402
from roost.storage.redis import connect_redis  # noqa: E402
from roost.storage.replication import ReplicationBus  # noqa: E402
from roost.storage.shared_streams import Replication  # noqa: E402


async def instance(db: Database, name: str, writers: list[str], channel: str
                   ) -> tuple[Replication, object, Notifier]:
    publisher = await connect_redis(None, "127.0.0.1", 6379, 0, None, poolsize=1)
    bus = ReplicationBus(publisher, "127.0.0.1", 6379, None, channel, name)
    replication = Replication(bus, db, reactor)
    stream = await replication.stream("receipts", 0, writers)
    notifier = Notifier()
    stream.announce_to(notifier, "receipts")
    await bus.start()
    replication.start()
    return replication, stream, notifier


async def run(positions: int, writer_count: int, burst: int = 1) -> dict[str, object]:
    database = f"roost_bench_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{database}"')
    db = Database(reactor, ADMIN_DSN.replace("dbname=postgres", f"dbname={database}"), 2, 8)
    try:
        await migrate(db)
        channel = f"roost-bench:{database}:replication"
        names = [f"w{i}" for i in range(writer_count)]
        writers = [await instance(db, n, names, channel) for n in names]
        reader = await instance(db, "reader", names, channel)
        _, follower, notifier = reader
        waiting: list[tuple[int, defer.Deferred[float]]] = []

        def heard(change: object) -> None:
            now = time.perf_counter()
            while waiting and waiting[0][0] <= change.position:  # type: ignore[attr-defined]
                waiting.pop(0)[1].callback(now)

        notifier.add_listener(heard)
        await task.deferLater(reactor, 0.5, lambda: None)  # every claim known everywhere
        latencies = []
        cpu0 = time.process_time()
        for i in range(0, positions, burst):
            # `burst` writes finishing in one reactor turn (a busy writer), spread
            # over the writers; the round ends when the follower covers them all.
            stream = writers[(i // burst) % writer_count][1]
            taken = stream.allocate(burst)  # type: ignore[attr-defined]
            done: defer.Deferred[float] = defer.Deferred()
            waiting.append((max(taken), done))
            start = time.perf_counter()
            for n, position in enumerate(taken):
                stream.finish([position], rooms=[f"!room{n}"])  # type: ignore[attr-defined]
            latencies.append(await done - start)
        cpu = time.process_time() - cpu0
        for replication, _, _ in [*writers, reader]:
            await replication.stop()  # type: ignore[attr-defined]
            await replication.bus.stop()  # type: ignore[attr-defined]
        return {"positions": positions, "writers": writer_count, "burst": burst,
                "cpu_us_per_position": round(cpu / positions * 1e6, 1), **summary(latencies)}
    finally:
        db.close()
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--positions", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--burst", type=int, default=1)
    args = parser.parse_args()

    async def go(_: object) -> None:
        print_result("replication", await run(args.positions, args.writers, args.burst))

    task.react(lambda r: defer.ensureDeferred(go(r)))


if __name__ == "__main__":
    main()
