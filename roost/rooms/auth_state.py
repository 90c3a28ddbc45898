"""What the auth rules read from the auth events: power levels, creators, memberships.

The rules see the room only through ``auth_events``, a map from (type,
state_key) to event. Power levels are read here once for every rule and for
the callers outside the rules (sending, upgrades, the directory, push) so all
of them agree on what a level is in each room version. ``Check`` bundles one
check in progress for the rule modules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from roost.rooms.auth_numbering import deny
from roost.rooms.events import Event
from roost.rooms.versions import RoomVersion

__all__ = [
    "CREATE",
    "CREATE_KEY",
    "CREATOR_POWER_LEVEL",
    "JOIN_RULES",
    "JOIN_RULES_KEY",
    "LEVEL_KEYS",
    "MEMBER",
    "POWER_LEVELS",
    "POWER_LEVELS_KEY",
    "THIRD_PARTY_INVITE",
    "AuthEvents",
    "Check",
    "StateKey",
    "get_creators",
    "get_named_level",
    "get_power_level",
    "join_rule_of",
    "level_value",
    "membership_of",
    "required_level",
    "room_creators",
]

CREATE = "m.room.create"
MEMBER = "m.room.member"
JOIN_RULES = "m.room.join_rules"
POWER_LEVELS = "m.room.power_levels"
THIRD_PARTY_INVITE = "m.room.third_party_invite"

StateKey = tuple[str, str]
AuthEvents = Mapping[StateKey, Event]

CREATE_KEY: StateKey = (CREATE, "")
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")
JOIN_RULES_KEY: StateKey = (JOIN_RULES, "")

# v12: creators outrank every integer power level.
CREATOR_POWER_LEVEL: float = math.inf

# The top-level power levels properties rules 9.1 and 9.5 talk about.
LEVEL_KEYS = "users_default events_default state_default ban redact kick invite".split()


def _is_int(value: object) -> bool:
    """JSON integers only: Python's bool is an int, JSON's true is not."""
    return isinstance(value, int) and not isinstance(value, bool)


def get_creators(create_event: Event, version: RoomVersion) -> frozenset[str]:
    """The room's creators: content.creator (v10), the sender (v11), plus
    content.additional_creators (v12)."""
    if not version.creator_is_sender:
        creator = create_event.content.get("creator")
        return frozenset({creator}) if isinstance(creator, str) else frozenset()
    creators = {create_event.sender}
    if version.additional_creators:
        additional = create_event.content.get("additional_creators")
        if isinstance(additional, list):
            creators.update(user for user in additional if isinstance(user, str))
    return frozenset(creators)


def room_creators(auth_events: AuthEvents, version: RoomVersion) -> frozenset[str]:
    """The creators named by the create event among ``auth_events`` (none without one)."""
    create = auth_events.get(CREATE_KEY)
    return get_creators(create, version) if create is not None else frozenset()


def get_power_level(user_id: str, auth_events: AuthEvents, version: RoomVersion) -> int | float:
    """A user's power level (spec: m.room.power_levels, and the v12 creator note).

    v12 creators have ``CREATOR_POWER_LEVEL`` (infinity) whatever the power
    levels say. Without a power levels event the creator has 100 before v12,
    and everyone else 0.
    """
    creators = room_creators(auth_events, version)
    if version.hydra and user_id in creators:
        return CREATOR_POWER_LEVEL
    power_levels = auth_events.get(POWER_LEVELS_KEY)
    if power_levels is None:
        return 100 if user_id in creators else 0
    users = power_levels.content.get("users")
    if isinstance(users, Mapping):
        level = level_value(users.get(user_id), power_levels.version)
        if level is not None:
            return level
    return get_named_level(auth_events, "users_default", 0)


# v1-v9 "stringy power levels": an integer in base 10, optionally signed, with
# any leading zeroes and surrounding whitespace.
_STRINGY_LEVEL_RE = re.compile(r"\s*([+-]?[0-9]+)\s*")


def level_value(value: object, version: RoomVersion) -> int | None:
    """A power level as the version reads it, or None when it is not one.

    v10+ take integers only. Before, strings holding an integer count (rooms
    "m.room.power_levels events accept values as strings"), and v1-v5, which
    do not enforce canonical JSON, truncate finite floats.
    """
    if _is_int(value):
        return value  # type: ignore[return-value]
    if version.integer_power_levels:
        return None
    if isinstance(value, str):
        match = _STRINGY_LEVEL_RE.fullmatch(value)
        return int(match.group(1)) if match else None
    if isinstance(value, float) and not version.strict_canonical_json and math.isfinite(value):
        return int(value)
    return None


def get_named_level(auth_events: AuthEvents, name: str, default: int) -> int:
    """A top-level level (``invite``, ``kick``, ``ban``, ``redact``, ...) or ``default``."""
    power_levels = auth_events.get(POWER_LEVELS_KEY)
    if power_levels is None:
        return default
    level = level_value(power_levels.content.get(name), power_levels.version)
    return default if level is None else level


def required_level(auth_events: AuthEvents, event: Event) -> int:
    """The event type's *required power level*: events[type], else the state/events default."""
    power_levels = auth_events.get(POWER_LEVELS_KEY)
    events = power_levels.content.get("events") if power_levels is not None else None
    if isinstance(events, Mapping) and power_levels is not None:
        level = level_value(events.get(event.type), power_levels.version)
        if level is not None:
            return level
    if event.is_state:
        return get_named_level(auth_events, "state_default", 50)
    return get_named_level(auth_events, "events_default", 0)


def membership_of(auth_events: AuthEvents, user_id: str) -> str | None:
    """A user's current membership, or None when they have no member event."""
    member = auth_events.get((MEMBER, user_id))
    return member.membership if member is not None else None


def join_rule_of(auth_events: AuthEvents) -> str:
    """The current join rule; a room without m.room.join_rules is invite-only."""
    join_rules = auth_events.get(JOIN_RULES_KEY)
    rule = join_rules.content.get("join_rule") if join_rules is not None else None
    return rule if isinstance(rule, str) else "invite"


@dataclass(frozen=True, slots=True)
class Check:
    """One auth check in progress: what every rule reads, and how it rejects."""

    version: RoomVersion
    event: Event
    auth_events: AuthEvents
    create: Event

    def deny(self, number: str, why: str) -> NoReturn:
        deny(self.version, number, why)

    def membership(self, user_id: str | None) -> str | None:
        return membership_of(self.auth_events, user_id or "")

    def level(self, user_id: str | None) -> int | float:
        return get_power_level(user_id or "", self.auth_events, self.version)

    def named(self, name: str, default: int) -> int:
        return get_named_level(self.auth_events, name, default)
