"""bench/sync_fanout.py's fan-out with its receivers spread over several client processes.

One aiohttp process answering a thousand long polls parses every /sync body
itself: on a 2-core machine it competes with Roost for the same cores, and its own
event loop delays the arrival it timestamps. Here `processes` children (spawned, each
its own event loop) share the receivers; the parent registers the users, sends the
messages and reads each child's arrivals (CLOCK_MONOTONIC is the same in every
process) and CPU time of the measured phase, which starts once every receiver has
received a first message (see `fanout_spread`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import time
from typing import Any

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import summary  # noqa: E402
from bench.lean_client import HttpError, LeanClient  # noqa: E402
from bench.sync_fanout import Client, CpuMeter, register  # noqa: E402

V3 = "/_matrix/client/v3"


async def _receive_all(base: str, room: str, tokens: list[str], conn: Any,
                       lean: bool = False) -> None:
    """A child: every receiver's initial sync, then long polls until told to stop; its
    arrivals [(txn, monotonic time)] and its CPU seconds between "measure" and "stop".
    `lean`: the receivers use bench/lean_client.py instead of aiohttp."""
    arrivals: list[tuple[str, float]] = []
    errors = 0
    stop = asyncio.Event()
    ready = 0
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        warmed: set[int] = set()

        async def receive(client: Client) -> None:
            nonlocal errors, ready
            poll: Any = client.call
            if lean:
                lean_client = LeanClient(base, client.token)

                async def poll(_method: str, path: str) -> Any:
                    return await lean_client.get(V3 + path)

            token = (await poll("GET", "/sync?timeout=0"))["next_batch"]
            ready += 1
            while not stop.is_set():
                try:
                    body = await poll("GET", f"/sync?since={token}&timeout=5000")
                except (TimeoutError, aiohttp.ClientError, HttpError, OSError):
                    errors += 1
                    await asyncio.sleep(0.5)
                    continue
                now = time.monotonic()
                token = body["next_batch"]
                for event in body["rooms"]["join"].get(room, {}).get("timeline", {}).get(
                        "events", []):
                    txn = event["content"].get("txn")
                    if txn == "warm-up":
                        warmed.add(id(client))
                        if len(warmed) == len(tokens):
                            conn.send("warm")
                    elif txn is not None:
                        arrivals.append((txn, now))

        tasks = [asyncio.create_task(receive(Client(session, base, t))) for t in tokens]
        while ready < len(tokens):
            await asyncio.sleep(0.05)
        conn.send("ready")
        assert await loop.run_in_executor(None, conn.recv) == "measure"
        cpu0 = time.process_time()
        assert await loop.run_in_executor(None, conn.recv) == "stop"
        cpu = time.process_time() - cpu0
        stop.set()
        await asyncio.gather(*tasks)
    conn.send({"arrivals": arrivals, "errors": errors, "cpu_s": cpu})


def _child(base: str, room: str, tokens: list[str], conn: Any, lean: bool) -> None:
    asyncio.run(_receive_all(base, room, tokens, conn, lean))


async def fanout_spread(base: str, receivers: int, rate: float, seconds: float,
                        processes: int, server: Any = None,
                        lean: bool = False) -> dict[str, Any]:
    """The fan-out of bench/sync_fanout.py, its receivers in `processes` child processes;
    `server`: what bench/sync_fanout.CpuMeter measures over the measured phase; `lean`:
    the receivers' long polls through bench/lean_client.py (less CPU than aiohttp's)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sender = await register(session, base, "sender")
        room = (await sender.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        clients = await asyncio.gather(*(register(session, base, f"r{i}")
                                         for i in range(receivers)))
        for first in range(0, receivers, 50):  # fifty joins at a time
            await asyncio.gather(*(c.call("POST", f"/rooms/{room}/join", {})
                                   for c in clients[first:first + 50]))
        spawn = multiprocessing.get_context("spawn")
        children = []
        for n in range(processes):
            ours, theirs = spawn.Pipe()
            share = [c.token for c in clients[n::processes]]
            proc = spawn.Process(target=_child, args=(base, room, share, theirs, lean), daemon=True)
            proc.start()
            children.append((proc, ours))
        loop = asyncio.get_running_loop()
        for _, conn in children:  # every receiver past its initial sync
            assert await loop.run_in_executor(None, conn.recv) == "ready"
        # One message every receiver gets before the measured phase: its first delivery
        # carries the presence of everyone who came online after its initial sync (a
        # thousand m.presence events each), a cost of the bench's start, not of fan-out.
        await sender.call("PUT", f"/rooms/{room}/send/m.room.message/warm-up",
                          {"msgtype": "m.text", "body": "x", "txn": "warm-up"})
        for _, conn in children:
            assert await loop.run_in_executor(None, conn.recv) == "warm"
        await asyncio.sleep(1.0)
        for _, conn in children:
            conn.send("measure")
        count = int(rate * seconds)
        sent_at: dict[str, float] = {}
        meter = CpuMeter(server)
        for n in range(count):
            txn = f"t{n}"
            sent_at[txn] = time.monotonic()
            await sender.call("PUT", f"/rooms/{room}/send/m.room.message/{txn}",
                              {"msgtype": "m.text", "body": "x", "txn": txn})
            await asyncio.sleep(max(0.0, sent_at[txn] + 1 / rate - time.monotonic()))
        await asyncio.sleep(2.0)
        cpu = meter.per(count, "message")
        for _, conn in children:
            conn.send("stop")
        results = [await loop.run_in_executor(None, conn.recv) for _, conn in children]
        for proc, _ in children:
            proc.join(30)
    latencies = [at - sent_at[txn] for r in results for txn, at in r["arrivals"]
                 if txn in sent_at]
    clients_cpu = sum(r["cpu_s"] for r in results)
    return {"receivers": receivers, "client_processes": processes,
            "receiver_client": "lean" if lean else "aiohttp", "messages": count,
            "deliveries": len(latencies), "expected_deliveries": count * receivers,
            "sync_errors": sum(r["errors"] for r in results), **summary(latencies), **cpu,
            "bench_receivers_cpu_ms_per_message": round(clients_cpu * 1000 / max(count, 1),
                                                        1)}
