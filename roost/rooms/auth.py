"""The authorisation rules for room versions 10, 11 and 12, numbered to the spec.

Comments use the v10/v11 numbers. v12 inserts a rule 2 (the room id names the
create event), so its later top-level numbers are one higher, and it inserts
10.4 (no creators in ``users``), shifting the later power level sub-rules too.
``_deny`` renders each number as the checked version's spec has it, so an
AuthError's reason cites the rule a reader will find.

Uses (spec: "Checks performed on receipt of a PDU"): against the event's own
auth events, key them with ``auth_events_by_key`` (rules on the list itself:
duplicates, rejected entries, a listed v12 create) and call
``check_auth_rules``; against the state before the event or the current state,
pass the state picked by ``auth_types_for_event`` plus the create event.

Rule 4.2.1 (the join_authorised_via_users_server's server signed the event)
needs keys, so signature checking enforces it via ``servers_that_must_sign``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from roost.rooms.events import Event, is_valid_user_id, server_name_of
from roost.rooms.hashing import signed_by_any_public_key
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion

__all__ = [
    "CREATOR_POWER_LEVEL",
    "AuthError",
    "AuthEvents",
    "StateKey",
    "auth_events_by_key",
    "auth_types_for_event",
    "check_auth_rules",
    "get_creators",
    "get_named_level",
    "get_power_level",
    "level_value",
    "redaction_takes_effect",
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
_LEVEL_KEYS = "users_default events_default state_default ban redact kick invite".split()


class AuthError(Exception):
    """The event is not allowed by the authorisation rules; ``reason`` says which rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- rule numbering ---------------------------------------------------------


def _rule_number(version: RoomVersion, number: str) -> str:
    """Translate a v10/v11 rule number into ``version``'s numbering.

    v1-v5 have the m.room.aliases rule at 4 (later rules one higher); before
    v8 there is no 4.2 (join_authorised_via_users_server) nor 4.3.5
    (restricted); before v7 no knock rule; before v10 no 9.1/9.2 (integer
    levels); v12 adds rule 2 and 10.4.
    """
    parts = [int(p) for p in number.split(".")]
    top = parts[0]
    if top == 4 and len(parts) > 1:
        if not version.restricted_join_rule:
            if parts == [4, 3, 7]:
                parts = [4, 3, 6]
            if parts[1] >= 3:
                parts[1] -= 1
            if not version.knock_join_rule and parts[1] == 7:
                parts[1] = 6  # the unknown membership rule follows ban directly
    if top == 9 and len(parts) > 1:
        if not version.integer_power_levels:
            parts[1] = max(parts[1] - 2, 1)
        if version.hydra and parts[1] >= 4:
            parts[1] += 1
    if version.aliases_auth_rule and top >= 4:
        parts[0] = top + 1
    if version.hydra and top >= 2:
        parts[0] = top + 1
    return ".".join(map(str, parts))


def _deny(version: RoomVersion, number: str, why: str) -> NoReturn:
    """Reject, citing rule ``number`` (v10/v11 numbering) as ``version`` numbers it."""
    raise AuthError(f"rule {_rule_number(version, number)}: {why}")


def _deny_as(number: str, why: str) -> NoReturn:
    """Reject citing ``number`` verbatim, for rules that exist in one version only."""
    raise AuthError(f"rule {number}: {why}")


# -- auth events selection and the auth_events list ---------------------------


def auth_types_for_event(
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
    version: RoomVersion,
) -> list[StateKey]:
    """The state an event's auth_events are selected from (spec: "Auth events selection").

    In v12 the create event is not selected: the room id stands for it.
    """
    if event_type == CREATE:
        return []
    wanted: list[StateKey] = []
    if version.create_event_in_auth_events:
        wanted.append(CREATE_KEY)
    wanted += [POWER_LEVELS_KEY, (MEMBER, sender)]
    if event_type == MEMBER and state_key is not None:
        wanted += _member_auth_types(state_key, content, version)
    return list(dict.fromkeys(wanted))


def _member_auth_types(
    state_key: str, content: Mapping[str, Any], version: RoomVersion
) -> list[StateKey]:
    """The extra state a membership change is authorised against."""
    wanted: list[StateKey] = [(MEMBER, state_key)]
    membership = content.get("membership")
    if membership in ("join", "invite", "knock"):
        wanted.append(JOIN_RULES_KEY)
    if membership == "invite":
        token = _third_party_token(content)
        if token is not None:
            wanted.append((THIRD_PARTY_INVITE, token))
    via = content.get("join_authorised_via_users_server")
    if membership == "join" and version.restricted_join_rule and isinstance(via, str):
        wanted.append((MEMBER, via))
    return wanted


def _third_party_token(content: Mapping[str, Any]) -> str | None:
    """``content.third_party_invite.signed.token`` when it is a string."""
    third_party_invite = content.get("third_party_invite")
    if not isinstance(third_party_invite, Mapping):
        return None
    signed = third_party_invite.get("signed")
    token = signed.get("token") if isinstance(signed, Mapping) else None
    return token if isinstance(token, str) else None


def auth_events_by_key(
    version: RoomVersion,
    event: Event,
    auth_events: Iterable[Event],
    *,
    create_event: Event | None = None,
    rejected_event_ids: Collection[str] = frozenset(),
) -> dict[StateKey, Event]:
    """Key the events ``event`` lists in auth_events, applying rules 2.1-2.3 on the way.

    ``auth_events`` must contain every event the event lists (others are
    ignored). In v12 pass the room's ``create_event``: it is added under
    ``(m.room.create, "")`` as the rules need it, while listing it is itself
    a rejection (v12 rule 3.2).
    """
    by_id = {auth_event.event_id: auth_event for auth_event in auth_events}
    keyed: dict[StateKey, Event] = {}
    for event_id in event.auth_event_ids:
        auth_event = by_id.get(event_id)
        if auth_event is None:
            raise AuthError(f"auth event {event_id} was not supplied")
        if auth_event.state_key is None:
            _deny(version, "2.2", f"auth event {event_id} is not a state event")
        key = (auth_event.type, auth_event.state_key)
        if key in keyed:
            _deny(version, "2.1", f"duplicate auth events for {key}")
        if version.hydra and key == CREATE_KEY:
            _deny(version, "2.2", "the create event must not be listed in auth_events")
        if event_id in rejected_event_ids:
            _deny(version, "2.3", f"auth event {event_id} was rejected")
        keyed[key] = auth_event
    if version.hydra and event.type != CREATE and create_event is not None:
        if create_event.event_id in rejected_event_ids:
            _deny_as("2", "the room's create event was rejected")
        keyed[CREATE_KEY] = create_event
    return keyed


# -- power levels -------------------------------------------------------------


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


def _room_creators(auth_events: AuthEvents, version: RoomVersion) -> frozenset[str]:
    create = auth_events.get(CREATE_KEY)
    return get_creators(create, version) if create is not None else frozenset()


def get_power_level(user_id: str, auth_events: AuthEvents, version: RoomVersion) -> int | float:
    """A user's power level (spec: m.room.power_levels, and the v12 creator note).

    v12 creators have ``CREATOR_POWER_LEVEL`` (infinity) whatever the power
    levels say. Without a power levels event the creator has 100 before v12,
    and everyone else 0.
    """
    creators = _room_creators(auth_events, version)
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


def _required_level(auth_events: AuthEvents, event: Event) -> int:
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


def _membership(auth_events: AuthEvents, user_id: str) -> str | None:
    """A user's current membership, or None when they have no member event."""
    member = auth_events.get((MEMBER, user_id))
    return member.membership if member is not None else None


def _join_rule(auth_events: AuthEvents) -> str:
    """The current join rule; a room without m.room.join_rules is invite-only."""
    join_rules = auth_events.get(JOIN_RULES_KEY)
    rule = join_rules.content.get("join_rule") if join_rules is not None else None
    return rule if isinstance(rule, str) else "invite"


# -- the rules ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Check:
    """One auth check in progress: what every rule reads, and how it rejects."""

    version: RoomVersion
    event: Event
    auth_events: AuthEvents
    create: Event

    def deny(self, number: str, why: str) -> NoReturn:
        _deny(self.version, number, why)

    def membership(self, user_id: str | None) -> str | None:
        return _membership(self.auth_events, user_id or "")

    def level(self, user_id: str | None) -> int | float:
        return get_power_level(user_id or "", self.auth_events, self.version)

    def named(self, name: str, default: int) -> int:
        return get_named_level(self.auth_events, name, default)


def check_auth_rules(version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    """Raise AuthError unless ``event`` is allowed given ``auth_events``.

    ``auth_events`` maps (type, state_key) to events: the event's own auth
    events (see ``auth_events_by_key``) or a slice of some room state. In v12
    the create event must be included under ``(m.room.create, "")``.
    """
    if event.type == CREATE:
        _check_create(version, event)
        return
    check = _Check(version, event, auth_events, _check_auth_events(version, event, auth_events))
    # Rule 3: a room that does not federate admits only its creator's server.
    if check.create.content.get("m.federate") is False:
        if server_name_of(event.sender) != server_name_of(check.create.sender):
            check.deny("3", "the room does not federate")
    if event.type == "m.room.aliases" and version.aliases_auth_rule:  # 4 (v1-v5 only)
        if event.state_key is None:
            _deny_as("4.1", "m.room.aliases needs a state_key")
        if event.state_key != server_name_of(event.sender):
            _deny_as("4.2", "m.room.aliases' state_key must be the sender's server")
        return
    if event.type == MEMBER:
        _check_member(check)
    else:
        _check_non_member(check)


def _check_create(version: RoomVersion, event: Event) -> None:
    """Rule 1: the create event."""
    if event.prev_event_ids:  # 1.1
        _deny(version, "1.1", "the create event has prev_events")
    if version.hydra:  # 1.2 (v12)
        if "room_id" in event.pdu:
            _deny(version, "1.2", "a v12 create event must not have a room_id")
    elif server_name_of(event.room_id) != server_name_of(event.sender):  # 1.2
        _deny(version, "1.2", "room_id and sender are on different servers")
    if "room_version" in event.content:  # 1.3
        room_version = event.content["room_version"]
        if not isinstance(room_version, str) or room_version not in KNOWN_ROOM_VERSIONS:
            _deny(version, "1.3", f"unknown room version {room_version!r}")
    if not version.creator_is_sender and "creator" not in event.content:  # 1.4 (v10)
        _deny(version, "1.4", "the create event has no creator")
    if version.additional_creators and "additional_creators" in event.content:  # 1.4 (v12)
        additional = event.content["additional_creators"]
        if not isinstance(additional, list) or not all(map(is_valid_user_id, additional)):
            _deny_as("1.4", "additional_creators must be a list of user ids")


def _check_auth_events(version: RoomVersion, event: Event, auth_events: AuthEvents) -> Event:
    """Rule 2 (v12: 2 and 3): the auth events fit the event and belong to its room.

    Returns the create event. Rules 2.1 and 2.3 concern the listed ids and are
    applied by ``auth_events_by_key``.
    """
    create = auth_events.get(CREATE_KEY)
    if version.hydra and (create is None or create.room_id != event.room_id):
        _deny_as("2", "the room id does not name the room's create event")  # 2 (v12)
    wanted = auth_types_for_event(event.type, event.sender, event.state_key, event.content, version)
    allowed = {*wanted, CREATE_KEY}
    for key, auth_event in auth_events.items():
        if key != (auth_event.type, auth_event.state_key):
            _deny(version, "2.2", f"auth event {auth_event.event_id} is filed under {key}")
        if key not in allowed:
            _deny(version, "2.2", f"auth event {key} is not one the event needs")
        if auth_event.room_id != event.room_id:
            _deny(version, "2.5", f"auth event {auth_event.event_id} is from another room")
    if create is None:
        _deny(version, "2.4", "no create event among the auth events")
    return create


def _check_non_member(check: _Check) -> None:
    """Rules 5 to 10: every event that is neither create nor membership."""
    event = check.event
    if check.membership(event.sender) != "join":  # 5
        check.deny("5", "the sender is not in the room")
    sender_level = check.level(event.sender)
    if event.type == THIRD_PARTY_INVITE:  # 6
        if sender_level < check.named("invite", 0):
            check.deny("6.1", "the sender may not invite")
        return
    if _required_level(check.auth_events, event) > sender_level:  # 7
        check.deny("7", f"the sender's power level is too low for {event.type}")
    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:  # 8
        check.deny("8", "state keys starting with @ belong to that user")
    if event.type == POWER_LEVELS:  # 9
        _check_power_levels(check, sender_level)
    if event.type == "m.room.redaction" and check.version.redaction_rule_in_auth:  # 11 (v1/v2)
        _check_redaction_v1(check, sender_level)


def _check_redaction_v1(check: _Check, sender_level: int | float) -> None:
    """v1/v2 rule 11: the redact level, or the two event ids share a domain."""
    if sender_level >= check.named("redact", 50):  # 11.1
        return
    redacts = check.event.redacts
    if redacts is not None and server_name_of(redacts) == server_name_of(check.event.event_id):
        return  # 11.2
    _deny_as("11.3", "the sender may not redact events of other servers")


# -- rule 4: membership --------------------------------------------------------


def _check_member(check: _Check) -> None:
    """Rule 4: m.room.member."""
    event = check.event
    if event.state_key is None or "membership" not in event.content:  # 4.1
        check.deny("4.1", "a member event needs a state_key and content.membership")
    # 4.2.1 is enforced when signatures are checked (hashing.servers_that_must_sign).
    membership = event.content["membership"]
    rule = _MEMBER_RULES.get(membership) if isinstance(membership, str) else None
    if rule is None:  # 4.8
        check.deny("4.8", f"unknown membership {membership!r}")
    rule(check)


def _check_join(check: _Check) -> None:
    """Rule 4.3: membership join."""
    event, version = check.event, check.version
    first = _first_creator(check.create, version)
    if event.prev_event_ids == (check.create.event_id,) and event.state_key == first:
        return  # 4.3.1: the creator's first join, straight after the create event
    if event.sender != event.state_key:  # 4.3.2
        check.deny("4.3.2", "one can only join as oneself")
    current = check.membership(event.sender)
    if current == "ban":  # 4.3.3
        check.deny("4.3.3", "the sender is banned")
    join_rule = _join_rule(check.auth_events)
    if join_rule == "invite" or (join_rule == "knock" and version.knock_join_rule):  # 4.3.4
        if current not in ("invite", "join"):
            check.deny("4.3.4", f"the room is {join_rule} only and the sender was not invited")
    elif _is_restricted(join_rule, version):  # 4.3.5
        if current not in ("invite", "join"):  # 4.3.5.1
            _check_authorising_user(check)  # 4.3.5.2, else 4.3.5.3 allows
    elif join_rule != "public":  # 4.3.6 allows public rooms
        check.deny("4.3.7", f"join rule {join_rule!r} does not admit the sender")


def _first_creator(create: Event, version: RoomVersion) -> str | None:
    """Who rule 4.3.1 lets join first: content.creator (v10), the create sender (v11+)."""
    if version.creator_is_sender:
        return create.sender
    creator = create.content.get("creator")
    return creator if isinstance(creator, str) else None


def _is_restricted(join_rule: str, version: RoomVersion) -> bool:
    return (join_rule == "restricted" and version.restricted_join_rule) or (
        join_rule == "knock_restricted" and version.knock_restricted
    )


def _check_authorising_user(check: _Check) -> None:
    """Rule 4.3.5.2: the join_authorised_via_users_server user is joined and may invite."""
    via = check.event.content.get("join_authorised_via_users_server")
    if not isinstance(via, str):
        check.deny("4.3.5.2", "restricted join without join_authorised_via_users_server")
    if check.membership(via) != "join":
        check.deny("4.3.5.2", "the authorising user is not in the room")
    if check.level(via) < check.named("invite", 0):
        check.deny("4.3.5.2", "the authorising user may not invite")


def _check_invite(check: _Check) -> None:
    """Rule 4.4: membership invite."""
    event = check.event
    if "third_party_invite" in event.content:  # 4.4.1
        _check_third_party_invite(check)
        return
    if check.membership(event.sender) != "join":  # 4.4.2
        check.deny("4.4.2", "the inviter is not in the room")
    if check.membership(event.state_key) in ("join", "ban"):  # 4.4.3
        check.deny("4.4.3", "the invitee is joined or banned")
    if check.level(event.sender) < check.named("invite", 0):  # 4.4.4 allows, else 4.4.5
        check.deny("4.4.5", "the sender's power level is below the invite level")


def _check_third_party_invite(check: _Check) -> None:
    """Rule 4.4.1: an invite that redeems an m.room.third_party_invite."""
    event = check.event
    if check.membership(event.state_key) == "ban":  # 4.4.1.1
        check.deny("4.4.1.1", "the invitee is banned")
    third_party_invite = event.content["third_party_invite"]
    signed = third_party_invite.get("signed") if isinstance(third_party_invite, Mapping) else None
    if not isinstance(signed, Mapping):  # 4.4.1.2
        check.deny("4.4.1.2", "third_party_invite has no signed block")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):  # 4.4.1.3
        check.deny("4.4.1.3", "signed needs mxid and token")
    if mxid != event.state_key:  # 4.4.1.4
        check.deny("4.4.1.4", "signed.mxid is not the invitee")
    invite_event = check.auth_events.get((THIRD_PARTY_INVITE, token))
    if invite_event is None:  # 4.4.1.5
        check.deny("4.4.1.5", "no m.room.third_party_invite for the token")
    if invite_event.sender != event.sender:  # 4.4.1.6
        check.deny("4.4.1.6", "the sender did not make the third party invite")
    if not signed_by_any_public_key(signed, _public_keys(invite_event.content)):  # 4.4.1.7 allows
        check.deny("4.4.1.8", "no signature matches the third party invite's keys")


def _public_keys(content: Mapping[str, Any]) -> list[str]:
    """public_key and every public_keys[].public_key of an m.room.third_party_invite."""
    keys = [content.get("public_key")]
    public_keys = content.get("public_keys")
    if isinstance(public_keys, list):
        keys += [entry.get("public_key") for entry in public_keys if isinstance(entry, Mapping)]
    return [key for key in keys if isinstance(key, str)]


def _check_leave(check: _Check) -> None:
    """Rule 4.5: membership leave (leaving, rejecting, kicking, unbanning)."""
    event = check.event
    if event.sender == event.state_key:  # 4.5.1
        leavable = ("invite", "join", "knock") if check.version.knock_join_rule else ("invite", "join")
        if check.membership(event.state_key) not in leavable:
            check.deny("4.5.1", f"one can only leave from {', '.join(leavable)}")
        return
    if check.membership(event.sender) != "join":  # 4.5.2
        check.deny("4.5.2", "the sender is not in the room")
    sender_level = check.level(event.sender)
    if check.membership(event.state_key) == "ban" and sender_level < check.named("ban", 50):
        check.deny("4.5.3", "unbanning needs the ban level")
    if sender_level < check.named("kick", 50) or check.level(event.state_key) >= sender_level:
        check.deny("4.5.5", "the sender may not kick the target")  # else 4.5.4 allows


def _check_ban(check: _Check) -> None:
    """Rule 4.6: membership ban."""
    event = check.event
    if check.membership(event.sender) != "join":  # 4.6.1
        check.deny("4.6.1", "the sender is not in the room")
    sender_level = check.level(event.sender)
    if sender_level < check.named("ban", 50) or check.level(event.state_key) >= sender_level:
        check.deny("4.6.3", "the sender may not ban the target")  # else 4.6.2 allows


def _check_knock(check: _Check) -> None:
    """Rule 4.7: membership knock."""
    event, version = check.event, check.version
    join_rule = _join_rule(check.auth_events)
    knockable = (join_rule == "knock" and version.knock_join_rule) or (
        join_rule == "knock_restricted" and version.knock_restricted
    )
    if not knockable:  # 4.7.1
        check.deny("4.7.1", f"join rule {join_rule!r} does not allow knocking")
    if event.sender != event.state_key:  # 4.7.2
        check.deny("4.7.2", "one can only knock as oneself")
    if check.membership(event.sender) in ("ban", "invite", "join"):  # else 4.7.3 allows
        check.deny("4.7.4", "banned, invited or joined users cannot knock")


_MEMBER_RULES: dict[str, Callable[[_Check], None]] = {
    "join": _check_join,
    "invite": _check_invite,
    "leave": _check_leave,
    "ban": _check_ban,
    "knock": _check_knock,
}


# -- rule 9: power levels --------------------------------------------------------


def _check_power_levels(check: _Check, sender_level: int | float) -> None:
    """Rule 9 (v12: 10; v1-v5: 10): m.room.power_levels. Sub-rules from 9.4 are 10.5+ in
    v12; before v10 there is no 9.1/9.2 and levels may be strings that hold integers."""
    version, content = check.version, check.event.content
    _check_power_levels_shape(version, content)  # 9.1 - 9.3
    if version.hydra:  # 10.4 (v12 only)
        if _room_creators(check.auth_events, version) & set(content.get("users", {})):
            _deny_as("10.4", "creators cannot be given a power level")
    previous = check.auth_events.get(POWER_LEVELS_KEY)
    if previous is None:  # 9.4
        return
    old, new = _Levels.of(previous.content, version), _Levels.of(content, version)
    for name in _LEVEL_KEYS:  # 9.5
        _check_level_change(version, name, old.named, new.named, sender_level)
    maps = ("events", "notifications") if version.notifications_power_levels else ("events",)
    for name in maps:  # 9.6, 9.7
        _check_map_changes(version, old.maps[name], new.maps[name], sender_level)
    _check_user_changes(version, check.event.sender, old.maps["users"], new.maps["users"],
                        sender_level)


@dataclass(frozen=True, slots=True)
class _Levels:
    """A power levels content read as integers (stringy levels parsed, others dropped)."""

    named: dict[str, int]
    maps: dict[str, dict[str, int]]

    @classmethod
    def of(cls, content: Mapping[str, Any], version: RoomVersion) -> _Levels:
        named = {name: level for name in _LEVEL_KEYS
                 if (level := level_value(content.get(name), version)) is not None}
        maps: dict[str, dict[str, int]] = {}
        for name in ("events", "notifications", "users"):
            raw = content.get(name)
            raw = raw if isinstance(raw, Mapping) else {}
            maps[name] = {key: level for key, value in raw.items()
                          if (level := level_value(value, version)) is not None}
        return cls(named, maps)


def _check_power_levels_shape(version: RoomVersion, content: Mapping[str, Any]) -> None:
    """Rules 9.1-9.3: integer levels, integer maps, users keyed by user id.

    Before v10 only 9.3 exists, with strings holding integers allowed; a level
    that is neither is refused there too, as no server could compare it.
    """
    def is_level(value: object) -> bool:
        return level_value(value, version) is not None

    for name in _LEVEL_KEYS:  # 9.1
        if name in content and not is_level(content[name]):
            _deny(version, "9.1", f"{name} must be an integer")
    for name in ("events", "notifications"):  # 9.2
        value = content.get(name, {})
        if not isinstance(value, Mapping) or not all(map(is_level, value.values())):
            _deny(version, "9.2", f"{name} must map to integers")
    users = content.get("users", {})  # 9.3
    if not isinstance(users, Mapping) or not all(map(is_level, users.values())) \
            or not all(map(is_valid_user_id, users)):
        _deny(version, "9.3", "users must map user ids to integers")


def _check_level_change(
    version: RoomVersion, name: str, old: Mapping[str, int], new: Mapping[str, int], limit: float
) -> None:
    """Rule 9.5: an added, changed or removed level must be within reach, old and new."""
    if old.get(name) == new.get(name):
        return
    if name in old and old[name] > limit:  # 9.5.1
        _deny(version, "9.5.1", f"the current {name} is above the sender's level")
    if name in new and new[name] > limit:  # 9.5.2
        _deny(version, "9.5.2", f"the new {name} is above the sender's level")


def _check_map_changes(
    version: RoomVersion, old: Mapping[str, int], new: Mapping[str, int], limit: float
) -> None:
    """Rules 9.6 and 9.7 for ``events`` or ``notifications``."""
    for key, level in old.items():  # 9.6: changed or removed
        if new.get(key) != level and level > limit:
            _deny(version, "9.6.1", f"the current level for {key} is above the sender's")
    for key, level in new.items():  # 9.7: added or changed
        if old.get(key) != level and level > limit:
            _deny(version, "9.7.1", f"the new level for {key} is above the sender's")


def _check_user_changes(
    version: RoomVersion, sender: str, old: Mapping[str, int], new: Mapping[str, int],
    limit: float,
) -> None:
    """Rules 9.8 and 9.9 for ``users``."""
    for user, level in old.items():  # 9.8: changed or removed, except one's own
        if user != sender and new.get(user) != level and level >= limit:
            _deny(version, "9.8.1", f"{user} is not below the sender's level")
    for user, level in new.items():  # 9.9: added or changed
        if old.get(user) != level and level > limit:
            _deny(version, "9.9.1", f"the new level for {user} is above the sender's")


# -- handling redactions ----------------------------------------------------------


def redaction_takes_effect(
    version: RoomVersion, redaction: Event, redacted: Event, auth_events: AuthEvents
) -> bool:
    """Whether an (authorised) redaction may be applied to ``redacted``.

    Spec: "Handling redactions". The auth rules let almost any member send a
    redaction; whether it redacts is decided here, once both events are known:
    the redacter has the redact level, or is on the same server as the original
    sender. ``auth_events`` is the state to read the redact level from. Events
    of another room are never redacted.
    """
    if redaction.type != "m.room.redaction" or redaction.redacts != redacted.event_id:
        return False
    if redaction.room_id != redacted.room_id:
        return False
    if version.redaction_rule_in_auth:
        return True  # v1/v2: auth rule 11 already decided, on the event ids' domains
    if server_name_of(redaction.sender) == server_name_of(redacted.sender):
        return True
    redact_level = get_named_level(auth_events, "redact", 50)
    return get_power_level(redaction.sender, auth_events, version) >= redact_level
