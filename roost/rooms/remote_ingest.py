"""Remote events in the engine: what became of each, and the work of one ingest.

`_RemoteRun` does the checklist's steps that need the room (the state before
each event, auth against it, soft failure against the current state, forks
merged by state resolution) on the room's serial queue; engine.py schedules it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from roost.rooms.auth import auth_types_for_event, redaction_takes_effect
from roost.rooms.engine_types import (
    MAX_STATE_CHAIN,
    RoomHead,
    StateKey,
    event_from_storage,
    event_row,
)
from roost.rooms.events import Event
from roost.rooms.ingest import (
    IngestError,
    check_against_auth_events,
    check_against_state_before,
    is_soft_failed,
)
from roost.rooms.state_res import create_event_id, resolve_state, walk_auth_chain
from roost.storage.events import EventRow, NewStateGroup, StoredEvent

if TYPE_CHECKING:
    from roost.rooms.engine import RoomEngine

logger = logging.getLogger(__name__)



ACCEPTED = "accepted"  # in the timeline (a stream position), may have changed the state
SOFT_FAILED = "soft_failed"  # in the graph, not shown, did not change the current state
REJECTED = "rejected"  # failed auth: stored as rejected, never state, never shown
OUTLIER = "outlier"  # stored as an outlier (auth or state of other events)
KNOWN = "known"  # already held: nothing done
MISSING = "missing"  # prev or auth events unknown: not stored; fetch them and retry


@dataclass(frozen=True)
class RemoteOutcome:
    """What became of one remote event handed to the engine."""

    event_id: str
    status: str
    reason: str | None = None
    # For accepted and soft-failed events: the state before the event.
    state_before: dict[StateKey, str] | None = None


class _StoredResStore:
    """State resolution's store over the database plus events not yet persisted."""

    def __init__(self, engine: RoomEngine, pending: Mapping[str, Event],
                 rejected: set[str] | None = None) -> None:
        self._engine = engine
        self._pending = pending
        self._rejected = rejected or set()

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        ids = [e for e in event_ids if e not in self._rejected]
        found = {e: self._pending[e] for e in ids if e in self._pending}
        rest = [e for e in ids if e not in found]
        loaded = await self._engine.get_events(rest)
        found.update({e: le.event for e, le in loaded.items() if not le.rejected})
        return found

    async def get_auth_chain_difference(self, room_id: str, state_sets: list[set[str]]) -> set[str]:
        if not state_sets:
            return set()
        chains = [await self._chain(s) for s in state_sets]
        return set.union(*chains) - set.intersection(*chains)

    async def _chain(self, event_ids: set[str]) -> set[str]:
        """The auth chain through the events not yet persisted, then the stored edges."""
        chain = walk_auth_chain(event_ids, self._pending)
        stored = {e for e in chain if e not in self._pending}
        return chain | await self._engine._events.auth_chain_ids(list(stored))


class _RemoteRun:
    """One ingest of remote events into one room: checks, state, and the rows to write.

    With `history`, the events are backfilled history: checked the same way
    (steps 4 and 5) and given state groups, but never soft-failed against the
    current state and never moving the room's head. An event whose state before
    it cannot be had (its prev events are neither held with their state nor
    given one) is checked against its own auth events only; an event held as an
    outlier (send_join's state, say) is taken into the timeline.
    """

    def __init__(self, engine: RoomEngine, room_id: str, head: RoomHead,
                 history: bool = False) -> None:
        self.engine = engine
        self.history = history
        self.room_id = room_id
        self.head = head
        self.working = head.copy()
        self.version = head.version
        self.outcomes: dict[str, RemoteOutcome] = {}
        # (event, status, state group, reason), in the order they are to be written.
        self.rows: list[tuple[Event, str, int | None, str | None]] = []
        self.groups: list[NewStateGroup] = []
        self.known: dict[str, Event] = {}  # every event we hold or are adding
        self.stored: dict[str, StoredEvent] = {}
        self.pending: dict[str, Event] = {}  # added by this run (not yet in the database)
        self.rejected: set[str] = set()
        # Redactions let in whose target is known but which may not redact it (spec:
        # "Handling redactions"; another room's event, or another server's without the
        # redact level): stored as events, never applied.
        self.ineffective_redactions: set[str] = set()
        self.after: dict[str, tuple[int, dict[StateKey, str]]] = {}  # state after, this run
        self.group_states: dict[int, dict[StateKey, str]] = {}
        self.chains: dict[int, int] = {}
        if head.state_group is not None:
            self.chains[head.state_group] = head.chain_length
            self.group_states[head.state_group] = dict(head.state)

    async def load_known(self, events: list[Event], outliers: list[Event],
                         state_before: Mapping[str, Mapping[StateKey, str]]) -> None:
        wanted: set[str] = set(self.working.extremities)
        for event in (*events, *outliers):
            wanted.add(event.event_id)
            wanted.update(event.prev_event_ids)
            wanted.update(event.auth_event_ids)
        for state in state_before.values():
            wanted.update(state.values())
        if self.version.hydra:
            wanted.add(create_event_id(self.room_id))
        self.stored = await self.engine._events.get_events(sorted(wanted))
        for event_id, stored in self.stored.items():
            self.known[event_id] = event_from_storage(stored)
            if stored.rejected_reason is not None:
                self.rejected.add(event_id)

    def _create(self) -> Event | None:
        if not self.version.hydra:
            return None
        return self.known.get(create_event_id(self.room_id))

    def _own_auth(self, event: Event) -> str | None:
        try:
            check_against_auth_events(event, self.known, rejected_event_ids=self.rejected,
                                      create_event=self._create())
        except IngestError as e:
            return e.reason
        return None

    def _hold(self, event: Event, status: str, group: int | None, reason: str | None) -> None:
        self.known[event.event_id] = event
        self.pending[event.event_id] = event
        if status == REJECTED:
            self.rejected.add(event.event_id)
        self.rows.append((event, status, group, reason))

    def add_outlier(self, event: Event) -> None:
        if event.event_id in self.known or event.room_id != self.room_id:
            self.outcomes.setdefault(event.event_id, RemoteOutcome(
                event.event_id, KNOWN if event.event_id in self.known else MISSING,
                None if event.event_id in self.known else "event of another room"))
            return
        reason = self._own_auth(event)
        self._hold(event, REJECTED if reason else OUTLIER, None, reason)
        self.outcomes[event.event_id] = RemoteOutcome(
            event.event_id, REJECTED if reason else OUTLIER, reason)

    async def add_event(self, event: Event, given: Mapping[StateKey, str] | None) -> None:
        event_id = event.event_id
        if event_id in self.outcomes and self.outcomes[event_id].status != OUTLIER:
            return
        if event_id in self.known and not self._promotable(event_id):
            self.outcomes[event_id] = RemoteOutcome(event_id, KNOWN)
            return
        if event.room_id != self.room_id:
            self.outcomes[event_id] = RemoteOutcome(event_id, MISSING, "event of another room")
            return
        unknown = [a for a in event.auth_event_ids if a not in self.known]
        if unknown:
            self.outcomes[event_id] = RemoteOutcome(event_id, MISSING, f"unknown auth events {unknown}")
            return
        before = await self._state_before(event, given)
        if before is None and self.history:
            self._add_unstated_history(event)
            return
        if before is None:
            self.outcomes[event_id] = RemoteOutcome(event_id, MISSING, "unknown prev events")
            return
        before_group, before_state = before
        reason = self._own_auth(event)  # step 4
        if reason is None:  # step 5
            try:
                check_against_state_before(event, await self._slice(event, before_state))
            except IngestError as e:
                reason = e.reason
        if reason is not None:
            group = self._ensure_group(before_group, before_state)
            self.after[event_id] = (group, before_state)
            self._hold(event, REJECTED, group, reason)
            self.outcomes[event_id] = RemoteOutcome(event_id, REJECTED, reason)
            return
        group, after = self._state_after(event, before_group, before_state)
        self.after[event_id] = (group, after)
        if event.redacts is not None and not await self._redaction_applies(event, before_state):
            self.ineffective_redactions.add(event_id)
        if self.history:
            self._hold(event, ACCEPTED, group, None)
            self.outcomes[event_id] = RemoteOutcome(event_id, ACCEPTED, None, before_state)
            return
        soft = None
        if self.working.extremities:  # step 6 (a room just joined has no current state yet)
            soft = is_soft_failed(event, self.working.state_events)
        if soft is not None:
            self._hold(event, SOFT_FAILED, group, soft)
            self.outcomes[event_id] = RemoteOutcome(event_id, SOFT_FAILED, soft, before_state)
            return
        self._hold(event, ACCEPTED, group, None)
        self.outcomes[event_id] = RemoteOutcome(event_id, ACCEPTED, None, before_state)
        await self._advance_head(event, group, after)

    async def _redaction_applies(self, redaction: Event, before: Mapping[StateKey, str]) -> bool:
        """Whether an authorised redaction may redact its target, judged once both are held;
        a target not held yet is judged by the room check when it is served."""
        target_id = redaction.redacts
        assert target_id is not None
        if target_id not in self.known:
            await self._load([target_id])
        target = self.known.get(target_id)
        if target is None:
            return True
        levels = {key: before[key] for key in (("m.room.create", ""), ("m.room.power_levels", ""))
                  if key in before}
        await self._load([i for i in levels.values() if i not in self.known])
        state = {key: self.known[i] for key, i in levels.items() if i in self.known}
        return redaction_takes_effect(self.version, redaction, target, state)

    def _promotable(self, event_id: str) -> bool:
        """History only: held as an outlier that passed its checks, so it may join the
        timeline now."""
        stored = self.stored.get(event_id)
        return (self.history and stored is not None and stored.outlier
                and stored.rejected_reason is None and stored.stream_ordering is None)

    def _add_unstated_history(self, event: Event) -> None:
        reason = self._own_auth(event)
        status = REJECTED if reason else ACCEPTED
        self._hold(event, status, None, reason)
        self.outcomes[event.event_id] = RemoteOutcome(event.event_id, status, reason)

    async def _state_before(
        self, event: Event, given: Mapping[StateKey, str] | None
    ) -> tuple[int | None, dict[StateKey, str]] | None:
        if given is not None:
            return None, dict(given)
        states: list[tuple[int, dict[StateKey, str]]] = []
        for prev_id in event.prev_event_ids:
            state = await self._state_after_known(prev_id)
            if state is None:
                return None
            states.append(state)
        if not states:
            # Only a create event has no prev events. New, it starts a room (not here);
            # as history, the state before it is empty.
            return (None, {}) if self.history and event.type == "m.room.create" else None
        distinct = {g: s for g, s in states}
        if len(distinct) == 1:
            return states[0]
        maps = list(distinct.values())
        if all(m == maps[0] for m in maps[1:]):
            return states[0]
        resolved = await resolve_state(self.room_id, self.version, maps, self._res_store())
        return None, resolved

    async def _state_after_known(self, event_id: str) -> tuple[int, dict[StateKey, str]] | None:
        if event_id in self.after:
            return self.after[event_id]
        stored = self.stored.get(event_id)
        if stored is None:
            stored = (await self.engine._events.get_events([event_id])).get(event_id)
            if stored is None:
                return None
            self.stored[event_id] = stored
        if stored.outlier or stored.state_group is None:
            return None
        group = stored.state_group
        if group not in self.group_states:
            self.group_states[group] = await self.engine._state.state_at_group(group)
        return group, self.group_states[group]

    def _res_store(self) -> _StoredResStore:
        return _StoredResStore(self.engine, self.pending, self.rejected)

    async def _slice(self, event: Event, state: Mapping[StateKey, str]) -> dict[StateKey, Event]:
        wanted = [*auth_types_for_event(event.type, event.sender, event.state_key, event.content,
                                        self.version), ("m.room.create", "")]
        ids = {key: state[key] for key in wanted if key in state}
        await self._load([i for i in ids.values() if i not in self.known])
        return {key: self.known[i] for key, i in ids.items() if i in self.known}

    async def _load(self, event_ids: list[str]) -> None:
        if event_ids:
            for event_id, loaded in (await self.engine.get_events(event_ids)).items():
                self.known[event_id] = loaded.event

    def _ensure_group(self, group: int | None, state: dict[StateKey, str]) -> int:
        if group is not None:
            return group
        new = NewStateGroup(self.engine._groups.next(), None, 0, dict(state))
        self.groups.append(new)
        self.chains[new.id] = 0
        self.group_states[new.id] = state
        return new.id

    def _state_after(self, event: Event, before_group: int | None,
                     before: dict[StateKey, str]) -> tuple[int, dict[StateKey, str]]:
        if event.state_key is None:
            return self._ensure_group(before_group, before), before
        key = (event.type, event.state_key)
        after = {**before, key: event.event_id}
        base = self._ensure_group(before_group, before)
        chain = self.chains.get(base)
        if chain is None or chain >= MAX_STATE_CHAIN:
            new = NewStateGroup(self.engine._groups.next(), None, 0, dict(after))
        else:
            new = NewStateGroup(self.engine._groups.next(), base, chain + 1, {key: event.event_id})
        self.groups.append(new)
        self.chains[new.id] = new.chain_length
        self.group_states[new.id] = after
        return new.id, after

    async def _advance_head(self, event: Event, group: int, after: dict[StateKey, str]) -> None:
        """The event is accepted: it replaces its prevs as an extremity; recompute the state."""
        working = self.working
        prevs = set(event.prev_event_ids)
        working.extremities = [e for e in working.extremities if e not in prevs] + [event.event_id]
        working.depth = max(working.depth, event.depth)
        if working.extremities == [event.event_id]:
            current, current_group = after, group
        else:
            states = [await self._state_after_known(e) for e in working.extremities]
            maps = [s[1] for s in states if s is not None]
            current = await resolve_state(self.room_id, self.version, maps, self._res_store())
            current_group = self._ensure_group(None, current)
        await self._load([i for i in current.values() if i not in self.known])
        working.state = dict(current)
        working.state_events = {k: self.known[i] for k, i in current.items() if i in self.known}
        working.state_group = current_group
        working.chain_length = self.chains.get(current_group, 0)


def _remote_row(event: Event, position: int | None, group: int | None, status: str,
                reason: str | None, ineffective: Collection[str] = ()) -> EventRow:
    row = _plain_remote_row(event, position, group, status, reason)
    if event.event_id in ineffective:
        row.redacts = None
    return row


def _plain_remote_row(event: Event, position: int | None, group: int | None, status: str,
                      reason: str | None) -> EventRow:
    return event_row(event, position, group,
                     rejected_reason=reason if status == REJECTED else None,
                     outlier=status in (OUTLIER, REJECTED) and group is None,
                     soft_failed=status == SOFT_FAILED)
