"""The sync filter as /sync and the socket apply it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SyncFilter:
    """A sync filter; slots, since every WebSocket holds one for as long as it is open."""

    timeline_limit: int = 10
    types: list[str] | None = None
    not_types: Sequence[str] = ()
    rooms: list[str] | None = None
    not_rooms: Sequence[str] = ()
    lazy_load_members: bool = False
    include_presence: bool = True
    unread_thread_notifications: bool = False

    @classmethod
    def from_json(cls, body: JsonDict) -> SyncFilter:
        room = body.get("room", {})
        timeline = room.get("timeline", {})
        state = room.get("state", {})
        presence_types = body.get("presence", {}).get("types")
        return cls(
            timeline_limit=_timeline_limit(timeline.get("limit")),
            types=timeline.get("types"),
            not_types=tuple(timeline.get("not_types") or ()),
            rooms=room.get("rooms"),
            not_rooms=tuple(room.get("not_rooms") or ()),
            lazy_load_members=bool(state.get("lazy_load_members")),
            include_presence=presence_types != [],
            unread_thread_notifications=timeline.get("unread_thread_notifications") is True,
        )

    def wants_room(self, room_id: str) -> bool:
        return (self.rooms is None or room_id in self.rooms) and room_id not in self.not_rooms

    def wants_event(self, event_type: str) -> bool:
        if event_type in self.not_types:
            return False
        return self.types is None or any(_type_match(p, event_type) for p in self.types)


# The most events one room's timeline carries in one sync answer, whatever the filter
# asks (a client wanting more pages back with /messages).
MAX_TIMELINE_LIMIT = 100


def _timeline_limit(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        return 10
    return max(0, min(value, MAX_TIMELINE_LIMIT))


def _type_match(pattern: str, event_type: str) -> bool:
    return event_type == pattern or (pattern.endswith("*") and event_type.startswith(pattern[:-1]))
