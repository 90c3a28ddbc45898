"""Restricted joins (join rules ``restricted`` and ``knock_restricted``): who may join
through membership of another room, and which local user vouches for the join.

Spec (client-server "Restricted rooms", server-server "Restricted rooms"): a user
not invited may join if they are joined to one of the rooms the join rules'
``allow`` list names (``m.room_membership`` entries); the resident server then
names one of its users who may invite in ``join_authorised_via_users_server``
and signs the event (auth rule 4.2/4.3.5). Pure functions over state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from roost.rooms.auth import StateKey, get_named_level, get_power_level
from roost.rooms.events import Event
from roost.rooms.hashing import server_name_of
from roost.rooms.versions import RoomVersion

__all__ = ["allowed_room_ids", "choose_authoriser", "is_restricted"]


def is_restricted(state: Mapping[StateKey, Event], version: RoomVersion) -> bool:
    """Whether the room's join rule is restricted (v8+) or knock_restricted (v10+)."""
    join_rules = state.get(("m.room.join_rules", ""))
    rule = join_rules.content.get("join_rule") if join_rules is not None else None
    return (rule == "restricted" and version.restricted_join_rule) or (
        rule == "knock_restricted" and version.knock_restricted)


def allowed_room_ids(state: Mapping[StateKey, Event]) -> list[str]:
    """The rooms whose members may join: the ``m.room_membership`` entries of ``allow``."""
    join_rules = state.get(("m.room.join_rules", ""))
    allow = join_rules.content.get("allow") if join_rules is not None else None
    if not isinstance(allow, list):
        return []
    return [entry["room_id"] for entry in allow
            if isinstance(entry, Mapping) and entry.get("type") == "m.room_membership"
            and isinstance(entry.get("room_id"), str)]


def choose_authoriser(state: Mapping[StateKey, Event], version: RoomVersion,
                      server_name: str) -> str | None:
    """A joined user of ``server_name`` who may invite (the most powerful; ties by id)."""
    invite_level = get_named_level(state, "invite", 0)
    candidates: list[tuple[Any, str]] = []
    for (event_type, user_id), event in state.items():
        if event_type != "m.room.member" or event.membership != "join":
            continue
        if server_name_of(user_id) != server_name:
            continue
        level = get_power_level(user_id, state, version)
        if level >= invite_level:
            candidates.append((-level, user_id))
    return min(candidates)[1] if candidates else None


def first_joined(user_memberships: Iterable[tuple[str, str | None]]) -> str | None:
    """The first allowed room the user is joined to, from (room id, membership) pairs."""
    for room_id, membership in user_memberships:
        if membership == "join":
            return room_id
    return None
