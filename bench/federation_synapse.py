"""Roost and a real Synapse on loopback: messages each way under a steady rate.

    .venv/bin/python bench/federation_synapse.py [--rate 20] [--seconds 10]

Needs `.venv-synapse` (made by `make test`). A Synapse user joins a room on
Roost; Roost's user sends `rate` messages/s while a client long-polls Synapse's
/sync, then Synapse's user sends while a client long-polls Roost's /sync.
Latency is from the start of each send to its arrival at the other side's client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from typing import Any
from urllib.parse import quote

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import print_result, roost_server, summary  # noqa: E402
from bench.sync_fanout import Client, register  # noqa: E402
from tests.federation.synapse_harness import _start, _stop  # noqa: E402

FILTER = quote('{"room": {"timeline": {"limit": 500}}}')


async def measure(sender: Client, receiver: Client, room: str, rate: float,
                  seconds: float, prefix: str) -> dict[str, Any]:
    token = (await receiver.call("GET", f"/sync?timeout=0&filter={FILTER}"))["next_batch"]
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    count = int(rate * seconds)

    async def receive() -> None:
        nonlocal token
        deadline = time.monotonic() + seconds + 60
        while len(latencies) < count and time.monotonic() < deadline:
            body = await receiver.call("GET", f"/sync?since={token}&timeout=2000&filter={FILTER}")
            now = time.monotonic()
            token = body["next_batch"]
            for event in body.get("rooms", {}).get("join", {}).get(room, {}).get(
                    "timeline", {}).get("events", []):
                tag = event.get("content", {}).get("tag")
                if tag in sent_at:
                    latencies.append(now - sent_at[tag])

    task = asyncio.create_task(receive())
    for n in range(count):
        tag = f"{prefix}{n}"
        sent_at[tag] = time.monotonic()
        await sender.call("PUT", f"/rooms/{quote(room)}/send/m.room.message/{tag}",
                          {"msgtype": "m.text", "body": "x", "tag": tag})
        await asyncio.sleep(max(0.0, sent_at[tag] + 1 / rate - time.monotonic()))
    await task
    return {"messages": count, "arrived": len(latencies), **summary(latencies)}


async def run(roost_url: str, synapse_url: str, roost_name: str, rate: float,
              seconds: float) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        alice = await register(session, roost_url, "alice")
        carol = await register(session, synapse_url, "carol")
        room = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        await carol.call("POST", f"/join/{quote(room)}?server_name={quote(roost_name)}", {})
        return {
            "roost_to_synapse": await measure(alice, carol, room, rate, seconds, "r"),
            "synapse_to_roost": await measure(carol, alice, room, rate, seconds, "s"),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    synapse = _start(tempfile.mkdtemp(prefix="roost-bench-synapse-"))
    try:
        with roost_server(federation=True) as roost:
            result = asyncio.run(run(roost.base_url, synapse.client_url, roost.server_name,
                                     args.rate, args.seconds))
            print_result("federation_roost_and_synapse", result)
    finally:
        _stop(synapse)


if __name__ == "__main__":
    main()
