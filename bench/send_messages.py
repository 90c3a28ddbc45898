"""Send throughput: 50 concurrent senders in one room (the rooms issue's workload).

    .venv/bin/python bench/send_messages.py [--senders 50] [--messages 40] [--settle 2]

With --settle, CPU is read that many seconds after the last send is answered, so
that work the sends leave behind off the request path (push evaluation) is
counted too.

Reports messages per second, per-send latency percentiles, and CPU per
message of the Roost process and of PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import postgres_cpu_seconds, print_result, roost_server, summary  # noqa: E402

V3 = "/_matrix/client/v3"


async def register(session: aiohttp.ClientSession, base: str, name: str) -> str:
    body = {"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}}
    async with session.post(base + V3 + "/register", json=body) as resp:
        return (await resp.json())["access_token"]


async def run(base: str, senders: int, messages: int, prefix: str,
              probe: Callable[[], tuple[float, float]], settle: float = 0.0) -> dict[str, object]:
    connector = aiohttp.TCPConnector(limit=senders + 10)
    async with aiohttp.ClientSession(connector=connector) as session:
        tokens = await asyncio.gather(*(register(session, base, f"{prefix}{i}") for i in range(senders)))
        headers = {"Authorization": f"Bearer {tokens[0]}"}
        async with session.post(base + V3 + "/createRoom", json={"preset": "public_chat"},
                                headers=headers) as resp:
            room = (await resp.json())["room_id"]
        for token in tokens[1:]:
            async with session.post(base + V3 + f"/rooms/{room}/join", json={},
                                    headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
        latencies: list[float] = []

        async def sender(i: int, token: str) -> None:
            h = {"Authorization": f"Bearer {token}"}
            for n in range(messages):
                start = time.monotonic()
                async with session.put(base + V3 + f"/rooms/{room}/send/m.room.message/{i}-{n}",
                                       json={"msgtype": "m.text", "body": f"message {n}"},
                                       headers=h) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                latencies.append(time.monotonic() - start)

        cpu0, pg0 = probe()
        started = time.monotonic()
        await asyncio.gather(*(sender(i, t) for i, t in enumerate(tokens)))
        elapsed = time.monotonic() - started
        await asyncio.sleep(settle)
        cpu1, pg1 = probe()
    total = senders * messages
    return {"senders": senders, "messages": total, "seconds": round(elapsed, 2),
            "messages_per_second": round(total / elapsed, 1), **summary(latencies),
            "roost_cpu_ms_per_message": round((cpu1 - cpu0) * 1000 / total, 2),
            "postgres_cpu_ms_per_message": round((pg1 - pg0) * 1000 / total, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--settle", type=float, default=0.0)
    args = parser.parse_args()
    with roost_server() as server:
        def probe() -> tuple[float, float]:
            return server.cpu_seconds(), postgres_cpu_seconds()

        # Warm up (first requests import and connect), then measure only the sends.
        asyncio.run(run(server.base_url, 5, 5, "warm", probe))
        result = asyncio.run(run(server.base_url, args.senders, args.messages, "s", probe,
                                 args.settle))
        result["roost_rss_mib"] = round(server.rss_mib(), 1)
        print_result("send_messages", result)


if __name__ == "__main__":
    main()
