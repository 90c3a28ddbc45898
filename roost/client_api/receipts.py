"""POST /rooms/{roomId}/receipt/{receiptType}/{eventId} and POST /read_markers.

Receipts are stored (a user's read position survives restarts) and each
gets a position in the receipts stream. Private receipts (m.read.private) are
served only to their owner.
"""

from __future__ import annotations

from typing import Any

from roost.client_api.errors import (
    MatrixError,
    bad_json,
    fenced_as_unavailable,
    invalid_param,
    not_found,
)
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.storage.notifier import Notifier
from roost.storage.streams import StreamIdGenerator
from roost.storage.sync_data import ReceiptStore

RECEIPT_TYPES = ("m.read", "m.read.private", "m.fully_read")


class Receipts:
    def __init__(self, store: ReceiptStore, stream: StreamIdGenerator, notifier: Notifier,
                 clock: Any) -> None:
        self.store = store
        self.stream = stream
        stream.announce_to(notifier, "receipts")
        self._clock = clock

    async def put(self, room_id: str, user_id: str, receipt_type: str, event_id: str,
                  thread_id: str) -> None:
        with fenced_as_unavailable():
            [position] = self.stream.allocate(1)
            try:
                await self.store.put(room_id, user_id, receipt_type, thread_id, event_id,
                                     int(self._clock.seconds() * 1000), position,
                                     self.stream.fence)
            except BaseException:
                self.stream.finish([position])
                raise
        # Announced by the stream once every earlier receipt is readable too.
        self.stream.finish([position], rooms=[room_id], users=[user_id])

    async def events_since(self, room_ids: list[str], after: int, upto: int,
                           viewer: str) -> dict[str, JsonDict]:
        """room -> one m.receipt event with the receipts in (after, upto] the viewer may see."""
        contents: dict[str, JsonDict] = {}
        for room, user, rtype, thread, event_id, ts in await self.store.since(room_ids, after, upto):
            if rtype == "m.read.private" and user != viewer:
                continue
            entry: JsonDict = {"ts": ts}
            if thread:
                entry["thread_id"] = thread
            content = contents.setdefault(room, {})
            content.setdefault(event_id, {}).setdefault(rtype, {})[user] = entry
        return {room: {"type": "m.receipt", "content": c} for room, c in contents.items()}


def register(router: Router, receipts: Receipts, view: RoomView,
             account_data: Any) -> None:
    async def check_event(room_id: str, user_id: str, event_id: str) -> None:
        await view.require_joined(room_id, user_id)
        loaded = (await view.engine.get_events([event_id])).get(event_id)
        if loaded is None or loaded.event.room_id != room_id:
            raise not_found("Event not found")

    async def post_receipt(req: ApiRequest) -> JsonDict:
        room_id, rtype, event_id = (req.params["room_id"], req.params["receipt_type"],
                                    req.params["event_id"])
        if rtype not in RECEIPT_TYPES:
            raise invalid_param(f"Unknown receipt type {rtype}")
        body = req.json(required=False)
        thread_id = body.get("thread_id", "")
        if not isinstance(thread_id, str):
            raise bad_json("thread_id must be a string")
        await check_event(room_id, req.user.user_id, event_id)
        if rtype == "m.fully_read":
            await account_data.put_room(req.user.user_id, room_id, "m.fully_read",
                                        {"event_id": event_id})
        else:
            await receipts.put(room_id, req.user.user_id, rtype, event_id, thread_id)
        return {}

    async def read_markers(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        body = req.json()
        given = {k: body.get(k) for k in ("m.fully_read", "m.read", "m.read.private")}
        if any(v is not None and not isinstance(v, str) for v in given.values()):
            raise bad_json("read markers must be event ids")
        if all(v is None for v in given.values()):
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: m.fully_read")
        for event_id in {v for v in given.values() if v}:
            await check_event(room_id, req.user.user_id, event_id)
        if given["m.fully_read"]:
            await account_data.put_room(req.user.user_id, room_id, "m.fully_read",
                                        {"event_id": given["m.fully_read"]})
        for rtype in ("m.read", "m.read.private"):
            if given[rtype]:
                await receipts.put(room_id, req.user.user_id, rtype, given[rtype] or "", "")
        return {}

    R = f"{CLIENT_PREFIX}/rooms/{{room_id}}"
    router.add("POST", f"{R}/receipt/{{receipt_type}}/{{event_id}}", post_receipt)
    router.add("POST", f"{R}/read_markers", read_markers)


