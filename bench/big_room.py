"""Read paths of issue 10: a big room, and paging through history.

    .venv/bin/python bench/big_room.py [--members 2000] [--messages 1000] [--repeat 5]
                                       [--server roost|synapse]

With ROOST_BENCH_PROFILE_MEASURED=/tmp/x.prof, Roost's reactor thread is
profiled during the measured requests only (bench/profiled.py).

1. One room of `members` + 1 members (joined in parallel batches): the time of
   `GET /rooms/{room}/members`, and of a newcomer's initial sync (the last user
   to join, no lazy loading: every member event in `state`).
2. `messages` messages in a room, read back with /messages in pages of 100
   from a sync's prev_batch to the room's start.

Each figure is the median of `repeat` runs, with Roost's and PostgreSQL's CPU
per operation. CPU per message delivered to 20 long-polling receivers is
bench/sync_fanout.py's `roost_cpu_ms_per_message`. `--server synapse` runs the
same against a real Synapse (bench/synapse_server.py; its figures are named
`synapse_...`), for figures stated as a ratio to Synapse's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import postgres_cpu_of, print_result, summary  # noqa: E402
from bench.synapse_server import server_for  # noqa: E402
from bench.sync_fanout import CpuMeter, register  # noqa: E402

JOIN_BATCH = 50


async def big_room(base: str, members: int, repeat: int, server: Any,
                   db_times: bool = False) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=JOIN_BATCH)) as session:
        owner = await register(session, base, "owner")
        room = (await owner.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        started = time.monotonic()
        for first in range(0, members, JOIN_BATCH):
            batch = await asyncio.gather(*(register(session, base, f"m{i}")
                                           for i in range(first, min(first + JOIN_BATCH, members))))
            await asyncio.gather(*(c.call("POST", f"/rooms/{room}/join", {}) for c in batch))
        setup_s = time.monotonic() - started
        newcomer = await register(session, base, "newcomer")
        await newcomer.call("POST", f"/rooms/{room}/join", {})
        result: dict[str, Any] = {"members": members + 2, "setup_s": round(setup_s, 1),
                                  "settle_s": await _settle(server)}

        async def timed(name: str, call: Any, check: Any) -> None:
            await call()  # warm: the first read loads what later reads keep
            before = _db_times(server)
            server.profile_on()
            meter, reactor = CpuMeter(server), server.reactor_cpu_seconds()
            timings = []
            for _ in range(repeat):
                start = time.monotonic()
                body = await call()
                timings.append(time.monotonic() - start)
                check(body)
            result[name] = {**summary(timings), **meter.per(repeat, "request"),
                            f"{server.label}_reactor_cpu_ms_per_request": round(
                                (server.reactor_cpu_seconds() - reactor) * 1000 / repeat, 2)}
            server.profile_off()
            if db_times:
                result[name]["db_ms_per_request_by_transaction"] = _db_diff(
                    before, _db_times(server), repeat)

        await timed("members", lambda: newcomer.call("GET", f"/rooms/{room}/members"),
                    lambda b: _expect(len(b["chunk"]) == members + 2, "members"))
        await timed("newcomer_initial_sync", lambda: newcomer.call("GET", "/sync"),
                    lambda b: _expect(sum(1 for e in b["rooms"]["join"][room]["state"]["events"]
                                          if e["type"] == "m.room.member")
                                      + sum(1 for e in b["rooms"]["join"][room]["timeline"]
                                            ["events"] if e["type"] == "m.room.member")
                                      == members + 2, "initial sync members"))
        return result


async def pagination(base: str, messages: int, repeat: int, server: Any,
                     db_times: bool = False) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        writer = await register(session, base, "writer")
        room = (await writer.call("POST", "/createRoom", {}))["room_id"]
        for first in range(0, messages, 100):
            await asyncio.gather(*(
                writer.call("PUT", f"/rooms/{room}/send/m.room.message/p{n}",
                            {"msgtype": "m.text", "body": f"message {n}"})
                for n in range(first, min(first + 100, messages))))
        prev_batch = (await writer.call("GET", "/sync?filter=" + '{"room":{"timeline":{"limit":1}}}'
                                        ))["rooms"]["join"][room]["timeline"]["prev_batch"]

        async def read_all() -> int:
            token, got = prev_batch, 0
            while got < messages - 1:
                page = await writer.call(
                    "GET", f"/rooms/{room}/messages?dir=b&limit=100&from={token}")
                got += sum(1 for e in page["chunk"] if e["type"] == "m.room.message")
                if "end" not in page:
                    break
                token = page["end"]
            return got

        await read_all()
        before = _db_times(server)
        server.profile_on()
        meter, reactor = CpuMeter(server), server.reactor_cpu_seconds()
        timings = []
        for _ in range(repeat):
            start = time.monotonic()
            got = await read_all()
            timings.append(time.monotonic() - start)
            _expect(got == messages - 1, "pagination")
        spent = {**meter.per(repeat, "read_all"), f"{server.label}_reactor_cpu_ms_per_read_all": round(
            (server.reactor_cpu_seconds() - reactor) * 1000 / repeat, 2)}
        if db_times:
            spent["db_ms_per_read_all_by_transaction"] = _db_diff(
                before, _db_times(server), repeat)
        server.profile_off()
        return {"messages": messages, "page": 100, "read_all": {**summary(timings), **spent}}


async def _settle(server: Any, idle_share: float = 0.05, most_s: float = 300.0) -> float:
    """Wait until the server is idle (under `idle_share` of a core and at most two database
    transactions in a second): after 2,000 joins, background work (the federation
    sender routing each join, mostly database time) runs on for a while and would be
    counted in the figures measured. Seconds waited. Synapse (no metrics listener here)
    is judged by its CPU and its database backends' CPU."""
    started = time.monotonic()
    while time.monotonic() - started < most_s:
        cpu, transactions = server.cpu_seconds(), _transactions(server)
        await asyncio.sleep(1.0)
        if server.cpu_seconds() - cpu < idle_share and _transactions(server) - transactions <= 2:
            break
    return round(time.monotonic() - started, 1)


def _transactions(server: Any) -> float:
    """Database transactions so far (every name), from /metrics; without metrics, the
    bench database's backends' CPU in units of 5 ms (so 'two a second' is 10 ms/s)."""
    if server.metrics_url is None:
        return sum(postgres_cpu_of(server.database).values()) / 0.005
    return sum(_metric_lines(server, "roost_db_transaction_duration_seconds_count{").values())


def _db_times(server: Any) -> dict[str, float]:
    """Transaction name -> seconds spent so far, from /metrics (with --db-times only)."""
    if server.metrics_url is None:
        return {}
    return _metric_lines(server, "roost_db_transaction_duration_seconds_sum{")


def _metric_lines(server: Any, prefix: str) -> dict[str, float]:
    """desc label -> value of the /metrics lines starting with `prefix`."""
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('desc="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def _db_diff(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    spent = {k: (v - before.get(k, 0.0)) * 1000 / count for k, v in after.items()}
    return {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.1}


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(f"{what}: wrong answer")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("members", "pagination"))
    parser.add_argument("--server", choices=("roost", "synapse"), default="roost",
                        help="the server measured (bench/synapse_server.py)")
    parser.add_argument("--db-times", action="store_true",
                        help="also report wall time per database transaction (metrics on)")
    args = parser.parse_args()
    # The metrics listener is always on: _settle counts database transactions.
    with server_for(args.server, metrics=True) as server:
        result: dict[str, Any] = {"load_average": os.getloadavg()[0]}
        if args.only in (None, "pagination"):
            result["pagination"] = asyncio.run(
                pagination(server.base_url, args.messages, args.repeat, server, args.db_times))
        if args.only in (None, "members"):
            result["big_room"] = asyncio.run(
                big_room(server.base_url, args.members, args.repeat, server, args.db_times))
        print_result("big_room", result)


if __name__ == "__main__":
    main()
