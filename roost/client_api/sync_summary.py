"""What /sync says about a room besides its events: a joined room's `summary` (heroes and
member counts), and which stripped state an invite or knock shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roost.rooms.engine_types import MembersOverview
from roost.rooms.events import Event

MAX_HEROES = 5
INVITE_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                      "m.room.canonical_alias", "m.room.encryption", "m.room.topic")
# State whose change can change the summary (or whether heroes are needed).
SUMMARY_TYPES = frozenset({"m.room.member", "m.room.name", "m.room.canonical_alias"})


def room_summary(state: Mapping[tuple[str, str], Event], members: MembersOverview,
                 user_id: str) -> dict[str, Any]:
    """`m.joined_member_count`, `m.invited_member_count` and `m.heroes`.

    Heroes are the other joined and invited members (or, in a room everyone
    else has left, those who left), the earliest in user id order, at most
    five; they are sent only when the room has neither a name nor an alias,
    when clients need them to name it. `members` is counted once per room head
    (RoomEngine.members_overview), not on every sync of a big room.
    """
    summary: dict[str, Any] = {"m.joined_member_count": members.joined,
                               "m.invited_member_count": members.invited}
    if not _named(state):
        others = [u for u in members.first_current if u != user_id][:MAX_HEROES]
        if not others:
            others = [u for u in members.first_former if u != user_id][:MAX_HEROES]
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
