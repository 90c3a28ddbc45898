"""Sync workloads of the sync issue, over /sync (the WebSocket has bench/ws_fanout.py).

    .venv/bin/python bench/sync_fanout.py [--receivers 20] [--rate 20] [--seconds 10]
                                          [--server roost|synapse]

1. Fan-out: one sender at `rate` messages/s into a room with `receivers`
   users long-polling /sync; latency from the start of each send to its
   arrival at each receiver.
2. Initial sync of a user in 50 rooms of 100 messages, and an empty incremental sync.
3. Resident memory of the server after both.

`--server synapse` runs the same against a real Synapse (bench/synapse_server.py),
its CPU read the same way, for figures stated as a ratio to Synapse's.
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

from bench.common import (  # noqa: E402
    RoostProcess,
    cpu_between,
    postgres_cpu_by_process,
    postgres_cpu_of,
    print_result,
    summary,
)
from bench.synapse_server import server_for  # noqa: E402

V3 = "/_matrix/client/v3"


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session, self.base, self.token = session, base, token

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.base + V3 + path, json=body,
                                        headers={"Authorization": f"Bearer {self.token}"}) as r:
            data = await r.json()
            assert r.status == 200, (path, r.status, data)
            return data


async def register(session: aiohttp.ClientSession, base: str, name: str) -> Client:
    body = {"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}}
    async with session.post(base + V3 + "/register", json=body) as resp:
        return Client(session, base, (await resp.json())["access_token"])


class CpuMeter:
    """CPU seconds of the server (Roost, or Synapse with `--server synapse`), of
    PostgreSQL and of this benchmark client over a phase.

    The client (aiohttp in one Python process) shares the machine's cores with
    the server, so latencies alone cannot say whose time they measure. `postgres`
    is every PostgreSQL process on the machine (other databases' load included on a
    shared machine); `postgres_backends` only the backends connected to the bench's
    database (the WAL writer and checkpointer left out).
    """

    def __init__(self, server: RoostProcess | None) -> None:
        self.server = server
        self.label = getattr(server, "label", "roost")
        self.database = getattr(server, "database", None)
        self.start = self._read()
        if server is not None:
            server.profile_on()  # under ROOST_BENCH_PROFILE_MEASURED only

    def _read(self) -> tuple[float, dict[int, float], float, float, dict[int, float]]:
        if self.server is None:
            return 0.0, {}, 0.0, 0.0, {}
        own = postgres_cpu_of(self.database) if isinstance(self.database, str) else {}
        return (self.server.cpu_seconds(), postgres_cpu_by_process(), time.process_time(),
                self.server.reactor_cpu_seconds(), own)

    def per(self, count: int, unit: str) -> dict[str, float]:
        end = self._read()
        if self.server is not None:
            self.server.profile_off()
        spent = (end[0] - self.start[0], cpu_between(self.start[1], end[1]),
                 end[2] - self.start[2], end[3] - self.start[3],
                 cpu_between(self.start[4], end[4]))
        names = (self.label, "postgres", "bench_client", f"{self.label}_reactor",
                 "postgres_backends")
        return {f"{n}_cpu_ms_per_{unit}": round(s * 1000 / max(count, 1), 2)
                for n, s in zip(names, spent, strict=True)}


async def fanout(base: str, receivers: int, rate: float, seconds: float,
                 server: RoostProcess | None = None) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sender = await register(session, base, "sender")
        room = (await sender.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        clients = [await register(session, base, f"r{i}") for i in range(receivers)]
        for c in clients:
            await c.call("POST", f"/rooms/{room}/join", {})
        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        stop = asyncio.Event()

        ready: list[Client] = []
        errors: list[float] = []
        # Answers that carried a sent message: one per delivery, unless a poll came back
        # late enough to find two (a loaded machine batches, and then costs less).
        answers: list[int] = []
        empty: list[float] = []  # answers with none of them (a timeout, or other news)

        async def receive(client: Client) -> None:
            token = (await client.call("GET", "/sync?timeout=0"))["next_batch"]
            ready.append(client)
            while not stop.is_set():
                try:
                    body = await client.call("GET", f"/sync?since={token}&timeout=5000")
                except (TimeoutError, aiohttp.ClientError):
                    errors.append(time.monotonic())  # an overloaded machine: counted, retried
                    await asyncio.sleep(0.5)
                    continue
                now = time.monotonic()
                token = body["next_batch"]
                carried = 0
                # Synapse leaves out empty sections (`rooms` in an answer by timeout).
                for event in body.get("rooms", {}).get("join", {}).get(room, {}).get(
                        "timeline", {}).get("events", []):
                    txn = event["content"].get("txn")
                    if txn in sent_at:
                        latencies.append(now - sent_at[txn])
                        carried += 1
                if carried:
                    answers.append(carried)
                else:
                    empty.append(now)

        tasks = [asyncio.create_task(receive(c)) for c in clients]
        # Every receiver past its initial sync (200 of them take seconds on a loaded
        # machine): the measured phase is the fan-out alone.
        for _ in range(6000):  # at most 5 minutes
            if len(ready) == receivers:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        count = int(rate * seconds)
        meter, phase = CpuMeter(server), time.monotonic()
        for n in range(count):
            txn = f"t{n}"
            sent_at[txn] = time.monotonic()
            await sender.call("PUT", f"/rooms/{room}/send/m.room.message/{txn}",
                              {"msgtype": "m.text", "body": "x", "txn": txn})
            await asyncio.sleep(max(0.0, sent_at[txn] + 1 / rate - time.monotonic()))
        await asyncio.sleep(2.0)
        cpu = meter.per(count, "message")
        phase_empty = sum(1 for t in empty if t >= phase)
        stop.set()
        await asyncio.gather(*tasks)
    expected = count * receivers
    return {"receivers": receivers, "messages": count, "deliveries": len(latencies),
            "expected_deliveries": expected, "sync_errors": len(errors),
            "deliveries_per_answer": round(len(latencies) / max(len(answers), 1), 3),
            "answers_without_message": phase_empty,  # in the measured phase
            **summary(latencies), **cpu}


async def initial_sync(base: str, rooms: int, messages: int,
                       server: RoostProcess | None = None) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        user = await register(session, base, "reader")
        writer = await register(session, base, "writer")
        for i in range(rooms):
            room = (await writer.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
            await user.call("POST", f"/rooms/{room}/join", {})
            await asyncio.gather(*(
                writer.call("PUT", f"/rooms/{room}/send/m.room.message/{i}-{n}",
                            {"msgtype": "m.text", "body": f"message {n}"})
                for n in range(messages)))
        timings, token = [], ""
        meter = CpuMeter(server)
        for _ in range(5):
            start = time.monotonic()
            body = await user.call("GET", "/sync")
            timings.append(time.monotonic() - start)
            token = body["next_batch"]
            assert len(body["rooms"]["join"]) == rooms
        cpu = meter.per(5, "initial_sync")
        empty = []
        for _ in range(20):
            start = time.monotonic()
            await user.call("GET", f"/sync?since={token}&timeout=0")
            empty.append(time.monotonic() - start)
    return {"rooms": rooms, "messages_per_room": messages,
            "initial_sync": {**summary(timings), **cpu},
            "empty_incremental_sync": summary(empty)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receivers", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--only", choices=("fanout", "initial"),
                        help="run one workload (e.g. to profile it alone)")
    parser.add_argument("--server", choices=("roost", "synapse"), default="roost",
                        help="the server measured (bench/synapse_server.py)")
    args = parser.parse_args()
    with server_for(args.server) as server:
        result: dict[str, Any] = {}
        if args.only in (None, "fanout"):
            result["fanout_over_sync"] = asyncio.run(
                fanout(server.base_url, args.receivers, args.rate, args.seconds, server))
        if args.only in (None, "initial"):
            result["sync"] = asyncio.run(initial_sync(server.base_url, 50, 100, server))
        result[f"{server.label}_rss_mib"] = round(server.rss_mib(), 1)
        print_result("sync_fanout", result)


if __name__ == "__main__":
    main()
