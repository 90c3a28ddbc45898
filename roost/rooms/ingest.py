"""The checklist for a PDU received from another server, numbered to the spec.

Spec, server-server API, "Checks performed on receipt of a PDU":

1. Is a valid event, otherwise it is dropped (``check_format``).
2. Passes signature checks, otherwise it is dropped. The cryptography needs
   keys, which the caller fetches asynchronously; ``signatures_to_verify``
   says which servers must have signed.
3. Passes hash checks, otherwise it is redacted before being processed
   further (``check_content_hash_or_redact``).
4. Passes authorisation rules based on the event's auth events, otherwise it
   is rejected (``check_against_auth_events``). The auth events must belong to
   the event's room, in every room version.
5. Passes authorisation rules based on the state before the event, otherwise
   it is rejected (``check_against_state_before``).
6. Passes authorisation rules based on the current state of the room,
   otherwise it is "soft failed" (``is_soft_failed``).

Everything here is pure: no Twisted, no SQL. ``rooms/engine.py`` runs steps 4
to 6 on the room's serial queue; ``federation/ingest.py`` runs 1 to 3.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from roost.rooms.auth import (
    AuthError,
    StateKey,
    auth_events_by_key,
    auth_types_for_event,
    check_auth_rules,
)
from roost.rooms.events import Event, EventFormatError
from roost.rooms.hashing import check_content_hash, servers_that_must_sign
from roost.rooms.redaction import redacted_view
from roost.rooms.versions import RoomVersion

__all__ = [
    "CREATE_KEY",
    "IngestError",
    "SignatureCheck",
    "auth_slice",
    "check_against_auth_events",
    "check_against_state_before",
    "check_content_hash_or_redact",
    "check_format",
    "is_soft_failed",
    "signatures_to_verify",
    "sort_by_auth",
    "sort_by_prevs",
]

CREATE_KEY: StateKey = ("m.room.create", "")


class IngestError(Exception):
    """A PDU failed a step; ``step`` is the checklist number, ``reason`` says why."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"step {step}: {reason}")
        self.step = step
        self.reason = reason


# -- 1. format -----------------------------------------------------------------


def check_format(pdu: Any, version: RoomVersion, room_id: str | None = None) -> Event:
    """Step 1: the PDU as an Event, or IngestError (drop it).

    ``room_id``, when given, is the room the PDU is supposed to be in (the
    room of a transaction's PDU is what the PDU says; for a send_join it is
    the URL's).
    """
    try:
        event = Event.from_pdu(pdu, version)
    except EventFormatError as e:
        raise IngestError(1, e.msg) from None
    if room_id is not None and event.room_id != room_id:
        raise IngestError(1, f"event is in {event.room_id}, not {room_id}")
    return event


# -- 2. signatures -------------------------------------------------------------


@dataclass(frozen=True)
class SignatureCheck:
    """One signature the caller must verify with the key ring before going on.

    ``json_object`` is the PDU as received (without ``unsigned``): signatures
    cover its redacted form, and the key ring redacts nothing, so callers pass
    the redacted copy as ``redacted_pdu``.
    """

    server_name: str
    redacted_pdu: Mapping[str, Any]
    # Keys must have been valid when the event was sent.
    min_valid_until_ms: int


def signatures_to_verify(event: Event) -> list[SignatureCheck]:
    """Step 2: the (server, object) pairs whose signatures must verify.

    The sender's server (not for third-party invites), and for restricted
    joins the authorising server (``servers_that_must_sign``). The signed
    object is the redacted event, which is what signatures cover.
    """
    redacted = redacted_view(event.pdu, event.version)
    servers = sorted(servers_that_must_sign(event.pdu, event.version))
    return [SignatureCheck(s, redacted, key_valid_at(event)) for s in servers]


def key_valid_at(event: Event) -> int:
    """How late the signing key must be valid: from v5 at the event's origin_server_ts
    (rooms/v5 "Signing key validity period"); before v5 any key the server has
    published does."""
    return event.origin_server_ts if event.version.enforce_key_validity else 0


# -- 3. content hash -----------------------------------------------------------


def check_content_hash_or_redact(event: Event) -> tuple[Event, bool]:
    """Step 3: ``(event, False)`` if the content hash matches, else ``(redacted, True)``.

    A redacted event keeps its id, its signatures and its place in the graph;
    only its content is gone.
    """
    if check_content_hash(event.pdu, event.version.strict_canonical_json):
        return event, False
    return event.redacted(), True


# -- 4. auth against the event's own auth events --------------------------------


def check_against_auth_events(
    event: Event,
    auth_events: Mapping[str, Event],
    *,
    rejected_event_ids: Collection[str] = frozenset(),
    create_event: Event | None = None,
) -> None:
    """Step 4: raise IngestError unless ``event`` passes against its own auth events.

    ``auth_events`` maps event id to event and must hold every id the event
    lists (a missing one is an error: fetch it first). An auth event of
    another room rejects the event whatever the room version. In v12 pass the
    room's create event, which events never list.
    """
    version = event.version
    for auth_id in event.auth_event_ids:
        auth_event = auth_events.get(auth_id)
        if auth_event is None:
            raise IngestError(4, f"auth event {auth_id} is unknown")
        if auth_event.room_id != event.room_id:
            raise IngestError(4, f"auth event {auth_id} belongs to room {auth_event.room_id}")
    if create_event is not None and event.type != "m.room.create":
        if create_event.room_id != event.room_id:
            raise IngestError(4, "the create event belongs to another room")
    try:
        keyed = auth_events_by_key(
            version, event, [auth_events[a] for a in event.auth_event_ids],
            create_event=create_event, rejected_event_ids=rejected_event_ids,
        )
        check_auth_rules(version, event, keyed)
    except AuthError as e:
        raise IngestError(4, e.reason) from None


# -- 5. and 6. auth against state ------------------------------------------------


def auth_slice(event: Event, state: Mapping[StateKey, Event]) -> dict[StateKey, Event]:
    """The part of ``state`` the auth rules read for ``event``, plus the create event."""
    wanted = auth_types_for_event(event.type, event.sender, event.state_key, event.content,
                                  event.version)
    chosen = {key: state[key] for key in (*wanted, CREATE_KEY) if key in state}
    return chosen


def check_against_state_before(event: Event, state_before: Mapping[StateKey, Event]) -> None:
    """Step 5: raise IngestError unless ``event`` passes against the state before it."""
    _check_state(5, event, state_before)


def is_soft_failed(event: Event, current_state: Mapping[StateKey, Event]) -> str | None:
    """Step 6: the reason the event fails against the current state, or None if it passes.

    A soft-failed event stays in the graph (later events may reference it) but
    is not shown to clients, does not change the current state and is not
    used as a prev event of new events.
    """
    try:
        _check_state(6, event, current_state)
    except IngestError as e:
        return e.reason
    return None


def _check_state(step: int, event: Event, state: Mapping[StateKey, Event]) -> None:
    if event.type == "m.room.create":
        if state:
            raise IngestError(step, "a create event must start the room")
        try:
            check_auth_rules(event.version, event, {})
        except AuthError as e:
            raise IngestError(step, e.reason) from None
        return
    create = state.get(CREATE_KEY)
    if create is not None and create.room_id != event.room_id:
        raise IngestError(step, "the state is of another room")
    try:
        check_auth_rules(event.version, event, auth_slice(event, state))
    except AuthError as e:
        raise IngestError(step, e.reason) from None


# -- ordering helpers ------------------------------------------------------------


def sort_by_auth(events: Iterable[Event]) -> list[Event]:
    """``events`` with every event after those of its auth events among them.

    Ties (and events whose auth events are elsewhere) keep depth order, then
    event id, so the result is deterministic.
    """
    return _topological(events, lambda e: e.auth_event_ids)


def sort_by_prevs(events: Iterable[Event]) -> list[Event]:
    """``events`` with every event after those of its prev events among them."""
    return _topological(events, lambda e: e.prev_event_ids)


def _topological(events: Iterable[Event], parents: Any) -> list[Event]:
    by_id = {e.event_id: e for e in events}
    ordered: list[Event] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def visit(event: Event) -> None:
        stack: list[tuple[Event, bool]] = [(event, False)]
        while stack:
            current, expanded = stack.pop()
            if current.event_id in placed:
                continue
            if expanded:
                visiting.discard(current.event_id)
                placed.add(current.event_id)
                ordered.append(current)
                continue
            if current.event_id in visiting:
                continue  # a cycle: hashes make one impossible, so just break it
            visiting.add(current.event_id)
            stack.append((current, True))
            for parent_id in sorted(parents(current), reverse=True):
                parent = by_id.get(parent_id)
                if parent is not None and parent_id not in placed:
                    stack.append((parent, False))

    for event in sorted(by_id.values(), key=lambda e: (e.depth, e.event_id)):
        visit(event)
    return ordered
