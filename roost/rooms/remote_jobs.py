"""What the engine runs on a room's serial queue for events from other servers.

The engine (engine.py) owns the queue, the cached room heads and the events
stream; each function here is the body of one queued job: ingest remote events
into the room's graph (`ingest`), store a room joined over federation
(`create_remote_room`), store backfilled history (`backfill`), or keep a local
user's invite or leave in a room this server is not in (`outside_membership`).
Like remote_ingest.py's run, they use the engine's stores and head cache
directly: they are the engine's own work, kept apart so engine.py stays about
local appends, the queue and reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from roost.rooms.engine_types import RoomError, StateKey, changes_visibility, membership_of
from roost.rooms.engine_types import RoomHead as _Head
from roost.rooms.events import Event
from roost.rooms.ingest import sort_by_auth, sort_by_prevs
from roost.rooms.remote_ingest import ACCEPTED, RemoteOutcome, _remote_row, _RemoteRun
from roost.rooms.versions import RoomVersion
from roost.storage.events import RoomBatch

if TYPE_CHECKING:
    from roost.rooms.engine import RoomEngine


async def ingest(
    engine: RoomEngine, room_id: str, head: _Head | None, events: list[Event],
    outliers: list[Event], state_before: Mapping[str, Mapping[StateKey, str]],
    new_room: tuple[str, str, int] | None = None, must_accept: str | None = None,
) -> dict[str, RemoteOutcome]:
    """Check remote events against the room (steps 4-6 of the checklist) and persist them."""
    if head is None:
        head = await engine._head(room_id)
    run = _RemoteRun(engine, room_id, head)
    await run.load_known(events, outliers, state_before)
    for event in sort_by_auth(outliers):
        run.add_outlier(event)
    for event in sort_by_prevs(events):
        await run.add_event(event, state_before.get(event.event_id))
    if must_accept is not None:
        outcome = run.outcomes[must_accept]
        if outcome.status != ACCEPTED:
            raise RoomError(403, "M_FORBIDDEN", outcome.reason or outcome.status)
    if run.rows:
        await _persist(engine, run, new_room)
    return run.outcomes


async def _persist(engine: RoomEngine, run: _RemoteRun,
                   new_room: tuple[str, str, int] | None) -> None:
    room_id, head, working = run.room_id, run.head, run.working
    accepted = [row for row in run.rows if row[1] == ACCEPTED]
    positions = engine._stream.allocate(len(accepted))
    position_of = {row[0].event_id: p for row, p in zip(accepted, positions, strict=True)}
    rows = [_remote_row(event, position_of.get(event.event_id), group, status, reason,
                        run.ineffective_redactions)
            for event, status, group, reason in run.rows]
    changed = {key: (eid, membership_of(working.state_events[key]))
               for key, eid in working.state.items() if head.state.get(key) != eid}
    removed = [key for key in head.state if key not in working.state]
    if changes_visibility(e for e, *_ in run.rows):
        working.visibility = None
    working.forget_loaded([e for e, *_ in run.rows], stored=True)
    batch = RoomBatch(
        room_id, rows, run.groups, changed, list(working.extremities) if accepted else None,
        new_room, removed,
        (working.state_group, positions[-1]) if accepted and working.state_group else None,
    )
    try:
        await engine._events.persist_batch(batch)
    except Exception:
        engine._heads.pop(room_id, None)
        engine._stream.finish(positions)
        raise
    engine._keep_head(room_id, working)
    members = {e.state_key for e, *_ in accepted if e.type == "m.room.member" and e.state_key}
    engine._stream.finish(positions, rooms=[room_id] if accepted else [], users=members)


async def create_remote_room(
    engine: RoomEngine, version: RoomVersion, join_event: Event, state: list[Event],
    auth_chain: list[Event],
) -> RemoteOutcome:
    """The job of RoomEngine.create_remote_room (see there)."""
    room_id = join_event.room_id
    before = {(e.type, e.state_key): e.event_id for e in state if e.state_key is not None}
    new_room = None
    if await engine._state.room_version(room_id) is not None:
        head = (await engine._head(room_id)).copy()
        head.extremities = []  # no soft-fail check against the stale copy
    else:
        create = next((e for e in (*state, *auth_chain)
                       if e.type == "m.room.create" and e.room_id == room_id), None)
        if create is None:
            raise RoomError(400, "M_BAD_JSON", "the room's create event is missing")
        head = _Head(version, {}, {}, [], 0, None, 0)
        new_room = (version.identifier, create.sender, create.origin_server_ts)
    outcomes = await ingest(
        engine, room_id, head, [join_event], [*auth_chain, *state], {join_event.event_id: before},
        new_room=new_room, must_accept=join_event.event_id)
    return outcomes[join_event.event_id]


async def backfill(
    engine: RoomEngine, room_id: str, events: list[Event], outliers: list[Event] | None,
    state_before: Mapping[str, Mapping[StateKey, str]] | None,
) -> dict[str, str]:
    """The job of RoomEngine.store_backfilled (see there)."""
    head = await engine._head(room_id)
    run = _RemoteRun(engine, room_id, head, history=True)
    timeline_ids = {e.event_id for e in events}
    extra = [e for e in outliers or [] if e.event_id not in timeline_ids]
    await run.load_known(events, extra, state_before or {})
    for event in sort_by_auth(extra):
        run.add_outlier(event)
    for event in sort_by_prevs(events):
        await run.add_event(event, (state_before or {}).get(event.event_id))
    timeline = [row for row in run.rows if row[1] == ACCEPTED]
    order = {e.event_id: i for i, (e, *_) in enumerate(timeline)}
    timeline.sort(key=lambda row: (-row[0].depth, -order[row[0].event_id]))
    others = [row for row in run.rows if row[1] != ACCEPTED]
    if timeline or others:
        await engine._events.persist_backfilled(
            room_id, [_remote_row(e, None, g, st, r, run.ineffective_redactions)
                      for e, st, g, r in timeline],
            [_remote_row(e, None, g, st, r, run.ineffective_redactions)
             for e, st, g, r in others], run.groups)
        stored = [e for e, *_ in run.rows]
        if changes_visibility(stored) or any(e.redacts is not None for e in stored):
            # Older visibility changes, or redactions: the head that follows reads
            # what they change again.
            fresh = (await engine._head(room_id)).copy()
            if changes_visibility(stored):
                fresh.visibility = None
            fresh.forget_loaded(stored, stored=True)
            engine._keep_head(room_id, fresh)
    return {eid: o.status for eid, o in run.outcomes.items()}


async def outside_membership(engine: RoomEngine, version: RoomVersion, invite: Event) -> None:
    """The job of RoomEngine.store_remote_invite and store_remote_leave (see there)."""
    room_id = invite.room_id
    key = ("m.room.member", invite.state_key or "")
    new_room = None
    if await engine._state.room_version(room_id) is None:
        head = _Head(version, {}, {}, [], 0, None, 0)
        new_room = (version.identifier, invite.sender, invite.origin_server_ts)
    else:
        head = await engine._head(room_id)
        if head.extremities:
            await ingest(engine, room_id, head, [invite], [], {})
            return
    if invite.event_id in await engine._events.get_events([invite.event_id]):
        return
    positions = engine._stream.allocate(1)
    batch = RoomBatch(room_id, [_remote_row(invite, positions[0], None, ACCEPTED, None)],
                      [], {key: (invite.event_id, membership_of(invite))}, None, new_room)
    try:
        await engine._events.persist_batch(batch)
    except BaseException:
        engine._stream.finish(positions)
        raise
    working = head.copy()
    working.state[key] = invite.event_id
    working.state_events[key] = invite
    engine._keep_head(room_id, working)
    engine._stream.finish(positions, rooms=[room_id], users=[key[1]])
