"""Local events built on a room's head: laid out, hashed, signed, checked, and the head moved.

The engine's queue hands each batch a working copy of the room's head; this
builds every requested event on top of it in turn (each the previous one's
only prev event), so a whole batch is one straight line in the room's graph.
A state event opens a new state group: a delta on the previous group, or a
full copy when the chain of deltas has grown to MAX_STATE_CHAIN.
"""

from __future__ import annotations

from typing import Any, Protocol

from roost.rooms.auth import AuthError, check_auth_rules
from roost.rooms.builder import (
    auth_state_keys,
    build_event_pdu,
    depth_after,
    finalize_pdu,
    make_event_id,
    select_auth_event_ids,
)
from roost.rooms.engine_types import (
    MAX_STATE_CHAIN,
    NewEvent,
    RoomError,
    RoomHead,
    event_row,
)
from roost.rooms.events import Event, EventFormatError
from roost.rooms.hashing import SigningKey, add_content_hash, reference_hash_b64
from roost.rooms.ingest import auth_slice
from roost.storage.events import EventRow, NewStateGroup


class StateGroupIds(Protocol):
    """What hands out state group ids (the engine's IdAllocator)."""

    def next(self) -> int: ...


class LocalEventBuilder:
    def __init__(self, server_name: str, signing_key: SigningKey, clock: Any,
                 state_groups: StateGroupIds) -> None:
        self._server_name = server_name
        self._key = signing_key
        self._clock = clock
        self._groups = state_groups

    def build_unit(
        self, room_id: str, head: RoomHead, requests: list[NewEvent],
        prebuilt_create: Event | None = None,
    ) -> tuple[list[Event], list[NewStateGroup]]:
        """Build `requests` in order on `head` (moved past each); RoomError if one fails."""
        built: list[Event] = []
        groups: list[NewStateGroup] = []
        for i, request in enumerate(requests):
            if i == 0 and prebuilt_create is not None:
                event = prebuilt_create
            else:
                event = self.build(room_id, head, request)
            group = self.advance(head, event)
            if group is not None:
                groups.append(group)
            built.append(event)
        return built, groups

    def build(self, room_id: str | None, head: RoomHead, request: NewEvent,
              ts_bump: int = 0) -> Event:
        """One event on `head`, signed and checked against the auth rules (head unchanged).

        ``ts_bump`` moves origin_server_ts that many milliseconds on: a v12 create
        event that would found a room id already taken is built again a ms later.
        """
        version = head.version
        is_create = request.type == "m.room.create"
        auth_keys = auth_state_keys(version, request.type, request.sender, request.state_key,
                                    request.content, head.state)
        auth_ids = list(dict.fromkeys(head.state[key] for key in auth_keys))  # as selected
        pdu = build_event_pdu(
            version, None if (is_create and version.hydra) else room_id, request.sender,
            request.type, request.content, request.state_key,
            prev_event_ids=list(head.extremities), auth_event_ids=auth_ids,
            depth=depth_after([head.depth]) if head.extremities else 1,
            origin_server_ts=int(self._clock.seconds() * 1000) + ts_bump, redacts=request.redacts,
            reference_hashes=_known_references(head, auth_ids),
        )
        event_id, signed = finalize_pdu(pdu, version, self._server_name, self._key)
        try:
            event = Event.from_local_build(signed, version, event_id)
        except EventFormatError as e:
            status = 413 if e.errcode == "M_TOO_LARGE" else 400
            raise RoomError(status, e.errcode, str(e)) from None
        # Each state key holds its own event, so these are the keys of the auth ids.
        auth_map = {key: head.state_events[key] for key in auth_keys}
        if version.hydra and not is_create and ("m.room.create", "") in head.state_events:
            auth_map[("m.room.create", "")] = head.state_events[("m.room.create", "")]
        try:
            check_auth_rules(version, event, auth_map)
        except AuthError as e:
            raise RoomError(403, "M_FORBIDDEN", e.reason) from None
        return event

    def template(self, room_id: str, head: RoomHead, sender: str, event_type: str,
                 content: dict[str, Any], state_key: str | None = None) -> dict[str, Any]:
        """An unsigned event on `head` for another server to sign (make_join, make_leave);
        RoomError 403 if it would not pass auth against the head's state (as far as a
        template can show: a remote restricted join still needs its authorising
        server's signature)."""
        version = head.version
        auth_ids = select_auth_event_ids(version, event_type, sender, state_key, content,
                                         head.state)
        template = build_event_pdu(
            version, room_id, sender, event_type, content, state_key,
            prev_event_ids=list(head.extremities), auth_event_ids=auth_ids,
            depth=depth_after([head.depth]), origin_server_ts=int(self._clock.seconds() * 1000),
            reference_hashes=_known_references(head, auth_ids),
        )
        if version.event_id_in_pdu:  # the joining server makes its own; this one is a placeholder
            template["event_id"] = make_event_id(self._server_name)
        try:
            probe = Event.from_pdu(dict(add_content_hash(template), signatures={}), version)
            check_auth_rules(version, probe, auth_slice(probe, head.state_events))
        except EventFormatError as e:
            raise RoomError(400, e.errcode, e.msg) from None
        except AuthError as e:
            raise RoomError(403, "M_FORBIDDEN", e.reason) from None
        return template

    def advance(self, head: RoomHead, event: Event) -> NewStateGroup | None:
        """Move the head past `event`; return the state group it opens, if a state event."""
        head.extremities = [event.event_id]
        head.depth = event.depth
        if event.state_key is None:
            return None
        key = (event.type, event.state_key)
        head.state[key] = event.event_id
        head.state_events[key] = event
        if head.state_group is None or head.chain_length >= MAX_STATE_CHAIN:
            group = NewStateGroup(self._groups.next(), None, 0, dict(head.state))
        else:
            group = NewStateGroup(self._groups.next(), head.state_group, head.chain_length + 1,
                                  {key: event.event_id})
        head.state_group, head.chain_length = group.id, group.chain_length
        return group


def groups_by_event(events: list[Event], groups: list[NewStateGroup],
                    start: int | None) -> dict[str, int | None]:
    """Each event's state-after group: a state event opens a new one, others share."""
    result: dict[str, int | None] = {}
    current = start
    group_iter = iter(groups)
    for event in events:
        if event.state_key is not None:
            current = next(group_iter).id
        result[event.event_id] = current
    return result


def local_row(event: Event, request: NewEvent, position: int, group: int | None) -> EventRow:
    """A built local event as storage persists it (with the send's txn key)."""
    return event_row(event, position, group, txn_key=request.txn_key)


def _known_references(head: RoomHead, auth_ids: list[str]) -> dict[str, str] | None:
    """v1/v2: the reference hashes of the auth and prev events the head holds."""
    if not head.version.reference_pairs:
        return None
    wanted = {*auth_ids, *head.extremities}
    return {e.event_id: reference_hash_b64(e) for e in head.state_events.values()
            if e.event_id in wanted}

