"""A joined room's `summary` in /sync: heroes and member counts, from its state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roost.rooms.events import Event

MAX_HEROES = 5
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
    joined = sum(1 for m in members.values() if m == "join")
    invited = sum(1 for m in members.values() if m == "invite")
    summary: dict[str, Any] = {"m.joined_member_count": joined,
                               "m.invited_member_count": invited}
    if not _named(state):
        others = sorted(u for u, m in members.items() if m in ("join", "invite") and u != user_id)
        if not others:
            others = sorted(u for u, m in members.items() if m in ("leave", "ban") and u != user_id)
        summary["m.heroes"] = others[:MAX_HEROES]
    return summary


def _named(state: Mapping[tuple[str, str], Event]) -> bool:
    name = state.get(("m.room.name", ""))
    alias = state.get(("m.room.canonical_alias", ""))
    return bool((name is not None and name.content.get("name"))
                or (alias is not None and alias.content.get("alias")))
