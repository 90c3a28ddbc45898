"""Federation workloads of the federation issue, Roost to Roost on loopback.

    .venv/bin/python bench/federation.py [--rate 20] [--seconds 10] [--burst 1000] [--three]

Two Roost processes federate over TLS on 127.0.0.1. A user on the second
server joins a room on the first; messages are sent on the first at `rate`/s
and a client long-polling /sync on the second measures the latency from the
start of each send. Then a burst of `burst` messages: does every one cross,
in order, and is any event fetched twice? The second server's metrics listener
counts the events it asked the first for (/event, /get_missing_events,
/state_ids, /event_auth, /backfill), by event id; the bench reads them before
and after the burst and prints "events fetched: N, fetched twice: M".

With `--three`, a second burst runs in a room spanning three servers: the
first server's user sends `burst` messages while a third server's user sends
a tenth as many, all at once. The second server receives both streams, whose
events cite each other: this is where gaps, fetches and fetches repeated by
concurrent transactions can arise. Every server must hold every message, each
sender's messages in the order they were sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any
from urllib.parse import quote

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import RoostProcess, print_result, roost_server, summary  # noqa: E402
from bench.sync_fanout import Client, register  # noqa: E402

# A timeline long enough that no event is left out of a sync (limited) during the burst.
FILTER = quote('{"room": {"timeline": {"limit": 2000}}}')


async def room_order(client: Client, room: str) -> list[str]:
    """The tags of the room's messages in the order the server holds them."""
    tags: list[str] = []
    cursor = ""
    while True:
        page = await client.call("GET", f"/rooms/{quote(room)}/messages?dir=f&limit=500"
                                 + (f"&from={cursor}" if cursor else ""))
        tags += [e["content"]["tag"] for e in page["chunk"] if "tag" in e.get("content", {})]
        if "end" not in page:
            return tags
        cursor = page["end"]


async def receive_until(client: Client, room: str, token: str, want: set[str],
                        seen: list[tuple[str, float]], deadline: float) -> str:
    while want - {t for t, _ in seen} and time.monotonic() < deadline:
        body = await client.call("GET", f"/sync?since={token}&timeout=2000&filter={FILTER}")
        now = time.monotonic()
        token = body["next_batch"]
        for event in body["rooms"]["join"].get(room, {}).get("timeline", {}).get("events", []):
            tag = event["content"].get("tag")
            if isinstance(tag, str):
                seen.append((tag, now))
    return token


FETCHED = "roost_federation_events_fetched_total"
FETCHED_AGAIN = "roost_federation_events_fetched_again_total"
REQUESTS = "roost_federation_fetch_requests_total"


async def fetch_counts(server: RoostProcess) -> dict[str, float]:
    """The server's fetch counters (summed over endpoints), read off its /metrics."""
    return {name: await asyncio.to_thread(server.metric, name)
            for name in (FETCHED, FETCHED_AGAIN, REQUESTS)}


def fetch_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {"fetch_requests": int(after[REQUESTS] - before[REQUESTS]),
            "events_fetched": int(after[FETCHED] - before[FETCHED]),
            "fetched_twice": int(after[FETCHED_AGAIN] - before[FETCHED_AGAIN])}


async def run(a: RoostProcess, b: RoostProcess, rate: float, seconds: float,
              burst: int) -> dict[str, Any]:
    a_url, b_url, a_name = a.base_url, b.base_url, a.server_name
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        alice = await register(session, a_url, "alice")
        bob = await register(session, b_url, "bob")
        room = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        await bob.call("POST", f"/join/{quote(room)}?server_name={quote(a_name)}", {})
        token = (await bob.call("GET", "/sync?timeout=0"))["next_batch"]

        seen: list[tuple[str, float]] = []
        sent_at: dict[str, float] = {}
        count = int(rate * seconds)
        want = {f"r{n}" for n in range(count)}
        receiver = asyncio.create_task(
            receive_until(bob, room, token, want, seen, time.monotonic() + seconds + 60))
        for n in range(count):
            tag = f"r{n}"
            sent_at[tag] = time.monotonic()
            await alice.call("PUT", f"/rooms/{room}/send/m.room.message/{tag}",
                             {"msgtype": "m.text", "body": "x", "tag": tag})
            await asyncio.sleep(max(0.0, sent_at[tag] + 1 / rate - time.monotonic()))
        token = await receiver
        latencies = [at - sent_at[tag] for tag, at in seen if tag in sent_at]

        fetches_before = await fetch_counts(b)
        burst_tags = [f"b{n}" for n in range(burst)]
        started = time.monotonic()
        burst_seen: list[tuple[str, float]] = []
        receiver = asyncio.create_task(receive_until(
            bob, room, token, set(burst_tags), burst_seen, time.monotonic() + 300))
        await asyncio.gather(*(
            alice.call("PUT", f"/rooms/{room}/send/m.room.message/{tag}",
                       {"msgtype": "m.text", "body": "x", "tag": tag}) for tag in burst_tags))
        await receiver
        fetches = fetch_summary(fetches_before, await fetch_counts(b))
        whole_run = fetch_summary(dict.fromkeys(fetches_before, 0.0), await fetch_counts(b))
        arrived = [t for t, _ in burst_seen if t.startswith("b")]
        same_order = await room_order(alice, room) == await room_order(bob, room)
    return {
        "steady": {"rate": rate, "messages": count, "arrived": len(latencies),
                   **summary(latencies)},
        "burst": {"messages": burst, "arrived": len(set(arrived)),
                  "duplicates": len(arrived) - len(set(arrived)),
                  "same_order_on_both_servers": same_order,
                  "seconds": round((burst_seen[-1][1] if burst_seen else time.monotonic())
                                   - started, 2),
                  "receiver_fetches": fetches},
        "receiver_fetches_whole_run": whole_run,
    }


async def joined_count(client: Client, room: str) -> int:
    members = await client.call("GET", f"/rooms/{quote(room)}/joined_members")
    return len(members.get("joined", {}))


async def send_all(client: Client, room: str, tags: list[str]) -> None:
    await asyncio.gather(*(
        client.call("PUT", f"/rooms/{room}/send/m.room.message/{tag}",
                    {"msgtype": "m.text", "body": "x", "tag": tag}) for tag in tags))


async def settled_orders(clients: list[Client], room: str, total: int,
                         timeout_s: float = 120) -> list[list[str]]:
    """Each server's message order once every server holds `total` (or time is up):
    A and C are still receiving each other's burst when B has both."""
    deadline = time.monotonic() + timeout_s
    while True:
        orders = [await room_order(x, room) for x in clients]
        if all(len(set(o)) >= total for o in orders) or time.monotonic() > deadline:
            return orders
        await asyncio.sleep(0.5)


async def run_three(a: RoostProcess, b: RoostProcess, c: RoostProcess,
                    burst: int) -> dict[str, Any]:
    """A burst from A and a smaller one from C at the same time, in a room of A, B and C."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        alice = await register(session, a.base_url, "alice3")
        bob = await register(session, b.base_url, "bob3")
        carol = await register(session, c.base_url, "carol3")
        room = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        for client in (bob, carol):
            await client.call("POST", f"/join/{quote(room)}?server_name={quote(a.server_name)}",
                              {})
        deadline = time.monotonic() + 60
        while min([await joined_count(x, room) for x in (alice, bob, carol)]) < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("the three servers did not all see three members")
            await asyncio.sleep(0.1)
        token = (await bob.call("GET", "/sync?timeout=0"))["next_batch"]
        before = {name: await fetch_counts(s) for name, s in (("a", a), ("b", b), ("c", c))}
        a_tags = [f"b{n}" for n in range(burst)]
        c_tags = [f"c{n}" for n in range(max(1, burst // 10))]
        seen: list[tuple[str, float]] = []
        started = time.monotonic()
        receiver = asyncio.create_task(receive_until(
            bob, room, token, set(a_tags) | set(c_tags), seen, time.monotonic() + 300))
        await asyncio.gather(send_all(alice, room, a_tags), send_all(carol, room, c_tags))
        await receiver
        seconds = round((seen[-1][1] if seen else time.monotonic()) - started, 2)
        orders = await settled_orders([alice, bob, carol], room, len(a_tags) + len(c_tags))
        fetches = {name: fetch_summary(before[name], await fetch_counts(s))
                   for name, s in (("a", a), ("b", b), ("c", c))}
    arrived = [t for t, _ in seen]
    by_sender = [[[t for t in order if t.startswith(p)] for order in orders] for p in "bc"]
    return {
        "messages": {"from_a": len(a_tags), "from_c": len(c_tags)},
        "arrived_at_b": len(set(arrived)),
        "duplicates_at_b": len(arrived) - len(set(arrived)),
        "held_by_a_b_c": [len(set(o)) for o in orders],
        "every_server_holds_all_once": all(len(o) == len(set(o)) == len(a_tags) + len(c_tags)
                                           for o in orders),
        "each_senders_order_same_everywhere": all(
            lists[0] == lists[1] == lists[2] for lists in by_sender),
        "seconds": seconds,
        "fetches": fetches,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--three", action="store_true",
                        help="also a burst both ways in a room of three servers")
    args = parser.parse_args()
    with roost_server(federation=True) as a, roost_server(federation=True) as b:
        result = asyncio.run(run(a, b, args.rate, args.seconds, args.burst))
        print_result("federation_roost_to_roost", result)
        fetched = result["burst"]["receiver_fetches"]
        print(f"burst: events fetched: {fetched['events_fetched']},"
              f" fetched twice: {fetched['fetched_twice']}")
        whole = result["receiver_fetches_whole_run"]
        print(f"whole run: events fetched: {whole['events_fetched']},"
              f" fetched twice: {whole['fetched_twice']}")
        if args.three:
            with roost_server(federation=True) as c:
                three = asyncio.run(run_three(a, b, c, args.burst))
            print_result("federation_three_servers_burst", three)
            for name, counts in three["fetches"].items():
                print(f"three servers, server {name.upper()}: events fetched:"
                      f" {counts['events_fetched']}, fetched twice: {counts['fetched_twice']}")


if __name__ == "__main__":
    main()
