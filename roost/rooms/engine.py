"""The one append path for every event into a room: build, auth, persist, notify.

Appends to one room run on that room's serial queue, so two concurrent sends
can neither fork the room nor lose an extremity; different rooms proceed in
parallel. The queue drains in batches: every append waiting when the worker
wakes is built on top of the previous one and persisted in one transaction,
which is what makes a busy room cheap (one commit for many events).

An append is a *unit* of one or more events that must land together (a send is
one event; a new room's create, join, power levels and the rest are one
unit). A unit that fails its auth checks is dropped on its own; the others in
the batch go on.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet import defer

from roost.rooms.auth import AuthError, check_auth_rules
from roost.rooms.builder import build_event_pdu, depth_after, finalize_pdu, select_auth_event_ids
from roost.rooms.events import Event, EventFormatError
from roost.rooms.hashing import SigningKey
from roost.rooms.versions import RoomVersion, get_room_version
from roost.storage.events import EventRow, EventStore, NewStateGroup, RoomBatch, StoredEvent
from roost.storage.notifier import Notifier
from roost.storage.room_state import RoomStateStore
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)

StateKey = tuple[str, str]
# A full state snapshot is written after this many deltas, bounding reads.
MAX_STATE_CHAIN = 50
MAX_BATCH_EVENTS = 200


class RoomError(Exception):
    """Why an append was refused, in Matrix terms."""

    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message


@dataclass(frozen=True)
class NewEvent:
    """What a caller asks to append; the engine fills in the graph fields."""

    sender: str
    type: str
    content: dict[str, Any]
    state_key: str | None = None
    redacts: str | None = None
    txn_key: tuple[str, str, str] | None = None  # (user, device, txn id)


@dataclass(frozen=True)
class LoadedEvent:
    """An event read back from storage, with what serving it needs."""

    event: Event
    stream_ordering: int | None
    redacted_by: str | None
    rejected: bool


@dataclass
class _Head:
    """A room's tip as the engine appends to it: cached per room in this process."""

    version: RoomVersion
    state: dict[StateKey, str]
    state_events: dict[StateKey, Event]
    extremities: list[str]
    depth: int
    state_group: int | None
    chain_length: int

    def copy(self) -> _Head:
        return replace(self, state=dict(self.state), state_events=dict(self.state_events),
                       extremities=list(self.extremities))


@dataclass
class _Unit:
    events: list[NewEvent]
    result: defer.Deferred[list[Event]]
    new_room: RoomVersion | None = None  # set for the unit that creates the room
    prebuilt_create: Event | None = None  # a v12 create event, built before the room id is known


@dataclass
class _Queue:
    pending: list[_Unit] = field(default_factory=list)
    running: bool = False


class IdAllocator:
    """State group ids, allocated in memory from the table's maximum (single writer)."""

    def __init__(self, current_max: int) -> None:
        self._next = current_max + 1

    def next(self) -> int:
        value = self._next
        self._next += 1
        return value


class RoomEngine:
    def __init__(
        self,
        events: EventStore,
        state: RoomStateStore,
        server_name: str,
        signing_key: SigningKey,
        clock: Any,
        stream: StreamIdGenerator,
        state_groups: IdAllocator,
        notifier: Notifier,
    ) -> None:
        self._events = events
        self._state = state
        self._server_name = server_name
        self._key = signing_key
        self._clock = clock
        self._stream = stream
        self._groups = state_groups
        self._notifier = notifier
        self._heads: dict[str, _Head] = {}
        self._queues: dict[str, _Queue] = {}

    # -- appending ---------------------------------------------------------

    async def create_room(self, version: RoomVersion, events: list[NewEvent]) -> tuple[str, list[Event]]:
        """Append a new room's first events (the create event first) as one unit."""
        if not events or events[0].type != "m.room.create":
            raise ValueError("a room starts with its create event")
        result: defer.Deferred[list[Event]] = defer.Deferred()
        unit = _Unit(events, result, version)
        if version.hydra:
            # A v12 room's id is derived from its create event, so that event is
            # built first, against an empty room, before the room has a queue.
            unit.prebuilt_create = self._build(None, _Head(version, {}, {}, [], 0, None, 0),
                                               events[0])
            room_id = unit.prebuilt_create.room_id
        else:
            room_id = f"!{secrets.token_urlsafe(18)}:{self._server_name}"
        self._enqueue(room_id, unit)
        return room_id, await result

    async def append(self, room_id: str, event: NewEvent) -> Event:
        """Append one event to an existing room; RoomError if it is not allowed."""
        result: defer.Deferred[list[Event]] = defer.Deferred()
        self._enqueue(room_id, _Unit([event], result))
        built = await result
        return built[0]

    def _enqueue(self, room_id: str, unit: _Unit) -> None:
        queue = self._queues.setdefault(room_id, _Queue())
        queue.pending.append(unit)
        self._start_worker(room_id, queue)

    def _start_worker(self, room_id: str, queue: _Queue) -> None:
        if not queue.running:
            queue.running = True
            defer.ensureDeferred(self._drain(room_id, queue))

    async def _drain(self, room_id: str, queue: _Queue) -> None:
        try:
            while queue.pending:
                units: list[_Unit] = []
                count = 0
                while queue.pending and count < MAX_BATCH_EVENTS:
                    unit = queue.pending.pop(0)
                    units.append(unit)
                    count += len(unit.events)
                await self._append_batch(room_id, units)
        finally:
            queue.running = False
            if not queue.pending:
                self._queues.pop(room_id, None)

    async def _append_batch(self, room_id: str, units: list[_Unit]) -> None:
        try:
            head = await self._head(room_id, units[0].new_room)
        except RoomError as e:
            for unit in units:
                _fail(unit.result, e)
            return
        working = head.copy()
        accepted: list[tuple[_Unit, list[Event], list[NewStateGroup]]] = []
        for unit in units:
            before = working.copy()
            try:
                built, groups = self._build_unit(room_id, working, unit)
            except RoomError as e:
                working = before
                _fail(unit.result, e)
                continue
            accepted.append((unit, built, groups))
        if not accepted:
            return
        await self._persist(room_id, head, working, accepted)

    async def _persist(
        self, room_id: str, head: _Head, working: _Head,
        accepted: list[tuple[_Unit, list[Event], list[NewStateGroup]]],
    ) -> None:
        events = [e for _, built, _ in accepted for e in built]
        positions = self._stream.allocate(len(events))
        rows = []
        new_events = [n for unit, _, _ in accepted for n in unit.events]
        groups = [g for _, _, gs in accepted for g in gs]
        group_of = self._groups_by_event(events, groups, head.state_group)
        for event, request, position in zip(events, new_events, positions, strict=True):
            rows.append(_row(event, request, position, group_of[event.event_id]))
        changed = {(e.type, e.state_key): (e.event_id, _membership(e))
                   for e in events if e.state_key is not None}
        new_room = next((u.new_room for u, _, _ in accepted if u.new_room), None)
        creator = events[0].sender
        batch = RoomBatch(
            room_id, rows, groups, changed, list(working.extremities),
            (new_room.identifier, creator, events[0].origin_server_ts) if new_room else None,
        )
        try:
            await self._events.persist_batch(batch)
        except Exception as e:
            self._heads.pop(room_id, None)
            self._stream.finish(positions)
            logger.exception("persisting %d events in %s failed", len(events), room_id)
            for unit, _, _ in accepted:
                _fail(unit.result, RoomError(500, "M_UNKNOWN", f"could not store event: {e}"))
            return
        self._heads[room_id] = working
        self._stream.finish(positions)
        members = {e.state_key for e in events if e.type == "m.room.member" and e.state_key}
        self._notifier.notify("events", self._stream.current, rooms=[room_id], users=members)
        for unit, built, _ in accepted:
            _succeed(unit.result, built)

    def _groups_by_event(
        self, events: list[Event], groups: list[NewStateGroup], start: int | None
    ) -> dict[str, int | None]:
        """Each event's state-after group: a state event opens a new one, others share."""
        result: dict[str, int | None] = {}
        current = start
        group_iter = iter(groups)
        for event in events:
            if event.state_key is not None:
                current = next(group_iter).id
            result[event.event_id] = current
        return result

    async def _head(self, room_id: str, new_room: RoomVersion | None = None) -> _Head:
        head = self._heads.get(room_id)
        if head is not None:
            return head
        if new_room is not None:
            head = _Head(new_room, {}, {}, [], 0, None, 0)
            self._heads[room_id] = head
            return head
        stored = await self._state.room_head(room_id)
        if stored is None:
            raise RoomError(404, "M_NOT_FOUND", "Unknown room")
        version = get_room_version(stored.room_version)
        loaded = await self.get_events(list(stored.current_state.values()))
        state_events = {key: loaded[eid].event for key, eid in stored.current_state.items()
                        if eid in loaded}
        head = _Head(version, dict(stored.current_state), state_events, list(stored.extremities),
                     stored.max_depth, stored.state_group, stored.chain_length)
        self._heads[room_id] = head
        return head

    def _build_unit(
        self, room_id: str, head: _Head, unit: _Unit
    ) -> tuple[list[Event], list[NewStateGroup]]:
        built: list[Event] = []
        groups: list[NewStateGroup] = []
        for i, request in enumerate(unit.events):
            if i == 0 and unit.prebuilt_create is not None:
                event = unit.prebuilt_create
            else:
                event = self._build(room_id, head, request)
            group = self._advance(head, event)
            if group is not None:
                groups.append(group)
            built.append(event)
        return built, groups

    def _build(self, room_id: str | None, head: _Head, request: NewEvent) -> Event:
        version = head.version
        is_create = request.type == "m.room.create"
        auth_ids = select_auth_event_ids(version, request.type, request.sender, request.state_key,
                                         request.content, head.state)
        pdu = build_event_pdu(
            version, None if (is_create and version.hydra) else room_id, request.sender,
            request.type, request.content, request.state_key,
            prev_event_ids=list(head.extremities), auth_event_ids=auth_ids,
            depth=depth_after([head.depth]) if head.extremities else 1,
            origin_server_ts=int(self._clock.seconds() * 1000), redacts=request.redacts,
        )
        event_id, signed = finalize_pdu(pdu, version, self._server_name, self._key)
        try:
            event = Event.from_built(signed, version, event_id)
        except EventFormatError as e:
            status = 413 if e.errcode == "M_TOO_LARGE" else 400
            raise RoomError(status, e.errcode, str(e)) from None
        auth_map = {key: head.state_events[key] for key in _auth_keys(head, auth_ids)}
        if version.hydra and not is_create and ("m.room.create", "") in head.state_events:
            auth_map[("m.room.create", "")] = head.state_events[("m.room.create", "")]
        try:
            check_auth_rules(version, event, auth_map)
        except AuthError as e:
            raise RoomError(403, "M_FORBIDDEN", e.reason) from None
        return event

    def _advance(self, head: _Head, event: Event) -> NewStateGroup | None:
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

    # -- reading -------------------------------------------------------------

    async def get_events(self, event_ids: list[str]) -> dict[str, LoadedEvent]:
        stored = await self._events.get_events(event_ids)
        return {eid: self._load(s) for eid, s in stored.items()}

    def _load(self, stored: StoredEvent) -> LoadedEvent:
        return LoadedEvent(event_from_storage(stored), stored.stream_ordering, stored.redacted_by,
                           stored.rejected_reason is not None)

    def loaded(self, stored: list[StoredEvent]) -> list[LoadedEvent]:
        return [self._load(s) for s in stored]

    async def current_state_events(self, room_id: str) -> dict[StateKey, Event]:
        head = await self._head(room_id)
        return dict(head.state_events)

    async def membership(self, room_id: str, user_id: str) -> str | None:
        """The user's current membership, from the room's cached head (no query once warm)."""
        head = await self._head(room_id)
        member = head.state_events.get(("m.room.member", user_id))
        return _membership(member) if member is not None else None

    async def room_version(self, room_id: str) -> RoomVersion | None:
        head = self._heads.get(room_id)
        if head is not None:
            return head.version
        identifier = await self._state.room_version(room_id)
        return get_room_version(identifier) if identifier else None


def event_from_storage(stored: StoredEvent) -> Event:
    """Rebuild an Event from its stored canonical JSON without re-hashing it."""
    version = get_room_version(stored.room_version)
    return Event(pdu=json.loads(stored.pdu_json), version=version, event_id=stored.event_id,
                 room_id=stored.room_id, canonical_bytes=stored.pdu_json.encode("utf-8"))


def _auth_keys(head: _Head, auth_ids: list[str]) -> list[StateKey]:
    wanted = set(auth_ids)
    return [key for key, eid in head.state.items() if eid in wanted]


def _membership(event: Event) -> str | None:
    if event.type != "m.room.member":
        return None
    value = event.content.get("membership")
    return value if isinstance(value, str) else None


def _relation(event: Event) -> tuple[str, str, str | None] | None:
    relates = event.content.get("m.relates_to")
    if not isinstance(relates, dict):
        return None
    target, rel_type = relates.get("event_id"), relates.get("rel_type")
    if not isinstance(target, str) or not isinstance(rel_type, str):
        return None
    key = relates.get("key") if rel_type == "m.annotation" else None
    return target, rel_type, key if isinstance(key, str) else None


def _row(event: Event, request: NewEvent, position: int, group: int | None) -> EventRow:
    return EventRow(
        event_id=event.event_id, room_id=event.room_id, type=event.type,
        state_key=event.state_key, sender=event.sender, depth=event.depth,
        origin_server_ts=event.origin_server_ts, pdu_json=event.canonical_bytes.decode("utf-8"),
        prev_event_ids=list(event.prev_event_ids), auth_event_ids=list(event.auth_event_ids),
        stream_ordering=position, state_group=group, membership=_membership(event),
        relation=_relation(event), redacts=event.redacts, txn_key=request.txn_key,
    )


def _succeed(d: defer.Deferred[list[Event]], built: list[Event]) -> None:
    """Resolve a caller's wait, unless the caller went away (its Deferred was cancelled)."""
    if not d.called:
        d.callback(built)


def _fail(d: defer.Deferred[list[Event]], error: Exception) -> None:
    if not d.called:
        d.errback(error)
