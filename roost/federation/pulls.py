"""Asking another server for the events a room's new events need, checked on arrival.

Inbound transactions (`ingest.py`) and backfill (`backfill.py`) both come to
hold events that cite what this server lacks: auth events (`/event_auth`), and
the state before an event whose prev events are unknown here (`/state_ids`,
then `/event` for the state events not held). Every event fetched goes through
steps 1-3 (``EventChecker``) and is counted in ``EventFetches``, so that a
benchmark can see whether anything crossed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet import defer

from roost.federation.fetches import EventFetches
from roost.federation.transport.client import FederationClient, FederationClientError
from roost.rooms.engine import RoomEngine
from roost.rooms.events import Event
from roost.rooms.versions import RoomVersion

if TYPE_CHECKING:
    from roost.federation.ingest import EventChecker

logger = logging.getLogger(__name__)

MAX_FETCHED_STATE = 5000
StateMap = dict[tuple[str, str], str]


def _q(value: str) -> str:
    return quote(value, safe="")


class EventPuller:
    def __init__(self, engine: RoomEngine, client: FederationClient, checker: EventChecker,
                 fetches: EventFetches) -> None:
        self._engine = engine
        self._client = client
        self._checker = checker
        self.fetches = fetches

    async def unknown(self, event_ids: Iterable[str]) -> list[str]:
        """Those of `event_ids` this server holds in no form."""
        ids = list(dict.fromkeys(event_ids))
        known = await self._engine.get_events(ids)
        return [e for e in ids if e not in known]

    async def auth_chains(self, origin: str, room_id: str, version: RoomVersion,
                          events: list[Event]) -> list[Event]:
        """The auth chains (`/event_auth`) of the events citing auth events held neither
        here nor among `events`."""
        have = {e.event_id for e in events}
        lacking = set(await self.unknown(
            a for e in events for a in e.auth_event_ids if a not in have))
        fetched: dict[str, Event] = {}
        for event in events:
            if not any(a in lacking and a not in fetched for a in event.auth_event_ids):
                continue
            answer = await self.get(origin, "event_auth",
                                    f"/_matrix/federation/v1/event_auth/{_q(room_id)}"
                                    f"/{_q(event.event_id)}")
            chain = answer.get("auth_chain") if isinstance(answer, dict) else None
            if isinstance(chain, list):
                good, _ = await self._checker.check(chain, version, room_id)
                self.fetches.received("event_auth", (e.event_id for e in good))
                new = set(await self.unknown(e.event_id for e in good))
                fetched.update({e.event_id: e for e in good if e.event_id in new})
        return list(fetched.values())

    async def state_at(self, origin: str, room_id: str, version: RoomVersion, event_id: str,
                       outliers: dict[str, Event], with_event: bool = False) -> StateMap | None:
        """The state before `event_id` as `origin` has it (`/state_ids`, then `/event` for
        what is held neither here nor in `outliers`, which the fetched events join); with
        `with_event`, the state after it (the event itself fetched if need be). None when
        the answer is unusable."""
        answer = await self.get(origin, "state_ids",
                                f"/_matrix/federation/v1/state_ids/{_q(room_id)}",
                                {"event_id": event_id})
        pdu_ids = answer.get("pdu_ids") if isinstance(answer, dict) else None
        auth_ids = answer.get("auth_chain_ids") if isinstance(answer, dict) else None
        if not isinstance(pdu_ids, list) or not isinstance(auth_ids, list):
            return None
        wanted = [i for i in [*pdu_ids, *auth_ids, *([event_id] if with_event else [])]
                  if isinstance(i, str)]
        lacking = [i for i in await self.unknown(wanted) if i not in outliers]
        outliers.update(await self.events(origin, version, room_id, lacking[:MAX_FETCHED_STATE]))
        loaded = {eid: le.event for eid, le in (await self._engine.get_events(wanted)).items()}
        loaded.update(outliers)
        state = {(e.type, e.state_key): e.event_id for i in pdu_ids
                 if (e := loaded.get(i)) is not None and e.state_key is not None}
        if with_event:
            event = loaded.get(event_id)
            if event is None:
                return None
            if event.state_key is not None:
                state[(event.type, event.state_key)] = event.event_id
        return state

    async def events(self, origin: str, version: RoomVersion, room_id: str,
                     event_ids: list[str]) -> dict[str, Event]:
        """Events by id (`/event`, twenty at a time), checked; those that came back."""
        async def one(event_id: str) -> list[Any]:
            answer = await self.get(origin, "event", f"/_matrix/federation/v1/event/{_q(event_id)}")
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            return pdus if isinstance(pdus, list) else []

        found: list[Any] = []
        for start in range(0, len(event_ids), 20):
            batch = await defer.gatherResults(
                [defer.ensureDeferred(one(e)) for e in event_ids[start:start + 20]])
            found.extend(p for pdus in batch for p in pdus)
        good, _ = await self._checker.check(found, version, room_id)
        self.fetches.received("event", (e.event_id for e in good))
        wanted = set(event_ids)
        return {e.event_id: e for e in good if e.event_id in wanted}

    async def get(self, origin: str, endpoint: str, path: str, args: Any = None) -> Any:
        """GET from `origin`, counted under `endpoint`; None when it failed (logged)."""
        self.fetches.requested(endpoint)
        try:
            return await self._client.get_json(origin, path, args)
        except FederationClientError as e:
            logger.info("GET %s from %s failed: %s", path, origin, e)
            return None

    async def post(self, origin: str, endpoint: str, path: str, body: Any) -> Any:
        self.fetches.requested(endpoint)
        try:
            return await self._client.post_json(origin, path, body)
        except FederationClientError as e:
            logger.info("POST %s to %s failed: %s", path, origin, e)
            return None
