"""Backfill: history of a room from before this server joined, fetched as /messages needs it.

`Backfiller.backfill(room_id, limit)` finds the room's backward extremities
(prev events of its earliest timeline events that are not in the timeline
here), asks another server in the room for what lies behind them with
`GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=`, and checks the
answer like every other inbound path: steps 1-3 through ``EventChecker``
(format, signatures verified through the key ring, content hash or redact),
auth events it lacks fetched with `/event_auth` and checked the same way, then
``RoomEngine.store_backfilled`` (step 4 against each event's own auth events,
and positions below zero, allocated downwards, so the history sorts before the
join in /messages' `s<N>` tokens and never reaches /sync or the sender).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from twisted.internet import defer

from roost.federation.fetches import EventFetches
from roost.federation.ingest import EventChecker
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
            auth = await self._fetch_auth(server, room_id, version, events)
            if await self._store(room_id, [*held, *events], auth):
                return True
        return False

    async def _store(self, room_id: str, events: list[Event], auth: list[Event]) -> bool:
        try:
            outcomes = await self._engine.store_backfilled(room_id, events, auth)
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

    async def _fetch_auth(self, origin: str, room_id: str, version: RoomVersion,
                          events: list[Event]) -> list[Event]:
        """Auth events the backfilled events cite that are held neither here nor among
        them, from `/event_auth`, checked like the events themselves."""
        have = {e.event_id for e in events}
        cited = list(dict.fromkeys(a for e in events for a in e.auth_event_ids if a not in have))
        held = await self._engine.get_events(cited)
        fetched: dict[str, Event] = {}
        for event in events:
            missing = [a for a in event.auth_event_ids
                       if a not in have and a not in held and a not in fetched]
            if not missing:
                continue
            self._fetches.requested("event_auth")
            try:
                answer: Any = await self._client.get_json(
                    origin, f"/_matrix/federation/v1/event_auth/{_q(room_id)}"
                            f"/{_q(event.event_id)}")
            except FederationClientError as e:
                logger.info("event_auth of %s from %s failed: %s", event.event_id, origin, e)
                continue
            chain = answer.get("auth_chain") if isinstance(answer, dict) else None
            if isinstance(chain, list):
                good, _ = await self._checker.check(chain, version, room_id)
                self._fetches.received("event_auth", (e.event_id for e in good))
                fetched.update({e.event_id: e for e in good if e.event_id not in held})
        return list(fetched.values())
