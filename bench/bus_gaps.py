"""How long after a writer's events position the pusher's unread counts follow, on the bus.

    .venv/bin/python bench/bus_gaps.py --seconds 90 [--last 10] [--log /tmp/bus.log]

Run beside `bench/cluster.py --workload fanout` (issue 17): it subscribes to every
replication channel of the local Redis (`*replication:*`), and for the deployment
whose pusher published the most `unread` messages, reports the time from each new
events position (`position`, stream `events`) to the first `unread` message covering
it: what a reader's /sync waits for after its wake-up (push/shared_counts.py), as a
reader on the same Redis sees it. `--last N`: only the last N positions (the
fan-out's measured phase sends the last ones).
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import time
from typing import Any

Message = tuple[float, str, dict[str, Any]]  # (arrival, channel, message)


def listen(seconds: float, host: str, port: int) -> list[Message]:
    """Every message on the replication channels for `seconds` (RESP, no client library)."""
    sock = socket.create_connection((host, port))
    sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$14\r\n*replication:*\r\n")
    sock.settimeout(0.5)
    stream = sock.makefile("rb")
    found: list[Message] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            item = _read(stream)
        except (TimeoutError, OSError):
            stream = sock.makefile("rb")  # a timeout leaves the buffered reader unusable
            continue
        if isinstance(item, list) and len(item) == 4 and item[0] == b"pmessage":
            found.append((time.monotonic(), item[2].decode(), json.loads(item[3])))
    sock.close()
    return found


def _read(stream: Any) -> Any:
    line = stream.readline()
    if not line:
        raise OSError("closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"*":
        return [_read(stream) for _ in range(int(rest))]
    if kind == b"$":
        return stream.read(int(rest) + 2)[:-2]
    return rest


def gaps(messages: list[Message]) -> list[float]:
    """ms from each new events position to the unread message covering it, in order."""
    unread = collections.Counter(ch for _, ch, m in messages if m.get("k") == "unread")
    if not unread:
        return []
    channel = unread.most_common(1)[0][0]
    pending: dict[int, float] = {}
    evaluated = -1
    out = []
    for at, ch, m in messages:
        if ch != channel:
            continue
        if m.get("k") == "position" and m.get("s") == "events":
            position = int(m["p"])
            if position > evaluated and position not in pending:
                pending[position] = at  # heartbeats repeat old positions: not new
        elif m.get("k") == "unread" and m.get("p") is not None:
            evaluated = max(evaluated, int(m["p"]))
            for position in sorted(p for p in pending if p <= evaluated):
                out.append((at - pending.pop(position)) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--last", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--log", default=None, help="also write every message here")
    args = parser.parse_args()
    messages = listen(args.seconds, args.host, args.port)
    if args.log:
        with open(args.log, "w") as f:
            for at, ch, m in messages:
                f.write(f"{at:.4f} {ch} {json.dumps(m)}\n")
    found = gaps(messages)[-args.last:] if args.last else gaps(messages)
    ordered = sorted(found)
    print(json.dumps({"benchmark": "bus_gaps", "positions": len(found),
                      "gaps_ms_in_order": [round(g, 1) for g in found],
                      "p50_ms": round(ordered[len(ordered) // 2], 1) if ordered else None,
                      "max_ms": round(ordered[-1], 1) if ordered else None}))


if __name__ == "__main__":
    main()
