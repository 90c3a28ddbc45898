"""GET /state, GET /state/{type}/{stateKey}, GET /members, GET /joined_members.

A member reads the current state; a former member reads the state as it was
when they left (history visibility applies to state as to messages); who may
read what is roost.rooms.access's answer.
"""

from __future__ import annotations

from roost.client_api.errors import not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.client_api.stream_token import events_position
from roost.http.bodies import RawJson
from roost.rooms.access import JOINED, STATE
from roost.rooms.engine import LoadedEvent, RoomEngine, RoomError
from roost.rooms.engine_types import LoadedState

StateKey = tuple[str, str]


def register(router: Router, engine: RoomEngine, view: RoomView) -> None:
    async def state_for(room_id: str, user_id: str, kind: str = STATE) -> dict[StateKey, str]:
        """The state the user may read (the access module decides: current if joined or
        the room is world-readable, as of their departure if they left or were banned
        after joining, else 403)."""
        return await view.readable_state(room_id, user_id, kind)

    async def load(ids: list[str]) -> list[LoadedEvent]:
        loaded = await engine.get_events(ids)
        return [loaded[i] for i in ids if i in loaded]

    async def current_state(room_id: str, state: dict[StateKey, str]) -> LoadedState | None:
        """`state` loaded as the room's head keeps it (RoomHead.loaded_state, read-only:
        its members in event id order, not looked up one by one per request,
        bench/big_room.py), when `state` is the room's current state; else None."""
        try:
            ids, whole = (await engine.current_states_ready([room_id]))[room_id]
        except RoomError:
            return None
        return whole if whole is not None and ids == state else None

    async def all_state(req: ApiRequest) -> RawJson | list[JsonDict]:
        state = await state_for(req.params["room_id"], req.user.user_id)
        events = await load(sorted(state.values()))
        return (await view.serialize_state([events]))[0]

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
        if at is not None:
            # A departed member reads no membership change after their departure.
            departed = await view.access.departure_position(room_id, req.user.user_id)
            if departed is not None:
                at = min(at, departed)
        whole = await current_state(room_id, state)
        wanted, unwanted = req.arg("membership"), req.arg("not_membership")
        if whole is not None and at is None and wanted is None and unwanted is None:
            return {"chunk": await view.serialize_members(whole)}
        events = whole.members_by_id if whole is not None else await load(
            sorted(eid for (t, _), eid in state.items() if t == "m.room.member"))
        if at is not None:
            events = await _members_at(view, room_id, at, events)
        chosen = events if wanted is None and unwanted is None else [
            e for e in events
            if (wanted is None or e.event.content.get("membership") == wanted)
            and (unwanted is None or e.event.content.get("membership") != unwanted)
        ]
        return {"chunk": (await view.serialize_state([chosen]))[0]}

    async def joined_members(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        state = await state_for(room_id, req.user.user_id, JOINED)
        ids = [eid for (t, _), eid in state.items() if t == "m.room.member"]
        joined: JsonDict = {}
        for loaded in await load(ids):
            content = loaded.event.content
            if content.get("membership") == "join":
                # An absent optional field is left out, never sent as null.
                joined[loaded.event.state_key or ""] = {
                    key: content[field]
                    for key, field in (("display_name", "displayname"), ("avatar_url", "avatar_url"))
                    if isinstance(content.get(field), str)
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
