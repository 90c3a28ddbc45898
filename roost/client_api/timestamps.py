"""GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event: the event nearest a time.

The user must be able to read the room's events (the access module), and the
answer is the nearest event they may see in the given direction. When this
server holds none (history from before it joined), it asks the other servers in
the room (the federation counterpart), as the spec suggests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from roost.client_api.errors import invalid_param, missing_param, not_found
from roost.client_api.resource import ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.rooms.access import EVENTS
from roost.storage.event_timestamps import EventTimestampStore

# Candidates read per round, and rounds, when the nearest events are hidden from the user.
BATCH = 50
ROUNDS = 4


def parse_query(ts: str | None, direction: str | None) -> tuple[int, bool]:
    if ts is None:
        raise missing_param("ts")
    if direction is None:
        raise missing_param("dir")
    if direction not in ("f", "b"):
        raise invalid_param("dir must be f or b")
    try:
        value = int(ts)
    except ValueError:
        raise invalid_param("ts must be an integer") from None
    return value, direction == "f"


# (servers, room id, ts, forwards) -> (event id, origin_server_ts) another server gave.
AskRemote = Callable[[list[str], str, int, bool], Awaitable[tuple[str, int] | None]]


def register(router: Router, store: EventTimestampStore, view: RoomView,
             ask_remote: AskRemote | None = None, server_name: str = "") -> None:
    async def timestamp_to_event(req: ApiRequest) -> JsonDict:
        room_id, user = req.params["room_id"], req.user.user_id
        ts, forwards = parse_query(req.arg("ts"), req.arg("dir"))
        await view.require_read(room_id, user, EVENTS)
        seen: set[str] = set()
        for round_ in range(ROUNDS):
            ids = await store.nearest(room_id, ts, forwards, BATCH * (round_ + 1))
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            loaded = await view.engine.get_events(fresh)
            candidates = [loaded[i] for i in fresh if i in loaded]
            visible = {e.event.event_id for e in await view.visible(room_id, user, candidates)}
            for event_id in fresh:
                if event_id in visible:
                    return {"event_id": event_id,
                            "origin_server_ts": loaded[event_id].event.origin_server_ts}
            if len(ids) < BATCH * (round_ + 1):
                break
        if ask_remote is not None:
            members = await view.state.members(room_id)
            servers = sorted({u.partition(":")[2] for u, (m, _e) in members.items()
                              if m == "join"} - {server_name})
            found = await ask_remote(servers, room_id, ts, forwards)
            if found is not None:
                return {"event_id": found[0], "origin_server_ts": found[1]}
        raise not_found(f"No event found {'after' if forwards else 'before'} {ts}")

    router.add("GET", "/_matrix/client/v1/rooms/{room_id}/timestamp_to_event",
               timestamp_to_event)
