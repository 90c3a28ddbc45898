"""POST /rooms/{roomId}/report/{eventId}, /rooms/{roomId}/report and /users/{userId}/report.

Reports are stored for the server's admins (roost.storage.reports). An event
can be reported only by a member of its room who may see it, and not once it
is redacted; a room or user must be known here. Every refusal is 404, as the
spec has it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from roost.client_api.errors import bad_json, missing_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.storage.reports import ReportStore

MAX_REASON_CHARS = 10_000


def _reason(body: dict[str, Any], required: bool) -> str | None:
    if "reason" not in body or body["reason"] is None:
        if required:
            raise missing_param("reason")
        return None
    reason = body["reason"]
    if not isinstance(reason, str):
        raise bad_json("reason must be a string")
    return reason[:MAX_REASON_CHARS]


def register(router: Router, store: ReportStore, view: RoomView, clock: IReactorTime) -> None:
    def now_ms() -> int:
        return int(clock.seconds() * 1000)

    async def report_event(req: ApiRequest) -> JsonDict:
        room_id, event_id = req.params["room_id"], req.params["event_id"]
        reason = _reason(req.json(), required=False)
        user = req.user.user_id
        if await view.membership(room_id, user) != "join":
            raise not_found("Event not found or you are not in its room")
        loaded = (await view.engine.get_events([event_id])).get(event_id)
        if loaded is None or loaded.event.room_id != room_id or loaded.redacted_by \
                or not await view.visible(room_id, user, [loaded]):
            raise not_found("Event not found")
        await store.add("event", user, now_ms(), room_id=room_id, event_id=event_id,
                        reason=reason)
        return {}

    async def report_room(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        reason = _reason(req.json(), required=True)
        if not await view.access.room_exists(room_id):
            raise not_found("Room not found")
        await store.add("room", req.user.user_id, now_ms(), room_id=room_id, reason=reason)
        return {}

    async def report_user(req: ApiRequest) -> JsonDict:
        target = req.params["user_id"]
        reason = _reason(req.json(), required=True)
        if not target.startswith("@") or ":" not in target or not await store.user_known(target):
            raise not_found("User not found")
        await store.add("user", req.user.user_id, now_ms(), target_user_id=target, reason=reason)
        return {}

    R = f"{CLIENT_PREFIX}/rooms/{{room_id}}"
    router.add("POST", f"{R}/report/{{event_id}}", report_event, rate_limit="message")
    router.add("POST", f"{R}/report", report_room, rate_limit="message")
    router.add("POST", f"{CLIENT_PREFIX}/users/{{user_id}}/report", report_user,
               rate_limit="message")
