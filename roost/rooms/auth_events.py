"""An event's auth_events: the state they are selected from, and the list's own rules.

Building an event picks its auth events with ``auth_types_for_event`` (spec:
"Auth events selection"); receiving one keys the events it lists with
``auth_events_by_key``, which applies the rules about the list itself
(duplicates, non-state entries, rejected entries, a listed v12 create event)
before ``check_auth_rules`` looks at what they say.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from roost.rooms.auth_numbering import AuthError, deny, deny_as
from roost.rooms.auth_state import (
    CREATE,
    CREATE_KEY,
    JOIN_RULES_KEY,
    MEMBER,
    POWER_LEVELS_KEY,
    THIRD_PARTY_INVITE,
    StateKey,
)
from roost.rooms.events import Event
from roost.rooms.versions import RoomVersion

__all__ = ["auth_events_by_key", "auth_types_for_event"]


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
            deny(version, "2.2", f"auth event {event_id} is not a state event")
        key = (auth_event.type, auth_event.state_key)
        if key in keyed:
            deny(version, "2.1", f"duplicate auth events for {key}")
        if version.hydra and key == CREATE_KEY:
            deny(version, "2.2", "the create event must not be listed in auth_events")
        if event_id in rejected_event_ids:
            deny(version, "2.3", f"auth event {event_id} was rejected")
        keyed[key] = auth_event
    if version.hydra and event.type != CREATE and create_event is not None:
        if create_event.event_id in rejected_event_ids:
            deny_as("2", "the room's create event was rejected")
        keyed[CREATE_KEY] = create_event
    return keyed
