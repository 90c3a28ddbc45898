"""GET /_matrix/federation/v1/timestamp_to_event/{roomId}: the event nearest a time.

Asked by a server with a user in the room; the answer is the nearest event in
the given direction that the asking server may see (history visibility for
servers, through the access module). `ask_servers` is the asking side, for the
client endpoint when this server holds nothing near the time.
"""

from __future__ import annotations

from urllib.parse import quote

from roost.federation.transport.client import FederationClient, FederationClientError
from roost.federation.transport.server import FederationRequest, FederationRouter, JsonDict
from roost.http.errors import MatrixError
from roost.rooms.access import RoomAccess
from roost.rooms.engine import RoomEngine
from roost.storage.event_timestamps import EventTimestampStore

BATCH = 50
ROUNDS = 4


def register(router: FederationRouter, store: EventTimestampStore, engine: RoomEngine,
             access: RoomAccess) -> None:
    async def timestamp_to_event(req: FederationRequest) -> JsonDict:
        origin = req.authenticated_origin
        room_id = req.params["room_id"]
        raw_ts, direction = req.arg("ts"), req.arg("dir")
        if raw_ts is None or direction is None:
            raise MatrixError(400, "M_MISSING_PARAM", "ts and dir are required")
        if direction not in ("f", "b"):
            raise MatrixError(400, "M_INVALID_PARAM", "dir must be f or b")
        try:
            ts = int(raw_ts)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "ts must be an integer") from None
        if await engine.room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        if not await access.server_in_room(room_id, origin):
            raise MatrixError(403, "M_FORBIDDEN", f"{origin} is not in {room_id}")
        forwards = direction == "f"
        seen: set[str] = set()
        for round_ in range(ROUNDS):
            ids = await store.nearest(room_id, ts, forwards, BATCH * (round_ + 1))
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            loaded = await engine.get_events(fresh)
            visible = await access.server_visible_ids(room_id, origin, loaded.values())
            for event_id in fresh:
                if event_id in visible:
                    return {"event_id": event_id,
                            "origin_server_ts": loaded[event_id].event.origin_server_ts}
            if len(ids) < BATCH * (round_ + 1):
                break
        raise MatrixError(404, "M_NOT_FOUND", "No event found")

    router.add("GET", "/_matrix/federation/v1/timestamp_to_event/{room_id}", timestamp_to_event)


async def ask_servers(client: FederationClient, servers: list[str], room_id: str, ts: int,
                      forwards: bool) -> tuple[str, int] | None:
    """The first (event id, origin_server_ts) another server in the room gives, or None."""
    path = f"/_matrix/federation/v1/timestamp_to_event/{quote(room_id, safe='')}"
    for server in servers:
        try:
            answer = await client.get_json(server, path,
                                           {"ts": str(ts), "dir": "f" if forwards else "b"})
        except FederationClientError:
            continue
        if not isinstance(answer, dict):
            continue
        event_id, found_ts = answer.get("event_id"), answer.get("origin_server_ts")
        if isinstance(event_id, str) and event_id.startswith("$") and \
                isinstance(found_ts, int) and not isinstance(found_ts, bool):
            return event_id, found_ts
    return None
