"""What /sync says about a room besides its events: a joined room's `summary` (heroes and
member counts), and which stripped state an invite or knock shows."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping
from typing import Any

from roost.rooms.events import Event

MAX_HEROES = 5
INVITE_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                      "m.room.canonical_alias", "m.room.encryption", "m.room.topic")
# State whose change can change the summary (or whether heroes are needed).
SUMMARY_TYPES = frozenset({"m.room.member", "m.room.name", "m.room.canonical_alias"})


def room_summary(state: Mapping[tuple[str, str], Event], user_id: str) -> dict[str, Any]:
    """`m.joined_member_count`, `m.invited_member_count` and `m.heroes`.

    Heroes are the other joined and invited members (or, in a room everyone
    else has left, those who left), the earliest in user id order, at most
    five; they are sent only when the room has neither a name nor an alias,
    when clients need them to name it.
    """
    members: dict[str, str] = {}
    for (event_type, state_key), event in state.items():
        if event_type == "m.room.member":
            membership = event.content.get("membership")
            if isinstance(membership, str):
                members[state_key] = membership
    counts = Counter(members.values())
    summary: dict[str, Any] = {"m.joined_member_count": counts["join"],
                               "m.invited_member_count": counts["invite"]}
    if not _named(state):
        # The first few in user id order, without sorting a big room's members.
        others = heapq.nsmallest(MAX_HEROES, (u for u, m in members.items()
                                              if m in ("join", "invite") and u != user_id))
        if not others:
            others = heapq.nsmallest(MAX_HEROES, (u for u, m in members.items()
                                                  if m in ("leave", "ban") and u != user_id))
        summary["m.heroes"] = others
    return summary


def _named(state: Mapping[tuple[str, str], Event]) -> bool:
    name = state.get(("m.room.name", ""))
    alias = state.get(("m.room.canonical_alias", ""))
    return bool((name is not None and name.content.get("name"))
                or (alias is not None and alias.content.get("alias")))


def is_stripped(event: Any) -> bool:
    """A well-formed stripped state event, as another server may send with an invite."""
    return (isinstance(event, dict) and isinstance(event.get("type"), str)
            and isinstance(event.get("state_key"), str) and isinstance(event.get("sender"), str)
            and isinstance(event.get("content"), dict))
