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

import itertools
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from twisted.internet import defer

from roost.rooms import remote_jobs, repeated_sends
from roost.rooms.append_queue import Queue as _Queue
from roost.rooms.append_queue import Unit as _Unit
from roost.rooms.append_queue import as_room_error as _as_room_error
from roost.rooms.append_queue import fail as _fail
from roost.rooms.append_queue import succeed as _succeed
from roost.rooms.engine_types import (
    HISTORY_VISIBILITY,
    MAX_STATE_CHAIN,
    IdAllocator,
    LoadedEvent,
    LoadedState,
    MembersOverview,
    NewEvent,
    PersistCompanion,
    RecentEvent,
    RecentLocalEvents,
    RoomError,
    StateKey,
    changes_visibility,
    event_from_storage,
    guarded,
    membership_of,
)
from roost.rooms.engine_types import RoomHead as _Head
from roost.rooms.event_reader import EventReader, state_before_event
from roost.rooms.events import Event
from roost.rooms.hashing import SigningKey
from roost.rooms.local_build import LocalEventBuilder, groups_by_event, local_row
from roost.rooms.remote_ingest import (
    ACCEPTED,
    KNOWN,
    MISSING,
    OUTLIER,
    REJECTED,
    SOFT_FAILED,
    RemoteOutcome,
)
from roost.rooms.versions import RoomVersion, get_room_version
from roost.storage.events import (
    EventStore,
    NewStateGroup,
    RoomBatch,
    StoredEvent,
    TxnIdConflict,
)
from roost.storage.notifier import Notifier
from roost.storage.room_state import RoomStateStore
from roost.storage.stream_positions import WriterFenced
from roost.storage.streams import StreamIdGenerator

logger = logging.getLogger(__name__)

# What callers of the engine use; the types live in engine_types and remote_ingest.
__all__ = [
    "ACCEPTED", "KNOWN", "MAX_STATE_CHAIN", "MISSING", "OUTLIER", "REJECTED", "SOFT_FAILED",
    "IdAllocator", "LoadedEvent", "NewEvent", "RemoteOutcome", "RoomEngine", "RoomError",
    "StateKey", "event_from_storage",
]

MAX_BATCH_EVENTS = 200
# Room heads kept in memory (each about the size of the room's current state).
MAX_CACHED_HEADS = 1000


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
        max_cached_heads: int = MAX_CACHED_HEADS,
        owns_room: Callable[[str], bool] | None = None,
    ) -> None:
        self._events = events
        # Several processes: the rooms whose events this engine may create (a new room's id
        # is chosen among them); None: every room.
        self._owns_room = owns_room
        self._state = state
        self._server_name = server_name
        self._stream = stream
        # The events stream announces each change once it is readable (storage/streams.py).
        stream.announce_to(notifier, "events")
        self._groups = state_groups
        self._builder = LocalEventBuilder(server_name, signing_key, clock, state_groups)
        # Rooms' heads, least recently used first; bounded (see _keep_head).
        self._heads: OrderedDict[str, _Head] = OrderedDict()
        self._forgets = 0  # forget_heads calls so far (see _head)
        self._max_heads = max(1, max_cached_heads)
        self._queues: dict[str, _Queue] = {}
        self._reserved_ids: set[str] = set()  # v12 room ids being checked for a create
        self._recent = RecentLocalEvents()
        # Events by id, parsed once for every reader (the newest local sends from _recent);
        # big current-state reads from the heads.
        self._reader = EventReader(events, self._heads, self._recent)
        # Push evaluation stored with local messages (set by the evaluator when it runs here).
        self.companion: PersistCompanion | None = None

    # -- appending ---------------------------------------------------------

    async def create_room(self, version: RoomVersion, events: list[NewEvent]) -> tuple[str, list[Event]]:
        """Append a new room's first events (the create event first) as one unit."""
        if not events or events[0].type != "m.room.create":
            raise ValueError("a room starts with its create event")
        result: defer.Deferred[list[Event]] = defer.Deferred()
        unit = _Unit(events, result, version)
        if version.hydra:
            # A v12 room's id is derived from its create event, so that event is
            # built first, against an empty room, before the room has a queue. The
            # same creator with the same content in the same millisecond would found
            # the same id: then the event is built again a millisecond later.
            for bump in range(1000):
                create = self._builder.build(
                    None, _Head(version, {}, {}, [], 0, None, 0), events[0], ts_bump=bump)
                room_id = create.room_id
                if room_id in self._queues or room_id in self._reserved_ids or not self._mine(room_id):
                    continue
                self._reserved_ids.add(room_id)
                try:
                    taken = await self.room_version(room_id) is not None
                finally:
                    self._reserved_ids.discard(room_id)
                if not taken:
                    break
            else:
                raise RoomError(500, "M_UNKNOWN", "could not find a free room id")
            unit.prebuilt_create = create
        else:
            room_id = f"!{secrets.token_urlsafe(18)}:{self._server_name}"
            while not self._mine(room_id):
                room_id = f"!{secrets.token_urlsafe(18)}:{self._server_name}"
        self._enqueue(room_id, unit)
        return room_id, await result

    async def append(self, room_id: str, event: NewEvent) -> Event:
        """Append one event to an existing room; RoomError if it is not allowed."""
        result: defer.Deferred[list[Event]] = defer.Deferred()
        self._enqueue(room_id, _Unit([event], result))
        built = await result
        return built[0]

    def _mine(self, room_id: str) -> bool:
        return self._owns_room is None or self._owns_room(room_id)

    def forget_heads(self, room_ids: Iterable[str]) -> None:
        """Drop the cached heads of rooms another process appended to (they reload from
        storage when next used). Rooms with appends queued here keep theirs."""
        self._forgets += 1  # a head loading meanwhile may predate that write: not kept
        for room_id in room_ids:
            if room_id not in self._queues:
                self._heads.pop(room_id, None)

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
                if queue.pending[0].job is not None:
                    await self._run_job(room_id, queue.pending.pop(0))
                    continue
                units: list[_Unit] = [queue.pending.pop(0)]
                count = len(units[0].events)
                while (not units[0].alone and queue.pending and count < MAX_BATCH_EVENTS
                       and queue.pending[0].job is None and not queue.pending[0].alone):
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
        except Exception as e:
            for unit in units:
                _fail(unit.result, _as_room_error(e))
            return
        # Messages only (no state event): building and persisting them changes neither the
        # head's state nor, without a redaction, what it keeps loaded (forget_loaded), so
        # the heads share those instead of copying a big room's state twice per message.
        stateless = all(unit.prebuilt_create is None and unit.new_room is None
                        and all(n.state_key is None for n in unit.events) for unit in units)
        quiet = stateless and all(n.redacts is None for unit in units for n in unit.events)
        working = head.copy(stateless, quiet)
        accepted: list[tuple[_Unit, list[Event], list[NewStateGroup]]] = []
        for unit in units:
            before = working.copy(stateless, quiet)
            try:
                built, groups = self._builder.build_unit(room_id, working, unit.events,
                                                         unit.prebuilt_create)
            except Exception as e:  # every caller gets an answer, whatever went wrong
                working = before
                _fail(unit.result, _as_room_error(e))
                continue
            accepted.append((unit, built, groups))
        if not accepted:
            if units[0].new_room is not None:
                self._heads.pop(room_id, None)  # the room was never created
            return
        await self._persist(room_id, head, working, accepted)

    async def _persist(
        self, room_id: str, head: _Head, working: _Head,
        accepted: list[tuple[_Unit, list[Event], list[NewStateGroup]]],
    ) -> None:
        events = [e for _, built, _ in accepted for e in built]
        try:
            positions = self._stream.allocate(len(events))
        except WriterFenced as e:  # passed by the other processes: this one is stopping
            self._heads.pop(room_id, None)
            for unit, _, _ in accepted:
                _fail(unit.result, RoomError(503, "M_UNKNOWN", str(e)))
            return
        rows = []
        new_events = [n for unit, _, _ in accepted for n in unit.events]
        groups = [g for _, _, gs in accepted for g in gs]
        group_of = groups_by_event(events, groups, head.state_group)
        for event, request, position in zip(events, new_events, positions, strict=True):
            rows.append(local_row(event, request, position, group_of[event.event_id]))
        changed = {(e.type, e.state_key): (e.event_id, membership_of(e))
                   for e in events if e.state_key is not None}
        if changes_visibility(events):
            working.visibility = None
        working.forget_loaded(events)
        new_room = next((u.new_room for u, _, _ in accepted if u.new_room), None)
        creator = events[0].sender
        batch = RoomBatch(
            room_id, rows, groups, changed, list(working.extremities),
            (new_room.identifier, creator, events[0].origin_server_ts) if new_room else None,
        )
        companion = self.companion
        if companion is not None and new_room is None and not changed:
            # Messages only: the state they were built on is the head's (shared, unchanged).
            batch.push = guarded(companion.prepare, room_id, head.state_events, events,
                                  positions)
        try:
            await self._store(batch, companion)
        except TxnIdConflict:
            self._heads.pop(room_id, None)
            self._stream.finish(positions)
            # Retries of sends made before: answered, the rest queued again (repeated_sends).
            again = await repeated_sends.settle(self._events, self.get_events,
                                                [unit for unit, _, _ in accepted])
            self._queues.setdefault(room_id, _Queue()).pending[0:0] = again
            return
        except Exception as e:
            self._heads.pop(room_id, None)
            self._stream.finish(positions)
            logger.exception("persisting %d events in %s failed", len(events), room_id)
            status = 503 if isinstance(e, WriterFenced) else 500  # passed: this process stops
            for unit, _, _ in accepted:
                _fail(unit.result, RoomError(status, "M_UNKNOWN", f"could not store event: {e}"))
            return
        self._keep_head(room_id, working)
        # Readers get these from here while they are the newest (EventCache._held).
        self._recent.add(positions, events, [group_of[e.event_id] for e in events])
        if batch.push is not None and companion is not None:
            guarded(companion.committed, batch.push)
        members = {e.state_key for e in events if e.type == "m.room.member" and e.state_key}
        # Announced by the stream once every earlier position is readable too.
        self._stream.finish(positions, rooms=[room_id], users=members)
        for unit, built, _ in accepted:
            _succeed(unit.result, built)

    async def _store(self, batch: RoomBatch, companion: PersistCompanion | None) -> None:
        try:
            await self._events.persist_batch(batch)
        except BaseException:
            if batch.push is not None and companion is not None:
                guarded(companion.failed, batch.push)
            raise

    async def _head(self, room_id: str, new_room: RoomVersion | None = None) -> _Head:
        head = self._heads.get(room_id)
        if head is not None:
            self._heads.move_to_end(room_id)
            return head
        if new_room is not None:
            head = _Head(new_room, {}, {}, [], 0, None, 0)
            self._keep_head(room_id, head)
            return head
        forgets = self._forgets
        stored = await self._state.room_head(room_id)
        if stored is None:
            raise RoomError(404, "M_NOT_FOUND", "Unknown room")
        version = get_room_version(stored.room_version)
        loaded = await self.get_events(list(stored.current_state.values()))
        state_events = {key: loaded[eid].event for key, eid in stored.current_state.items()
                        if eid in loaded}
        head = _Head(version, dict(stored.current_state), state_events, list(stored.extremities),
                     stored.max_depth, stored.state_group, stored.chain_length)
        held = self._heads.get(room_id)
        if held is not None:  # the room's worker stored a newer one while this loaded
            return held
        if forgets != self._forgets:  # another process wrote meanwhile: use once, keep not
            return head
        self._keep_head(room_id, head)
        return head

    def _keep_head(self, room_id: str, head: _Head) -> None:
        """Cache a room's head, forgetting the least recently used idle rooms' past
        max_cached_heads (each holds the room's current state events): a forgotten head
        is loaded again from storage when its room is next used. A room with appends
        queued or running keeps its head."""
        self._heads[room_id] = head
        self._heads.move_to_end(room_id)
        excess = len(self._heads) - self._max_heads
        if excess > 0:
            for old in list(itertools.islice(self._heads, excess)):
                if old not in self._queues:
                    del self._heads[old]

    # -- remote events -------------------------------------------------------

    async def ingest_remote(
        self,
        room_id: str,
        events: list[Event],
        *,
        outliers: list[Event] | None = None,
        state_before: Mapping[str, Mapping[StateKey, str]] | None = None,
    ) -> dict[str, RemoteOutcome]:
        """Steps 4-6 of the remote checklist and the append, on the room's serial queue.

        The caller has run steps 1-3 (format, signatures, hashes) on every event
        and fetched what it could: ``outliers`` are auth or state events known
        only as such (checked against their own auth events and stored without
        a stream position). ``events`` join the room's graph, in any order; an
        event whose prev events are not all known (and that has no entry in
        ``state_before``, the state before it as fetched with /state_ids) or
        whose auth events are unknown comes back MISSING and is not stored.
        Rejected events are stored as rejected and never become state.
        """
        return await self._submit_job(room_id, lambda: remote_jobs.ingest(
            self, room_id, None, events, outliers or [], state_before or {}))

    async def create_remote_room(
        self, version: RoomVersion, join_event: Event, state: list[Event], auth_chain: list[Event]
    ) -> RemoteOutcome:
        """Store a room joined over federation: its state and auth chain as outliers,
        the state before the join as a state group, and the join as the room's first
        stream event and only extremity. RoomError 403 if the join fails auth (then
        nothing is stored).

        If the room is already known (we were in it before, or hold an invite), our
        copy is stale: nobody here was joined, so nothing reached us since. The join is
        judged on the state send_join returned, the resident's, not on our copy's
        current state (a room made public while we were out would refuse it), and the
        state after it becomes current, the join the only forward extremity.
        """
        return await self._submit_job(join_event.room_id, lambda: remote_jobs.create_remote_room(
            self, version, join_event, state, auth_chain))

    async def store_backfilled(
        self, room_id: str, events: list[Event], outliers: list[Event] | None = None,
        state_before: Mapping[str, Mapping[StateKey, str]] | None = None,
    ) -> dict[str, str]:
        """History fetched with /backfill (the caller has run steps 1-3), on the room's queue.

        ``outliers`` are the auth and state events fetched for them, checked against
        their own auth events and stored as outliers; ``state_before`` the state before
        the events whose prev events are not held here (the oldest, fetched with
        /state_ids). Each event is checked against its own auth events and the state
        before it, oldest first, and gets a state group; one that passes joins the
        timeline *before* everything held: it takes the next stream position below zero
        (storage allocates them downwards, newest first), so /messages pages back into it
        while /sync and the federation sender, which read the stream above positions
        they hold, never see it. One that fails is stored rejected. History never changes
        the current state or the extremities. Returns event id -> ACCEPTED, REJECTED,
        OUTLIER or KNOWN.
        """
        return await self._submit_job(room_id, lambda: remote_jobs.backfill(
            self, room_id, events, outliers, state_before))

    async def store_remote_invite(self, version: RoomVersion, invite: Event) -> None:
        """Keep an invite of a local user to a room on another server (already checked and
        countersigned by the caller) so the user's /sync shows it.

        In a room this server is in, the invite is an ordinary remote event. Otherwise it
        is stored as a stream event with the invitee's membership in the current state and
        no extremities: the room is known but not joined, until create_remote_room.
        """
        await self._store_outsidemembership_of(version, invite)

    async def store_remote_leave(self, version: RoomVersion, leave: Event) -> None:
        """Keep a local user's leave made through another server (a rejected remote
        invite): in a room this server is not in, it replaces the invite in the user's
        membership, so /sync stops showing the invite; else it is an ordinary remote event."""
        await self._store_outsidemembership_of(version, leave)

    async def _store_outsidemembership_of(self, version: RoomVersion, invite: Event) -> None:
        await self._submit_job(invite.room_id, lambda: remote_jobs.outside_membership(
            self, version, invite))

    async def build_for_remote(
        self, room_id: str, sender: str, event_type: str, content: dict[str, Any],
        state_key: str | None = None,
    ) -> tuple[RoomVersion, dict[str, Any]]:
        """An unsigned event template on the room's current head (make_join, make_leave).

        RoomError 404 for an unknown room, 403 if the event would not pass auth
        against the current state (as far as the template can show: a remote
        restricted join still needs its authorising server's signature).
        """
        head = await self._head(room_id)
        if not head.extremities:
            raise RoomError(404, "M_NOT_FOUND", "This server is not in the room")
        template = self._builder.template(room_id, head, sender, event_type, content, state_key)
        return head.version, template

    async def state_at_event(self, event_id: str) -> dict[StateKey, str] | None:
        """The state before ``event_id`` (what /state and /state_ids serve), or None
        when the event is unknown or an outlier."""
        return await state_before_event(self, event_id)

    async def is_participating(self, room_id: str) -> bool:
        """Whether this server holds the room's graph (it has forward extremities), as
        opposed to knowing the room only from an invite of one of its users."""
        try:
            head = await self._head(room_id)
        except RoomError:
            return False
        return bool(head.extremities)

    async def server_in_room(self, room_id: str, server_name: str,
                             state: Mapping[StateKey, str] | None = None) -> bool:
        """Whether a user of ``server_name`` is joined, in the current state or in ``state``."""
        suffix = ":" + server_name
        if state is None:
            try:
                head = await self._head(room_id)
            except RoomError:
                return False
            return any(k[0] == "m.room.member" and k[1].endswith(suffix)
                       and membership_of(e) == "join" for k, e in head.state_events.items())
        ids = [eid for (t, k), eid in state.items() if t == "m.room.member" and k.endswith(suffix)]
        loaded = await self.get_events(ids)
        return any(membership_of(le.event) == "join" for le in loaded.values())

    async def purge_room(self, room_id: str, delete: Callable[[str], Awaitable[Any]]) -> Any:
        """Run `delete(room_id)` (storage's purge) on the room's queue, so that no append
        interleaves with it, and forget the room's head; returns what `delete` returns."""

        async def job() -> Any:
            try:
                return await delete(room_id)
            finally:
                self._heads.pop(room_id, None)

        return await self._submit_job(room_id, job)

    async def _submit_job(self, room_id: str, job: Any) -> Any:
        result: defer.Deferred[Any] = defer.Deferred()
        self._enqueue(room_id, _Unit([], result, job=job))
        return await result

    async def _run_job(self, room_id: str, unit: _Unit) -> None:
        try:
            value = await unit.job()
        except Exception as e:
            if not isinstance(e, RoomError):
                self._heads.pop(room_id, None)
                logger.exception("remote events in %s failed", room_id)
                e = RoomError(500, "M_UNKNOWN", f"could not store events: {e}")
            _fail(unit.result, e)
            return
        _succeed(unit.result, value)

    # -- reading -------------------------------------------------------------

    def recent_local_events(self, after: int, upto: int) -> list[RecentEvent] | None:
        """Every event at the stream positions (after, upto] if all were local sends this
        engine persisted lately (engine_types.RecentLocalEvents), else None: read storage."""
        return self._recent.between(after, upto)

    async def get_events(self, event_ids: list[str]) -> dict[str, LoadedEvent]:
        """Events by id, parsed once (see event_reader.EventReader)."""
        return await self._reader.get_events(event_ids)

    def loaded(self, stored: list[StoredEvent]) -> list[LoadedEvent]:
        return self._reader.loaded(stored)

    async def current_state_loaded(self, wanted: Mapping[str, list[str]]
                                   ) -> dict[str, LoadedEvent]:
        """Events of rooms' current state (room id -> event ids) as readers get them:
        from each room's cached head, positions and redactions kept there once read (one
        query for every room's missing ones). An id no longer in its room's current
        state (the head moved on meanwhile) is read from storage."""
        held = []
        for room_id, ids in wanted.items():
            head = await self._head(room_id)
            by_id = head.state_by_id()
            held.append((head, {eid: by_id[eid] for eid in ids if eid in by_id}))
        out = await self._reader.from_heads(held)
        rest = [eid for ids in wanted.values() for eid in ids if eid not in out]
        if rest:
            out.update(await self.get_events(rest))
        return out

    async def current_states_ready(self, room_ids: list[str]
                                   ) -> dict[str, tuple[Mapping[StateKey, str], LoadedState | None]]:
        """Rooms' whole current state as readers get it, kept on each cached head (read-only:
        EventReader.complete_states), with the state ids it is of (the head's own map)."""
        return await self._reader.complete_states({r: await self._head(r) for r in room_ids})

    async def visibility_changes(self, room_id: str) -> list[tuple[int, str]]:
        """(stream position, history_visibility) of every accepted history_visibility
        event of the room, in order: what history visibility is decided on.

        Read once and kept on the room's cached head (every /messages page, /context
        and sync timeline asks). Each persist that stores such an event leaves the head
        that follows without it, and a head read from storage starts without it, so it
        is read again then; a reader that read it meanwhile keeps its answer on the
        head it started from, no longer the room's.
        """
        head = await self._head(room_id)
        if head.visibility is None:
            history = await self._state.state_history(room_id, HISTORY_VISIBILITY, "")
            loaded = await self.get_events([eid for _, eid in history])
            head.visibility = [
                (pos, str(loaded[eid].event.content.get("history_visibility", "shared")))
                for pos, eid in history if eid in loaded]
        return head.visibility

    async def current_state_events(self, room_id: str) -> dict[StateKey, Event]:
        head = await self._head(room_id)
        return dict(head.state_events)

    async def current_state_shared(self, room_id: str) -> Mapping[StateKey, Event]:
        """The cached head's own state map, not a copy: read-only. A head's maps are never
        changed once cached, and a batch of messages hands its map on to the next head, so
        the same object means the same state (push evaluation's room cache checks it)."""
        return (await self._head(room_id)).state_events

    async def current_state_and_group(self, room_id: str
                                      ) -> tuple[Mapping[StateKey, Event], int | None]:
        """`current_state_shared` and the state group it is (None if not known)."""
        head = await self._head(room_id)
        return head.state_events, head.state_group

    async def current_state_sorted(self, room_id: str) -> list[tuple[StateKey, Event]]:
        """The room's current state in key order, kept on its cached head (read-only: a
        big room's sync sends it in this order, without sorting it on every request)."""
        return (await self._head(room_id)).sorted_state()

    async def members_overview(self, room_id: str) -> MembersOverview:
        """The room's members counted, kept on its cached head (a sync's room summary)."""
        return (await self._head(room_id)).members()

    async def current_state_ids(self, room_id: str) -> dict[StateKey, str]:
        """The room's current state as event ids, from its cached head: the same map the
        current_state table holds (both change together in `_persist`/`_persist_remote`),
        without reading a big room's rows again on every /members or /state."""
        head = await self._head(room_id)
        return dict(head.state)

    async def membership(self, room_id: str, user_id: str) -> str | None:
        """The user's current membership, from the room's cached head (no query once warm)."""
        head = await self._head(room_id)
        member = head.state_events.get(("m.room.member", user_id))
        return membership_of(member) if member is not None else None

    async def forward_extremities(self, room_id: str) -> list[str]:
        """The room's newest events here (what /get_missing_events counts back to)."""
        return list((await self._head(room_id)).extremities)

    async def room_version(self, room_id: str) -> RoomVersion | None:
        head = self._heads.get(room_id)
        if head is not None:
            return head.version
        identifier = await self._state.room_version(room_id)
        return get_room_version(identifier) if identifier else None
