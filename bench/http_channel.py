"""The client listener's HTTP plumbing alone: CPU per request, no network, no database.

    .venv/bin/python bench/http_channel.py [--requests 20000] [--profile FILE] [--long-poll]

One keep-alive connection of the client listener's Site (RoostSite, its channel and
request classes) over an in-memory transport gets a /sync-shaped request (five
headers, a query string, a bearer token) `requests` times, one after the other as a
long-polling client sends them; a JSON resource with one route answers each at once.
What it measures is what every long-poll delivery pays before and after /sync
itself: the request's parsing, the Request object, routing, the JSON answer and
the finish. bench/http_requests.py measures the same over real sockets, with
noise; this isolates the layer so that before/after pairs differ only there.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from roost.client_api.resource import JsonResource, Requester, RoostSite, Router  # noqa: E402

REQUEST = (
    b"GET /_matrix/client/v3/sync?since=s72_19_4_0_1_1_1_1_0&timeout=30000 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8008\r\n"
    b"Authorization: Bearer syt_dXNlcjE_aBcDeFgHiJkLmNoPqRsT_0a1b2c\r\n"
    b"Accept: */*\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"User-Agent: Python/3.11 aiohttp/3.9.5\r\n\r\n"
)


async def _sync(api: Any) -> dict[str, Any]:
    return {"next_batch": api.arg("since"), "timeout": api.arg("timeout")}


# --long-poll: the handler waits for the bench to wake it, as a long poll waits for a
# message; the request is authenticated by a token known in memory.
_waiting: list[defer.Deferred[None]] = []
_REQUESTER = Requester("@u:x", "DEV", "sess")


class _KnownTokens:
    def known(self, token: str) -> Requester | None:
        return _REQUESTER

    async def authenticate(self, token: str, as_user: str | None = None) -> Requester:
        return _REQUESTER


async def _long_poll(api: Any) -> dict[str, Any]:
    user = api.user.user_id
    woken: defer.Deferred[None] = defer.Deferred()
    _waiting.append(woken)
    await woken
    return {"next_batch": api.arg("since"), "user": user}


def connection(long_poll: bool = False) -> tuple[Any, StringTransport]:
    router = Router()
    if long_poll:
        router.add("GET", "/_matrix/client/v3/sync", _long_poll)
    else:
        router.add("GET", "/_matrix/client/v3/sync", _sync, auth=False)
    site = RoostSite(JsonResource(router, _KnownTokens() if long_poll else None), 1024 * 1024)
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8008))
    protocol.makeConnection(transport)
    return protocol, transport


def _one(protocol: Any, long_poll: bool) -> None:
    protocol.dataReceived(REQUEST)
    if long_poll:
        _waiting.pop().callback(None)


def run(count: int, long_poll: bool = False) -> float:
    protocol, transport = connection(long_poll)
    _one(protocol, long_poll)
    first = transport.value()
    assert first.startswith(b"HTTP/1.1 200 OK"), first[:200]
    body = json.loads(first.split(b"\r\n\r\n", 1)[1])
    expected = {"next_batch": "s72_19_4_0_1_1_1_1_0"}
    expected.update({"user": "@u:x"} if long_poll else {"timeout": "30000"})
    assert body == expected, body
    transport.clear()
    start = time.process_time()
    for _ in range(count):
        _one(protocol, long_poll)
        transport.clear()
    return (time.process_time() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", help="write cProfile stats of one run here")
    parser.add_argument("--long-poll", action="store_true",
                        help="authenticated requests whose handler waits to be woken")
    args = parser.parse_args()
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, args.requests, args.long_poll)
        profile.dump_stats(args.profile)
        calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
        print(json.dumps({"calls_per_request": round(calls / args.requests, 1)}))
    runs = sorted(run(args.requests, args.long_poll) for _ in range(args.repeat))
    print(json.dumps({"benchmark": "http_channel", "long_poll": args.long_poll,
                      "requests": args.requests,
                      "us_per_request_min": round(runs[0], 1),
                      "us_per_request_median": round(runs[len(runs) // 2], 1)}, indent=2))


if __name__ == "__main__":
    main()
