"""Push evaluation alone: CPU per event for a room of N local members (default 50), all
with the default rules, one of them mentioned in every tenth message.

    .venv/bin/python bench/push_evaluate.py [--members 50] [--events 20000]

This is the part of push work that grows with the room (the rest, one read and one
write per batch of events, does not), measured with process CPU time so that a
loaded machine disturbs it less than the end-to-end send benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from roost.push.evaluate import (  # noqa: E402
    FlatEvent,
    RoomContext,
    compile_rules,
    evaluate_groups,
    group_users,
)
from roost.push.rules import RuleSet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    defaults = compile_rules(RuleSet())
    users = {f"@u{i}:bench.local": defaults for i in range(args.members)}
    groups = group_users(users)
    names = {u: f"User {i}" for i, u in enumerate(users)}
    room = RoomContext(args.members, 0, {})
    contents = []
    for i in range(args.events):
        content = {"msgtype": "m.text", "body": f"message {i} with a few more words in it"}
        if i % 10 == 0:
            content["m.mentions"] = {"user_ids": ["@u7:bench.local"]}
        contents.append(json.dumps(content))
    rows = 0
    started = time.process_time()
    for i, content in enumerate(contents):
        event = {"event_id": f"${i}", "room_id": "!r:bench.local", "type": "m.room.message",
                 "sender": f"@u{i % args.members}:bench.local", "content": json.loads(content)}
        for found, members in evaluate_groups(FlatEvent(event), room, groups, names):
            if found.notify:
                rows += len(members) > 0
    elapsed = time.process_time() - started
    print(json.dumps({"members": args.members, "events": args.events, "rows": rows,
                      "cpu_us_per_event": round(elapsed * 1e6 / args.events, 1)}, indent=2))


if __name__ == "__main__":
    main()
