"""CPU per `Database.run` of one SELECT, against the same read without BEGIN/COMMIT.

    .venv/bin/python bench/db_read.py [--reads 3000] [--rounds 4]

psycopg2 outside autocommit sends BEGIN before a transaction's first statement and
COMMIT after it, each a round trip of its own, so a one-statement read through
`Database.run` is three round trips. The benchmark reads one row by primary key
(the shape of the hot reads: a session, a room's events) `reads` times one after the
other, through the real `Database` (Twisted's thread pool and psycopg2) against a
fresh database on the local PostgreSQL, in three modes: `run` (as before),
`read_one` (one statement in autocommit) and `run_reads` with three statements (the
shape of the sync window read). The modes alternate in `rounds` rounds so machine
load falls on each alike; it reports this process's CPU per read (all threads: what
the server pays; the reactor thread alone: the hand-off), PostgreSQL's CPU and the
wall time per read, the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from bench.common import cpu_between, postgres_cpu_by_process, run_on_scratch_database  # noqa: E402
from roost.storage.database import Database, Txn  # noqa: E402

SQL = "SELECT k, v FROM kv WHERE k = %s"


def main_thread_cpu() -> float:
    for thread in psutil.Process().threads():
        if thread.id == os.getpid():
            return thread.user_time + thread.system_time
    return 0.0


def three(txn: Txn, key: str) -> int:
    """Three statements, as the sync window's read (events, redactions, relations)."""
    return sum(len(txn.query(SQL, (key,))) for _ in range(3))


async def phase(read: Callable[[str], Awaitable[Any]], reads: int) -> dict[str, float]:
    process, reactor_cpu = psutil.Process(), main_thread_cpu()
    start, postgres, began = process.cpu_times(), postgres_cpu_by_process(), time.monotonic()
    for i in range(reads):
        await read(f"k{i % 100}")
    wall, end = time.monotonic() - began, process.cpu_times()
    return {
        "roost_cpu_us": ((end.user + end.system) - (start.user + start.system)) * 1e6 / reads,
        "reactor_cpu_us": (main_thread_cpu() - reactor_cpu) * 1e6 / reads,
        "postgres_cpu_us": cpu_between(postgres, postgres_cpu_by_process()) * 1e6 / reads,
        "wall_us": wall * 1e6 / reads,
    }


async def measure(reactor: object, dsn: str, reads: int, rounds: int) -> dict[str, Any]:
    db = Database(reactor, dsn, pool_min=4, pool_max=16)  # type: ignore[arg-type]
    try:
        await db.run("setup", lambda t: t.execute(
            "CREATE TABLE kv (k TEXT PRIMARY KEY, v INT);"
            " INSERT INTO kv SELECT 'k' || i, i FROM generate_series(0, 99) i"))
        modes: dict[str, Callable[[str], Awaitable[Any]]] = {
            "run_one_select": lambda k: db.run("r", lambda t: t.query_one(SQL, (k,))),
            "read_one_autocommit": lambda k: db.read_one("r", SQL, (k,)),
            "run_three_selects": lambda k: db.run("r", three, k),
            "run_reads_three_autocommit": lambda k: db.run_reads("r", three, k),
        }
        for read in modes.values():  # warm up: connections open, plans cached
            await phase(read, 300)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
        for _ in range(rounds):
            for name, read in modes.items():
                samples[name].append(await phase(read, reads))
        return {name: {key: round(statistics.median(s[key] for s in runs), 1) for key in runs[0]}
                for name, runs in samples.items()}
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    result = run_on_scratch_database(
        lambda reactor, dsn: measure(reactor, dsn, args.reads, args.rounds))
    print(json.dumps({"benchmark": "db_read", "reads": args.reads, "rounds": args.rounds,
                      **result}, indent=2))


if __name__ == "__main__":
    main()
