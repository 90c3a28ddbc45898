"""Sending into a big room: Roost's CPU per message one sender sends, in sequence, into a
room of `members` + 1 joined members (no one long-polling).

    .venv/bin/python bench/big_room_send.py [--members 2000] [--messages 300]

What grows with the room on the send side (its state, push evaluation for every
member) shows here; bench/sync_fanout.py's rooms hold at most a few dozen members.
The room's head has its loaded state filled first (a /members read), as in a room
people use.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.big_room import JOIN_BATCH, _settle  # noqa: E402
from bench.common import print_result, roost_server  # noqa: E402
from bench.sync_fanout import CpuMeter, register  # noqa: E402

WARM_UP = 20


async def big_room_send(server: Any, members: int, messages: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=JOIN_BATCH)) as session:
        base = server.base_url
        owner = await register(session, base, "owner")
        room = (await owner.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        for first in range(0, members, JOIN_BATCH):
            batch = await asyncio.gather(*(register(session, base, f"m{i}")
                                           for i in range(first, min(first + JOIN_BATCH, members))))
            await asyncio.gather(*(c.call("POST", f"/rooms/{room}/join", {}) for c in batch))
        await owner.call("GET", f"/rooms/{room}/members")
        settle_s = await _settle(server)

        async def send(txn: str) -> None:
            await owner.call("PUT", f"/rooms/{room}/send/m.room.message/{txn}",
                             {"msgtype": "m.text", "body": txn})

        for n in range(WARM_UP):
            await send(f"w{n}")
        meter = CpuMeter(server)
        for n in range(messages):
            await send(f"m{n}")
        return {"members": members + 1, "messages": messages, "settle_s": settle_s,
                **meter.per(messages, "message")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    with roost_server(metrics=True) as server:  # _settle counts transactions by metrics
        result = {"load_average": os.getloadavg()[0],
                  **asyncio.run(big_room_send(server, args.members, args.messages))}
        print_result("big_room_send", result)


if __name__ == "__main__":
    main()
