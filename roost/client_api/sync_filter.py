"""The sync filter: validated once, then applied by /sync and the socket.

`parse_filter(body)` checks a filter as the spec types it (Filter,
EventFilter, RoomFilter, RoomEventFilter) and refuses anything else with 400
M_BAD_JSON: a limit that is not a non-negative integer (a string "10"
included), a list that is not a list of strings, a flag that is not a
boolean, an unknown `event_format`. Uploading a filter and passing one
inline go through the same check, so no filter is stored that /sync would
refuse. Unknown keys are ignored, as the spec's open objects allow.

What each field does in /sync:
- `room.rooms`/`not_rooms`: which rooms appear at all; `room.include_leave`:
  left rooms in an initial (or full-state) sync (newly left rooms are always
  in an incremental one: the client must learn it left).
- `room.timeline`: types/not_types/senders/not_senders (`*` globs anywhere in
  a type), rooms/not_rooms, contains_url, limit (default 10, at most
  MAX_TIMELINE_LIMIT), unread_thread_notifications (read by push's field).
- `room.state`: the same matching for the state section, and
  lazy_load_members / include_redundant_members.
- `room.ephemeral`, `room.account_data`, `account_data`, `presence`: types,
  senders (where events have one), rooms, limit.
- `event_fields` (dotted paths, `\\.` for a literal dot) and `event_format`
  (`client`, or `federation` for the events as signed) shape every room
  event served.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from roost.client_api.errors import bad_json

if TYPE_CHECKING:
    from roost.rooms.events import Event

JsonDict = dict[str, Any]
DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 100  # a client wanting more pages back with /messages
_STRING_LISTS = ("types", "not_types", "senders", "not_senders")
_ROOM_LISTS = ("rooms", "not_rooms")
_ROOM_EVENT_FLAGS = ("contains_url", "include_redundant_members", "lazy_load_members",
                     "unread_thread_notifications")


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z")


def _matches(patterns: tuple[str, ...], value: str) -> bool:
    return any(p == value or ("*" in p and _glob(p).match(value)) for p in patterns)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """EventFilter and RoomEventFilter: which events of a section pass, and how many."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    contains_url: bool | None = None

    def wants_room(self, room_id: str) -> bool:
        return (self.rooms is None or room_id in self.rooms) and room_id not in self.not_rooms

    def passes_every_event(self) -> bool:
        """No type, sender or url condition: callers skip asking per event."""
        return (self.types is None and not self.not_types and self.senders is None
                and not self.not_senders and self.contains_url is None)

    def wants_type(self, event_type: str) -> bool:
        if _matches(self.not_types, event_type):
            return False
        return self.types is None or _matches(self.types, event_type)

    def wants(self, event_type: str, sender: str | None = None,
              content: dict[str, Any] | None = None) -> bool:
        if not self.wants_type(event_type):
            return False
        if sender is not None:
            if sender in self.not_senders:
                return False
            if self.senders is not None and sender not in self.senders:
                return False
        if self.contains_url is not None and content is not None:
            if isinstance(content.get("url"), str) != self.contains_url:
                return False
        return True

    def cut(self, items: list[Any]) -> list[Any]:
        """At most `limit` items (the newest, for lists in stream order)."""
        if self.limit is None:
            return items
        return items[-self.limit:] if self.limit else []


def _ignoring(base: EventFilter, senders: frozenset[str]) -> EventFilter:
    return EventFilter(base.limit, base.types, base.not_types, base.senders,
                       tuple(sorted(set(base.not_senders) | senders)), base.rooms,
                       base.not_rooms, base.contains_url)


@dataclass(frozen=True, slots=True)
class SyncFilter:
    """A sync filter; slots, since every WebSocket holds one for as long as it is open."""

    timeline: EventFilter = field(default_factory=lambda: EventFilter(DEFAULT_TIMELINE_LIMIT))
    state: EventFilter = field(default_factory=EventFilter)
    ephemeral: EventFilter = field(default_factory=EventFilter)
    room_account_data: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    presence: EventFilter = field(default_factory=EventFilter)
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False
    event_fields: tuple[str, ...] | None = None
    event_format: str = "client"

    @classmethod
    def from_json(cls, body: Any) -> SyncFilter:
        """A validated filter (400 M_BAD_JSON otherwise), shared with every other
        request and socket that sends the same filter (see `_parsed`)."""
        if not isinstance(body, dict):
            return parse_filter(body)  # refused: not an object
        try:
            key = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError):
            return parse_filter(body)  # not JSON-shaped: parse (and refuse) without sharing
        return _parsed(key)

    @property
    def timeline_limit(self) -> int:
        return DEFAULT_TIMELINE_LIMIT if self.timeline.limit is None else self.timeline.limit

    @property
    def include_presence(self) -> bool:
        return self.presence.types != () and self.presence.limit != 0

    def wants_room(self, room_id: str) -> bool:
        return (self.rooms is None or room_id in self.rooms) and room_id not in self.not_rooms

    def wants_event(self, event_type: str) -> bool:
        return self.timeline.wants_type(event_type)

    def ignoring(self, senders: frozenset[str]) -> SyncFilter:
        """This filter with the user's ignored users' events kept out of timelines."""
        if not senders:
            return self
        return SyncFilter(_ignoring(self.timeline, senders), self.state, self.ephemeral,
                          self.room_account_data, self.account_data, self.presence, self.rooms,
                          self.not_rooms, self.include_leave, self.lazy_load_members,
                          self.include_redundant_members, self.unread_thread_notifications,
                          self.event_fields, self.event_format)

    def shape(self, served: JsonDict, event: Event | None) -> JsonDict:
        """Apply event_format and event_fields to one served event. The whole PDU is
        parsed again from the event's canonical bytes (Event.pdu), so only for the
        federation format."""
        if self.event_format == "federation" and event is not None:
            served = {**event.pdu, "unsigned": served.get("unsigned", {})}
        if self.event_fields is None:
            return served
        out: JsonDict = {}
        for path in self.event_fields:
            _copy_path(served, out, _split_path(path))
        return out


DEFAULT_FILTER = SyncFilter()  # no filter given: one shared instance (it is immutable)


@lru_cache(maxsize=1024)
def _parsed(canonical: str) -> SyncFilter:
    """The filter of a canonical JSON text, parsed once.

    A SyncFilter is immutable, so every /sync request and socket sending the
    same filter shares one: each used to parse its own, and its six
    EventFilters were 0.7 KiB of every idle socket (bench/ws_fanout.py
    --only idle). An invalid filter raises, and errors are not cached.
    """
    return parse_filter(json.loads(canonical))


def _split_path(path: str) -> list[str]:
    parts, current, escaped = [], "", False
    for ch in path:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ".":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _copy_path(source: JsonDict, target: JsonDict, parts: list[str]) -> None:
    value: Any = source
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return
        value = value[part]
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


# -- validation ------------------------------------------------------------------------


def parse_filter(body: Any) -> SyncFilter:
    """Check a filter as the spec types it and build it; 400 M_BAD_JSON naming the field."""
    _object(body, "filter")
    room = _object(body.get("room", {}), "room")
    event_fields = _strings(body.get("event_fields"), "event_fields")
    event_format = body.get("event_format", "client")
    if event_format not in ("client", "federation"):
        raise bad_json("filter event_format must be client or federation")
    timeline_raw = _object(room.get("timeline", {}), "room.timeline")
    state_raw = _object(room.get("state", {}), "room.state")
    timeline = _event_filter(timeline_raw, "room.timeline", room_event=True)
    if timeline.limit is None:
        timeline = EventFilter(DEFAULT_TIMELINE_LIMIT, *_rest(timeline))
    elif timeline.limit > MAX_TIMELINE_LIMIT:
        timeline = EventFilter(MAX_TIMELINE_LIMIT, *_rest(timeline))
    return SyncFilter(
        timeline=timeline,
        state=_event_filter(state_raw, "room.state", room_event=True),
        ephemeral=_event_filter(room.get("ephemeral", {}), "room.ephemeral", room_event=True),
        room_account_data=_event_filter(room.get("account_data", {}), "room.account_data",
                                        room_event=True),
        account_data=_event_filter(body.get("account_data", {}), "account_data"),
        presence=_event_filter(body.get("presence", {}), "presence"),
        rooms=_strings(room.get("rooms"), "room.rooms"),
        not_rooms=_strings(room.get("not_rooms"), "room.not_rooms") or (),
        include_leave=_flag(room.get("include_leave"), "room.include_leave") or False,
        lazy_load_members=bool(state_raw.get("lazy_load_members")),
        include_redundant_members=bool(state_raw.get("include_redundant_members")),
        unread_thread_notifications=timeline_raw.get("unread_thread_notifications") is True,
        event_fields=event_fields,
        event_format=event_format,
    )


def _rest(f: EventFilter) -> tuple[Any, ...]:
    return (f.types, f.not_types, f.senders, f.not_senders, f.rooms, f.not_rooms, f.contains_url)


def _event_filter(raw: Any, where: str, room_event: bool = False) -> EventFilter:
    raw = _object(raw, where)
    limit = raw.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or limit < 0):
        raise bad_json(f"filter {where}.limit must be a non-negative integer")
    lists = {key: _strings(raw.get(key), f"{where}.{key}") for key in _STRING_LISTS}
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    contains_url = None
    if room_event:
        rooms = _strings(raw.get("rooms"), f"{where}.rooms")
        not_rooms = _strings(raw.get("not_rooms"), f"{where}.not_rooms") or ()
        for flag in _ROOM_EVENT_FLAGS:
            _flag(raw.get(flag), f"{where}.{flag}")
        contains_url = raw.get("contains_url")
    return EventFilter(limit, lists["types"], lists["not_types"] or (), lists["senders"],
                       lists["not_senders"] or (), rooms, not_rooms, contains_url)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_json(f"filter {where} must be an object")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"filter {where} must be a list of strings")
    return tuple(value)


def _flag(value: Any, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise bad_json(f"filter {where} must be true or false")
    return value
