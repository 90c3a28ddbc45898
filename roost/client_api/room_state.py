"""GET /state, GET /state/{type}/{stateKey}, GET /members, GET /joined_members.

A member reads the current state; a former member reads the state as it was
when they left (history visibility applies to state as to messages).
"""

from __future__ import annotations

from roost.client_api.errors import MatrixError, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.client_api.stream_token import events_position
from roost.rooms.engine import LoadedEvent, RoomEngine

StateKey = tuple[str, str]


def register(router: Router, engine: RoomEngine, view: RoomView) -> None:
    async def state_for(room_id: str, user_id: str) -> dict[StateKey, str]:
        """The state the user may read: current if joined, else as of when they left."""
        if await engine.room_version(room_id) is None:
            raise not_found("Unknown room")
        membership = await view.membership(room_id, user_id)
        if membership == "join":
            return await view.state.current_state(room_id)
        history = await view.state.membership_history(room_id, user_id)
        if membership in ("leave", "ban") and history:
            member_event = (await view.state.members(room_id))[user_id][1]
            group = (await view.state.state_groups_of([member_event])).get(member_event)
            if group is not None:
                return await view.state.state_at_group(group)
        if await view.can_see_room(room_id, user_id):
            return await view.state.current_state(room_id)
        raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not in room {room_id}")

    async def load(ids: list[str]) -> list[LoadedEvent]:
        loaded = await engine.get_events(ids)
        return [loaded[i] for i in ids if i in loaded]

    async def all_state(req: ApiRequest) -> list[JsonDict]:  # type: ignore[return]
        state = await state_for(req.params["room_id"], req.user.user_id)
        events = await load(sorted(state.values()))
        return await view.serialize(events, req.user.user_id, with_relations=False)  # type: ignore[return-value]

    async def one_state(req: ApiRequest) -> JsonDict:
        state = await state_for(req.params["room_id"], req.user.user_id)
        key = (req.params["event_type"], req.params.get("state_key", ""))
        if key not in state:
            raise not_found("Event not found")
        events = await load([state[key]])
        served = await view.serialize(events, req.user.user_id, with_relations=False)
        if req.arg("format") == "event":
            return served[0]
        return served[0]["content"]

    async def members(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        at = events_position(req.arg("at"), "at")
        state = await state_for(room_id, req.user.user_id)
        wanted, unwanted = req.arg("membership"), req.arg("not_membership")
        ids = [eid for (t, _), eid in state.items() if t == "m.room.member"]
        events = await load(sorted(ids))
        if at is not None:
            events = await _members_at(view, room_id, at, events)
        chosen = [
            e for e in events
            if (wanted is None or e.event.content.get("membership") == wanted)
            and (unwanted is None or e.event.content.get("membership") != unwanted)
        ]
        return {"chunk": await view.serialize(chosen, req.user.user_id, with_relations=False)}

    async def joined_members(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        state = await state_for(room_id, req.user.user_id)
        ids = [eid for (t, _), eid in state.items() if t == "m.room.member"]
        joined: JsonDict = {}
        for loaded in await load(ids):
            content = loaded.event.content
            if content.get("membership") == "join":
                joined[loaded.event.state_key or ""] = {
                    "display_name": content.get("displayname"),
                    "avatar_url": content.get("avatar_url"),
                }
        return {"joined": joined}

    R = f"{CLIENT_PREFIX}/rooms/{{room_id}}"
    router.add("GET", f"{R}/state", all_state)  # type: ignore[arg-type]
    router.add("GET", f"{R}/state/{{event_type}}/{{state_key}}", one_state)
    router.add("GET", f"{R}/state/{{event_type}}", one_state)
    router.add("GET", f"{R}/state/{{event_type}}/", one_state)
    router.add("GET", f"{R}/members", members)
    router.add("GET", f"{R}/joined_members", joined_members)


async def _members_at(
    view: RoomView, room_id: str, position: int, current: list[LoadedEvent]
) -> list[LoadedEvent]:
    """The member events in force at a stream position (for /members?at=)."""
    result = []
    for loaded in current:
        user = loaded.event.state_key or ""
        history = await view.state.membership_history(room_id, user)
        if not history or history[0][0] > position:
            continue
        if loaded.stream_ordering is not None and loaded.stream_ordering <= position:
            result.append(loaded)
            continue
        earlier = await view.state.state_history(room_id, "m.room.member", user)
        at = [eid for pos, eid in earlier if pos <= position]
        if at:
            result.extend((await view.engine.get_events([at[-1]])).values())
    return result
