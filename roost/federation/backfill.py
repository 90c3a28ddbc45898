"""Backfill: history of a room from before this server joined, fetched as /messages needs it.

`Backfiller.backfill(room_id, limit)` finds the room's backward extremities
(prev events of its earliest timeline events that are not in the timeline
here), asks another server in the room for what lies behind them with
`GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=`, and checks the
answer like every other inbound path: steps 1-3 through ``EventChecker``
(format, signatures verified through the key ring, content hash or redact),
auth events it lacks fetched with `/event_auth` and checked the same way, the
state before the oldest of them with `/state_ids` (and `/event` for the state
events not held), then ``RoomEngine.store_backfilled``: each event is checked
against its own auth events and against the state before it (steps 4 and 5),
gets a state group, and takes a position below zero, allocated downwards, so
the history sorts before the join in /messages' `s<N>` tokens and never
reaches /sync or the sender.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from twisted.internet import defer

from roost.federation.fetches import EventFetches
from roost.federation.ingest import EventChecker
from roost.federation.pulls import EventPuller, StateMap
from roost.federation.transport.client import FederationClient, FederationClientError
from roost.keys.remote import KeyRing
from roost.rooms.engine import ACCEPTED, RoomEngine, RoomError
from roost.rooms.events import Event
from roost.rooms.hashing import server_name_of
from roost.rooms.versions import RoomVersion
from roost.storage.events import EventStore

logger = logging.getLogger(__name__)

MAX_BACKFILL = 100
MAX_EXTREMITIES = 20
# /state_ids requests per backfill: one per place where the fetched history starts.
MAX_STATE_FETCHES = 4


def _q(value: str) -> str:
    return quote(value, safe="")


class Backfiller:
    def __init__(self, engine: RoomEngine, events: EventStore, keyring: KeyRing,
                 client: FederationClient, server_name: str,
                 fetches: EventFetches | None = None) -> None:
        self._engine = engine
        self._events = events
        self._checker = EventChecker(keyring)
        self._client = client
        self._server_name = server_name
        self._fetches = fetches or EventFetches()
        self._pull = EventPuller(engine, client, self._checker, self._fetches)
        self._running: dict[str, defer.Deferred[bool]] = {}

    async def backfill(self, room_id: str, limit: int) -> bool:
        """Fetch up to `limit` events of history; True when any joined the timeline.
        Concurrent calls for one room share one fetch."""
        running = self._running.get(room_id)
        if running is not None:
            waiter: defer.Deferred[bool] = defer.Deferred()
            running.addBoth(lambda r: (waiter.callback(r is True), r)[1])
            return await waiter
        d = defer.ensureDeferred(self._backfill(room_id, max(1, min(limit, MAX_BACKFILL))))
        self._running[room_id] = d
        try:
            return await d
        finally:
            self._running.pop(room_id, None)

    async def _backfill(self, room_id: str, limit: int) -> bool:
        version = await self._engine.room_version(room_id)
        if version is None:
            return False
        servers = await self._servers(room_id)
        if not servers:
            return False  # nobody else holds the room: there is nothing to fetch
        extremities = await self._events.backward_extremities(room_id, MAX_EXTREMITIES)
        if not extremities:
            return False  # the timeline reaches the room's creation
        held, extremities = await self._behind_held(extremities)
        if not extremities:  # everything wanted is held here: no request
            return await self._store(room_id, held, [])
        for server in servers:
            self._fetches.requested("backfill")
            try:
                answer = await self._client.get_json(
                    server, f"/_matrix/federation/v1/backfill/{_q(room_id)}",
                    {"v": extremities, "limit": str(limit)})
            except FederationClientError as e:
                logger.info("backfill of %s from %s failed: %s", room_id, server, e)
                continue
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            if not isinstance(pdus, list):
                continue
            events, errors = await self._checker.check(pdus[:limit * 2], version, room_id)
            self._fetches.received("backfill", (e.event_id for e in events))
            if errors:
                logger.info("backfill of %s from %s: dropped %s", room_id, server, errors)
            if not events:
                continue
            auth = await self._pull.auth_chains(server, room_id, version, events)
            timeline = [*held, *events]
            state_before, state = await self._state_before(server, room_id, version, timeline)
            if await self._store(room_id, timeline, [*auth, *state], state_before):
                return True
        return False

    async def _state_before(self, origin: str, room_id: str, version: RoomVersion,
                            timeline: list[Event]) -> tuple[dict[str, StateMap], list[Event]]:
        """The state before each backfilled event whose prev events are neither among them
        nor held here with their state (the oldest of the batch, as a rule), from `origin`
        (`/state_ids` at the event), so that the engine can check every event against the
        state before it; with the state events it lacked, as outliers."""
        have = {e.event_id for e in timeline}
        cited = [p for e in timeline for p in e.prev_event_ids if p not in have]
        known = await self._engine.get_events(cited)
        stated = {eid for eid, le in known.items() if le.stream_ordering is not None}
        state_before: dict[str, StateMap] = {}
        outliers: dict[str, Event] = {}
        for event in timeline:
            if all(p in have or p in stated for p in event.prev_event_ids):
                continue
            if len(state_before) >= MAX_STATE_FETCHES:
                break  # the rest are checked against their own auth events only
            state = await self._pull.state_at(origin, room_id, version, event.event_id, outliers)
            if state is not None:
                state_before[event.event_id] = state
        return state_before, list(outliers.values())

    async def _store(self, room_id: str, events: list[Event], auth: list[Event],
                     state_before: dict[str, StateMap] | None = None) -> bool:
        try:
            outcomes = await self._engine.store_backfilled(room_id, events, auth,
                                                           state_before or {})
        except RoomError as e:
            logger.info("backfilled events of %s not stored: %s", room_id, e.message)
            return False
        return any(o == ACCEPTED for o in outcomes.values())

    async def _behind_held(self, extremities: list[str]) -> tuple[list[Event], list[str]]:
        """(events held here as outliers, ids to ask for) for the backward extremities.

        A gap filled through /state_ids leaves the event just before it held as an
        outlier; asking /backfill from it would fetch it a second time. So held
        outliers go into the timeline from here, and the request starts from the
        prev events behind them (walking back through outliers, a bounded number).
        """
        held: dict[str, Event] = {}
        ask: list[str] = []
        frontier = list(dict.fromkeys(extremities))
        while frontier and len(held) < MAX_BACKFILL:
            loaded = await self._engine.get_events(frontier)
            following: list[str] = []
            for event_id in frontier:
                found = loaded.get(event_id)
                if found is None:
                    ask.append(event_id)
                elif found.stream_ordering is None and not found.rejected \
                        and event_id not in held:
                    held[event_id] = found.event
                    following.extend(found.event.prev_event_ids)
            frontier = [e for e in dict.fromkeys(following) if e not in held and e not in ask]
        ask.extend(e for e in frontier if e not in ask)
        return list(held.values()), ask[:MAX_EXTREMITIES]

    async def _servers(self, room_id: str) -> list[str]:
        """Other servers with a user joined, the room id's own server (if any) first."""
        try:
            state = await self._engine.current_state_events(room_id)
        except RoomError:
            return []
        counts: dict[str, int] = {}
        for (event_type, state_key), event in state.items():
            if event_type == "m.room.member" and event.membership == "join":
                server = server_name_of(state_key)
                counts[server] = counts.get(server, 0) + 1
        counts.pop(self._server_name, None)
        home = server_name_of(room_id)
        return sorted(counts, key=lambda s: (s != home, -counts[s], s))
