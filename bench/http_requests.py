"""The HTTP layer's own cost: Roost CPU per request that does almost nothing else.

    .venv/bin/python bench/http_requests.py [--clients 20] [--requests 100]

`clients` keep-alive connections each make `requests` requests in turn, all at
once: `GET /versions` (no token: parsing, routing, the JSON answer) and
`GET /account/whoami` (the same plus the access token and session check).
Every long-polled /sync answer pays this much before /sync does anything
(bench/sync_fanout.py); so does every request of issue 17's thousand clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import print_result, roost_server  # noqa: E402
from bench.sync_fanout import V3, CpuMeter, register  # noqa: E402


async def requests(base: str, clients: int, count: int, server: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"clients": clients, "requests_per_client": count}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        users = [await register(session, base, f"u{i}") for i in range(clients)]
        for name, path, auth in (("versions", "/_matrix/client/versions", False),
                                 ("whoami", V3 + "/account/whoami", True)):

            async def one(token: str, path: str = path, auth: bool = auth) -> None:
                headers = {"Authorization": f"Bearer {token}"} if auth else {}
                for _ in range(count):
                    async with session.get(base + path, headers=headers) as resp:
                        assert resp.status == 200, (path, resp.status)
                        await resp.read()

            await asyncio.gather(*(one(u.token) for u in users))  # warm: connections, caches
            meter = CpuMeter(server)
            await asyncio.gather(*(one(u.token) for u in users))
            result[name] = meter.per(clients * count, "request")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    with roost_server() as server:
        print_result("http_requests", asyncio.run(
            requests(server.base_url, args.clients, args.requests, server)))


if __name__ == "__main__":
    main()
