"""Resident memory of the sync issue's workloads, all run against one Roost process.

    .venv/bin/python bench/memory.py

bench/sync_fanout.py and bench/ws_fanout.py each start their own server; the
memory target is for one server after all three workloads, so this runs
them one after the other against the same process and reads its RSS right
after start and after each:

1. the /sync fan-out (20 receivers, 20 messages/s for 10 s);
2. the same over the WebSocket;
3. the initial sync of a user in 50 rooms of 100 messages (5 syncs).

What an idle socket costs is bench/ws_fanout.py's to measure: here the
memory the workloads freed would absorb part of it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import sync_fanout, ws_fanout  # noqa: E402
from bench.common import print_result, roost_server  # noqa: E402


def main() -> None:
    with roost_server() as server:
        time.sleep(1.0)  # let start-up work (migrations, key publication) finish
        rss: dict[str, float] = {"start": round(server.rss_mib(), 1)}
        result: dict[str, Any] = {}
        sync = asyncio.run(sync_fanout.fanout(server.base_url, 20, 20, 10))
        rss["after_sync_fanout"] = round(server.rss_mib(), 1)
        ws = asyncio.run(ws_fanout.fanout(server.base_url, 20, 20, 10))
        rss["after_ws_fanout"] = round(server.rss_mib(), 1)
        initial = asyncio.run(sync_fanout.initial_sync(server.base_url, 50, 100))
        rss["after_initial_sync"] = round(server.rss_mib(), 1)
        result["deliveries"] = {"sync": f"{sync['deliveries']}/{sync['expected_deliveries']}",
                                "websocket": f"{ws['deliveries']}/{ws['expected_deliveries']}",
                                "initial_sync_p50_ms": initial["initial_sync"]["p50_ms"]}
        result["roost_rss_mib"] = rss
        print_result("memory", result)


if __name__ == "__main__":
    main()
