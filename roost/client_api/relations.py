"""GET /relations/{eventId}[/{relType}[/{eventType}]] and GET /rooms/{roomId}/threads."""

from __future__ import annotations

from roost.client_api.errors import invalid_param, not_found
from roost.client_api.messages import parse_token
from roost.client_api.resource import ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.rooms.access import EVENTS
from roost.rooms.engine import RoomEngine
from roost.storage.relations import RelationStore

MAX_LIMIT = 100
V1 = "/_matrix/client/(?:v1|v3)"


def register(router: Router, engine: RoomEngine, view: RoomView, relations: RelationStore) -> None:
    async def readable_target(room_id: str, user: str, event_id: str) -> None:
        await view.require_read(room_id, user, EVENTS, refuse_as_missing=True)
        loaded = (await engine.get_events([event_id])).get(event_id)
        if loaded is None or loaded.event.room_id != room_id:
            raise not_found("Event not found")
        if not await view.visible(room_id, user, [loaded]):
            raise not_found("Event not found")

    async def list_relations(req: ApiRequest) -> JsonDict:
        room_id, user = req.params["room_id"], req.user.user_id
        target = req.params["event_id"]
        await readable_target(room_id, user, target)
        direction = req.arg("dir", "b")
        if direction not in ("b", "f"):
            raise invalid_param("dir must be b or f")
        limit = req.limit_arg("limit", 50, MAX_LIMIT, minimum=1)
        start = parse_token(req.arg("from"), "from")
        found = await relations.related_events(
            target, req.params.get("rel_type"), req.params.get("event_type"), start,
            direction == "b", limit + 1,
        )
        page, more = found[:limit], len(found) > limit
        loaded = await engine.get_events([eid for eid, _ in page])
        events = await view.visible(room_id, user, [loaded[eid] for eid, _ in page if eid in loaded])
        body: JsonDict = {"chunk": await view.serialize(events, user, with_relations=False)}
        if more:
            body["next_batch"] = f"s{page[-1][1]}"
        if start is not None:
            body["prev_batch"] = f"s{start}"
        return body

    async def threads(req: ApiRequest) -> JsonDict:
        room_id, user = req.params["room_id"], req.user.user_id
        await view.require_read(room_id, user, EVENTS)
        include = req.arg("include", "all")
        if include not in ("all", "participated"):
            raise invalid_param("include must be all or participated")
        limit = req.limit_arg("limit", 20, MAX_LIMIT, minimum=1)
        start = parse_token(req.arg("from"), "from")
        roots = await relations.thread_roots(
            room_id, start, limit + 1, user if include == "participated" else None)
        page, more = roots[:limit], len(roots) > limit
        loaded = await engine.get_events([r for r, _ in page])
        events = await view.visible(room_id, user, [loaded[r] for r, _ in page if r in loaded])
        body: JsonDict = {"chunk": await view.serialize(events, user)}
        if more:
            body["next_batch"] = f"s{page[-1][1]}"
        return body

    R = f"{V1}/rooms/{{room_id}}"
    router.add("GET", f"{R}/relations/{{event_id}}", list_relations)
    router.add("GET", f"{R}/relations/{{event_id}}/{{rel_type}}", list_relations)
    router.add("GET", f"{R}/relations/{{event_id}}/{{rel_type}}/{{event_type}}", list_relations)
    router.add("GET", f"{R}/threads", threads)
