"""The authorisation rules for room versions 1 to 12, numbered to the spec.

This module is the door: it holds ``check_auth_rules`` with rules 1-3, 5-8
and 11 and "Handling redactions", and re-exports what callers use from the
modules the rules are split into, each holding one part of the spec's list:

- ``auth_numbering``: AuthError and the rule numbers as each version has them.
  Comments use the v10/v11 numbers. v12 inserts a rule 2 (the room id names
  the create event), so its later top-level numbers are one higher, and it
  inserts 10.4 (no creators in ``users``), shifting the later power level
  sub-rules too. ``deny`` renders each number as the checked version's spec
  has it, so an AuthError's reason cites the rule a reader will find.
- ``auth_state``: what the rules read (power levels, creators, memberships).
- ``auth_events``: auth events selection and the rules on the auth_events list.
- ``auth_membership``: rule 4, m.room.member.
- ``auth_power_levels``: rule 9, m.room.power_levels.

Uses (spec: "Checks performed on receipt of a PDU"): against the event's own
auth events, key them with ``auth_events_by_key`` (rules on the list itself:
duplicates, rejected entries, a listed v12 create) and call
``check_auth_rules``; against the state before the event or the current state,
pass the state picked by ``auth_types_for_event`` plus the create event.

Rule 4.2.1 (the join_authorised_via_users_server's server signed the event)
needs keys, so signature checking enforces it via ``servers_that_must_sign``.
"""

from __future__ import annotations

from roost.rooms.auth_events import auth_events_by_key, auth_types_for_event
from roost.rooms.auth_membership import check_member
from roost.rooms.auth_numbering import AuthError, deny, deny_as
from roost.rooms.auth_power_levels import check_power_levels
from roost.rooms.auth_state import (
    CREATE,
    CREATE_KEY,
    CREATOR_POWER_LEVEL,
    MEMBER,
    POWER_LEVELS,
    THIRD_PARTY_INVITE,
    AuthEvents,
    Check,
    StateKey,
    get_creators,
    get_named_level,
    get_power_level,
    level_value,
    required_level,
)
from roost.rooms.events import Event, is_valid_user_id, server_name_of
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


def check_auth_rules(version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    """Raise AuthError unless ``event`` is allowed given ``auth_events``.

    ``auth_events`` maps (type, state_key) to events: the event's own auth
    events (see ``auth_events_by_key``) or a slice of some room state. In v12
    the create event must be included under ``(m.room.create, "")``.
    """
    if event.type == CREATE:
        _check_create(version, event)
        return
    check = Check(version, event, auth_events, _check_auth_events(version, event, auth_events))
    # Rule 3: a room that does not federate admits only its creator's server.
    if check.create.content.get("m.federate") is False:
        if server_name_of(event.sender) != server_name_of(check.create.sender):
            check.deny("3", "the room does not federate")
    if event.type == "m.room.aliases" and version.aliases_auth_rule:  # 4 (v1-v5 only)
        if event.state_key is None:
            deny_as("4.1", "m.room.aliases needs a state_key")
        if event.state_key != server_name_of(event.sender):
            deny_as("4.2", "m.room.aliases' state_key must be the sender's server")
        return
    if event.type == MEMBER:
        check_member(check)
    else:
        _check_non_member(check)


def _check_create(version: RoomVersion, event: Event) -> None:
    """Rule 1: the create event."""
    if event.prev_event_ids:  # 1.1
        deny(version, "1.1", "the create event has prev_events")
    if version.hydra:  # 1.2 (v12)
        if "room_id" in event.fields:
            deny(version, "1.2", "a v12 create event must not have a room_id")
    elif server_name_of(event.room_id) != server_name_of(event.sender):  # 1.2
        deny(version, "1.2", "room_id and sender are on different servers")
    if "room_version" in event.content:  # 1.3
        room_version = event.content["room_version"]
        if not isinstance(room_version, str) or room_version not in KNOWN_ROOM_VERSIONS:
            deny(version, "1.3", f"unknown room version {room_version!r}")
    if not version.creator_is_sender and "creator" not in event.content:  # 1.4 (v10)
        deny(version, "1.4", "the create event has no creator")
    if version.additional_creators and "additional_creators" in event.content:  # 1.4 (v12)
        additional = event.content["additional_creators"]
        if not isinstance(additional, list) or not all(map(is_valid_user_id, additional)):
            deny_as("1.4", "additional_creators must be a list of user ids")


def _check_auth_events(version: RoomVersion, event: Event, auth_events: AuthEvents) -> Event:
    """Rule 2 (v12: 2 and 3): the auth events fit the event and belong to its room.

    Returns the create event. Rules 2.1 and 2.3 concern the listed ids and are
    applied by ``auth_events_by_key``.
    """
    create = auth_events.get(CREATE_KEY)
    if version.hydra and (create is None or create.room_id != event.room_id):
        deny_as("2", "the room id does not name the room's create event")  # 2 (v12)
    wanted = auth_types_for_event(event.type, event.sender, event.state_key, event.content, version)
    allowed = {*wanted, CREATE_KEY}
    for key, auth_event in auth_events.items():
        if key != (auth_event.type, auth_event.state_key):
            deny(version, "2.2", f"auth event {auth_event.event_id} is filed under {key}")
        if key not in allowed:
            deny(version, "2.2", f"auth event {key} is not one the event needs")
        if auth_event.room_id != event.room_id:
            deny(version, "2.5", f"auth event {auth_event.event_id} is from another room")
    if create is None:
        deny(version, "2.4", "no create event among the auth events")
    return create


def _check_non_member(check: Check) -> None:
    """Rules 5 to 10: every event that is neither create nor membership."""
    event = check.event
    if check.membership(event.sender) != "join":  # 5
        check.deny("5", "the sender is not in the room")
    sender_level = check.level(event.sender)
    if event.type == THIRD_PARTY_INVITE:  # 6
        if sender_level < check.named("invite", 0):
            check.deny("6.1", "the sender may not invite")
        return
    if required_level(check.auth_events, event) > sender_level:  # 7
        check.deny("7", f"the sender's power level is too low for {event.type}")
    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:  # 8
        check.deny("8", "state keys starting with @ belong to that user")
    if event.type == POWER_LEVELS:  # 9
        check_power_levels(check, sender_level)
    if event.type == "m.room.redaction" and check.version.redaction_rule_in_auth:  # 11 (v1/v2)
        _check_redaction_v1(check, sender_level)


def _check_redaction_v1(check: Check, sender_level: int | float) -> None:
    """v1/v2 rule 11: the redact level, or the two event ids share a domain."""
    if sender_level >= check.named("redact", 50):  # 11.1
        return
    redacts = check.event.redacts
    if redacts is not None and server_name_of(redacts) == server_name_of(check.event.event_id):
        return  # 11.2
    deny_as("11.3", "the sender may not redact events of other servers")


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
