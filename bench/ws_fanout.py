"""WebSocket workloads of the sync issue.

    .venv/bin/python bench/ws_fanout.py [--receivers 20] [--rate 20] [--seconds 10] [--idle 1000]

1. Fan-out: one sender (over REST) at `rate` messages/s into a room whose
   `receivers` members listen on /_roost/ws; latency from the start of each
   send to the push arriving at each receiver.
2. Idle sockets: `idle` authenticated sockets with a sync stream open and
   nothing happening; Roost's resident memory before and after, per socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import RoostProcess, print_result, roost_server, summary  # noqa: E402
from bench.sync_fanout import CpuMeter, register  # noqa: E402


async def open_socket(session: aiohttp.ClientSession, base: str, token: str
                      ) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(base.replace("http", "ws") + "/_roost/ws",
                                  headers={"Authorization": f"Bearer {token}"}, heartbeat=None)
    ready = json.loads((await ws.receive()).data)
    assert ready["type"] == "ready", ready
    await ws.send_str(json.dumps({"op": "sync", "since": None, "id": "s",
                                  "filter": {"room": {"timeline": {"limit": 50}}}}))
    return ws


async def fanout(base: str, receivers: int, rate: float, seconds: float,
                 server: RoostProcess | None = None) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sender = await register(session, base, "wsender")
        room = (await sender.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        clients = [await register(session, base, f"wr{i}") for i in range(receivers)]
        for c in clients:
            await c.call("POST", f"/rooms/{room}/join", {})
        sockets = [await open_socket(session, base, c.token) for c in clients]
        sent_at: dict[str, float] = {}
        latencies: list[float] = []

        async def listen(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for message in ws:
                now = time.monotonic()
                frame = json.loads(message.data)
                if frame.get("type") != "sync":
                    continue
                joined = frame["body"]["rooms"]["join"].get(room, {})
                for event in joined.get("timeline", {}).get("events", []):
                    txn = event["content"].get("txn")
                    if txn in sent_at:
                        latencies.append(now - sent_at[txn])

        tasks = [asyncio.create_task(listen(ws)) for ws in sockets]
        await asyncio.sleep(1.0)
        count = int(rate * seconds)
        meter = CpuMeter(server)
        for n in range(count):
            txn = f"w{n}"
            sent_at[txn] = time.monotonic()
            await sender.call("PUT", f"/rooms/{room}/send/m.room.message/{txn}",
                              {"msgtype": "m.text", "body": "x", "txn": txn})
            await asyncio.sleep(max(0.0, sent_at[txn] + 1 / rate - time.monotonic()))
        await asyncio.sleep(2.0)
        cpu = meter.per(count, "message")
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"receivers": receivers, "messages": count, "deliveries": len(latencies),
            "expected_deliveries": count * receivers, **summary(latencies), **cpu}


async def idle_sockets(server: RoostProcess, count: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        users = [await register(session, server.base_url, f"idle{i}") for i in range(50)]
        await asyncio.sleep(1.0)
        before = server.rss_mib()
        sockets = []
        for i in range(count):
            sockets.append(await open_socket(session, server.base_url, users[i % 50].token))
        await asyncio.sleep(3.0)
        after = server.rss_mib()
        for ws in sockets:
            await ws.close()
    return {"sockets": count, "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
            "kib_per_socket": round((after - before) * 1024 / count, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receivers", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--only", choices=("fanout", "idle"),
                        help="run one workload (e.g. to profile it alone)")
    args = parser.parse_args()
    with roost_server() as server:
        result: dict[str, Any] = {}
        if args.only in (None, "fanout"):
            result["fanout_over_websocket"] = asyncio.run(
                fanout(server.base_url, args.receivers, args.rate, args.seconds, server))
        if args.only in (None, "idle"):
            result["idle_sockets"] = asyncio.run(idle_sockets(server, args.idle))
        result["roost_rss_mib"] = round(server.rss_mib(), 1)
        print_result("ws_fanout", result)


if __name__ == "__main__":
    main()
