"""GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event: the event nearest a time.

The user must be able to read the room's events (the access module), and the
answer is the nearest event they may see in the given direction; events this
server does not hold are not looked for on other servers.
"""

from __future__ import annotations

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


def register(router: Router, store: EventTimestampStore, view: RoomView) -> None:
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
        raise not_found(f"No event found {'after' if forwards else 'before'} {ts}")

    router.add("GET", "/_matrix/client/v1/rooms/{room_id}/timestamp_to_event",
               timestamp_to_event)
