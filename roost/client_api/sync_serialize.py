"""Serving a sync's planned rooms: events as clients see them, put into the body.

Split from sync_builder.py: the builder plans which events each room gets
(RoomPlan), and this turns the plans into the body's room objects. Events
planned for one receiver alone are served in one batch (relations and
redactions looked up once); a room's part shared by every receiver of the
same range and filter (sync_shared.py) is served once and reused, copied
only where this device's own events carry their `unsigned.transaction_id`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from roost.client_api.room_view import RoomView
from roost.client_api.sync_filter import SyncFilter
from roost.client_api.sync_room_state import RoomPlan
from roost.rooms.engine import LoadedEvent
from roost.rooms.events import Event
from roost.storage.sync_queries import RecentEvents, SyncQueries

JsonDict = dict[str, Any]


class SyncSerializer:
    """Serves RoomPlans into a sync body's `join` and `leave` sections."""

    def __init__(self, view: RoomView, queries: SyncQueries, recent: RecentEvents) -> None:
        self._view = view
        self._queries = queries
        self._recent = recent

    async def _shared_served(self, plans: dict[str, RoomPlan], user_id: str,
                             device_id: str | None, filt: SyncFilter) -> dict[str, list[JsonDict]]:
        """room -> the shared served events (timeline, then state) of each shared plan,
        with this device's own events copied to carry their `unsigned.transaction_id`."""
        out: dict[str, list[JsonDict]] = {}
        mine: list[tuple[str, int, LoadedEvent]] = []
        for room_id, plan in plans.items():
            if plan.shared is not None:
                assert plan.shared.shaped is not None
                out[room_id] = plan.shared.shaped
                if user_id in plan.shared.senders:
                    mine += [(room_id, i, e) for i, e in enumerate(plan.timeline)
                             if e.event.sender == user_id]
        if not mine or device_id is None:
            return out
        stored = await self._queries.txn_ids(user_id, device_id,
                                             [e.event.event_id for _, _, e in mine])
        shaping = filt.event_fields is not None or filt.event_format != "client"
        for room_id, i, event in mine:
            key = stored.get(event.event.event_id)
            if key is None:
                continue
            shared = plans[room_id].shared
            assert shared is not None and shared.served is not None
            body = dict(shared.served[i])
            body["unsigned"] = {**body.get("unsigned", {}),
                                "transaction_id": _client_txn_id(event.event, key)}
            if out[room_id] is shared.shaped:
                out[room_id] = list(out[room_id])  # this receiver's own copy of the list
            out[room_id][i] = filt.shape(body, event.event) if shaping else body
        return out

    async def _add_transaction_ids(self, served: list[JsonDict], timeline: list[LoadedEvent],
                                   user_id: str, device_id: str | None) -> None:
        """`unsigned.transaction_id` on the events this very device sent (local echoes)."""
        if device_id is None:
            return
        mine = [e.event.event_id for e in timeline if e.event.sender == user_id]
        if not mine:
            return
        stored = await self._queries.txn_ids(user_id, device_id, mine)
        for event, body in zip(timeline, served, strict=True):
            key = stored.get(event.event.event_id)
            if key is not None:
                body.setdefault("unsigned", {})["transaction_id"] = _client_txn_id(
                    event.event, key)

    async def serialize(self, out: JsonDict, plans: dict[str, RoomPlan], user_id: str,
                         device_id: str | None, filt: SyncFilter) -> None:
        """Serve every plan's events: those planned for this receiver alone in one batch
        (relations and redactions looked up once), shared ones copied where they get a
        transaction id."""
        own = [p for p in plans.values() if p.shared is None]
        shared_served = await self._shared_served(plans, user_id, device_id, filt)
        served_timeline, served_state = await self._serve_own(own, user_id, device_id, filt) \
            if own else (iter(()), iter(()))
        for room_id, plan in plans.items():
            if plan.shared is not None:
                events = shared_served[room_id]
                n = len(plan.timeline)
                timeline_events, state_events = events[:n], events[n:]
            else:
                timeline_events = [next(served_timeline) for _ in plan.timeline]
                state_events = next(served_state)
            room: JsonDict = {
                "timeline": {"events": timeline_events,
                             "limited": plan.limited, "prev_batch": plan.prev_batch},
                "state": {"events": state_events},
                "account_data": {"events": plan.account_data},
            }
            if plan.summary is not None:
                room["summary"] = plan.summary
            if plan.left:
                out["leave"][room_id] = room
            else:
                room["ephemeral"] = {"events": plan.ephemeral}
                out["join"][room_id] = room

    async def _serve_own(self, own: list[RoomPlan], user_id: str, device_id: str | None,
                         filt: SyncFilter) -> tuple[Iterator[JsonDict], Iterator[list[JsonDict]]]:
        """The events of the plans served for this receiver alone: every timeline event in
        order, and each plan's state list."""
        timeline = [e for p in own for e in p.timeline]
        state = [e for p in own for e in p.state]
        served: list[JsonDict] = []
        if timeline:
            kinds = self._recent.relation_kinds(e.event.event_id for e in timeline)
            served = await self._view.serialize(timeline, user_id, relation_kinds=kinds)
            await self._add_transaction_ids(served, timeline, user_id, device_id)
        served_state: Iterator[Any]
        if filt.event_fields is not None or filt.event_format != "client":
            served = [filt.shape(b, e.event) for b, e in zip(served, timeline, strict=True)]
            state_bodies = await self._view.serialize(state, user_id, with_relations=False) \
                if state else []
            flat = iter([filt.shape(b, e.event)
                         for b, e in zip(state_bodies, state, strict=True)])
            served_state = iter([[next(flat) for _ in p.state] for p in own])
        else:  # each room's state list encoded once (a big room's: thousands of events)
            lists = [p.state if p.state_encoded is None else [] for p in own]
            encoded = await self._view.serialize_state(lists) if state else [[] for _ in own]
            now = self._view.now_ms()
            served_state = iter([p.state_encoded.render(now) if p.state_encoded is not None
                                 else e for p, e in zip(own, encoded, strict=True)])
        return iter(served), served_state


def _client_txn_id(event: Event, stored: str) -> str:
    """The client's txn id from the stored key, which send.py scopes by room and type
    (`send/<room>/<type>/<txn>`) or by room and target (`redact/<room>/<event>/<txn>`)."""
    for prefix in (f"send/{event.room_id}/{event.type}/",
                   f"redact/{event.room_id}/{event.redacts or event.content.get('redacts')}/"):
        if stored.startswith(prefix):
            return stored[len(prefix):]
    return stored.rsplit("/", 1)[-1]
