"""The write push evaluation makes per batch, alone: CPU per `PushActionStore.record`.

    .venv/bin/python bench/push_record.py [--batches 2000] [--receivers 20]

Under the fan-out (one message at a time) every message is a batch of its own: one
notifying row naming `receivers` users, the sender's own read position, the evaluator's
position. The benchmark runs that write `batches` times one after the other against a
fresh database on the local PostgreSQL, through the real `Database` (Twisted's thread
pool and psycopg2), and reports this process's CPU per write: all threads (what the
server pays) and the reactor thread alone (the hand-off to and from the pool), plus
PostgreSQL's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from bench.common import cpu_between, postgres_cpu_by_process, run_on_scratch_database  # noqa: E402
from roost.storage.database import Database  # noqa: E402
from roost.storage.migrations import migrate  # noqa: E402
from roost.storage.push import PushActionStore  # noqa: E402


def main_thread_cpu() -> float:
    for thread in psutil.Process().threads():
        if thread.id == os.getpid():
            return thread.user_time + thread.system_time
    return 0.0


async def measure(reactor: object, dsn: str, batches: int, receivers: int) -> dict[str, float]:
    db = Database(reactor, dsn, pool_min=4, pool_max=16)  # type: ignore[arg-type]
    try:
        await migrate(db)
        store = PushActionStore(db)
        users = [f"@r{i}:bench.local" for i in range(receivers)]
        room, sender = "!room:bench.local", "@sender:bench.local"

        async def write(position: int) -> None:
            row = (position, 0, room, f"$e{position}", "main", '["notify"]', False,
                   1_700_000_000_000 + position, users)
            await store.record([row], [(sender, room, "main", position)], position)

        for position in range(1, 201):  # warm up: connections open, plans cached
            await write(position)
        process, reactor_cpu = psutil.Process(), main_thread_cpu()
        start = process.cpu_times()
        postgres = postgres_cpu_by_process()
        began = time.monotonic()
        for position in range(1000, 1000 + batches):
            await write(position)
        wall = time.monotonic() - began
        end = process.cpu_times()
        spent = (end.user + end.system) - (start.user + start.system)
        return {
            "batches": batches, "receivers": receivers,
            "roost_cpu_us_per_batch": round(spent * 1e6 / batches, 1),
            "reactor_cpu_us_per_batch": round((main_thread_cpu() - reactor_cpu) * 1e6 / batches, 1),
            "postgres_cpu_us_per_batch": round(
                cpu_between(postgres, postgres_cpu_by_process()) * 1e6 / batches, 1),
            "wall_us_per_batch": round(wall * 1e6 / batches, 1),
        }
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--receivers", type=int, default=20)
    args = parser.parse_args()
    result = run_on_scratch_database(
        lambda reactor, dsn: measure(reactor, dsn, args.batches, args.receivers))
    print(json.dumps({"benchmark": "push_record", **result}, indent=2))


if __name__ == "__main__":
    main()
