"""The deprecated endpoints still in the spec: GET /events, GET /initialSync,
GET /rooms/{roomId}/initialSync and GET /events/{eventId}.

They predate /sync and are served from the same parts: the events stream
(tokens are the `s<N>` positions /messages uses, and any /sync token is
accepted as a `from`), the access module for every event and state read, and
/sync's change waiter for the long poll of GET /events. GET /events with a
`room_id` is the spec's peeking: the room's events, for a user who may read
them (a world-readable room, for anyone). Messages of users the reader ignores
(m.ignored_user_list) are left out, as /sync leaves them out.
"""

from __future__ import annotations

from roost.client_api.errors import not_found
from roost.client_api.presence import PresenceTracker
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.client_api.stream_token import events_position
from roost.client_api.sync_waiter import ChangeWaiter
from roost.rooms.access import EVENTS, STATE
from roost.rooms.engine import RoomEngine
from roost.rooms.engine_types import LoadedEvent
from roost.storage.directory import DirectoryStore
from roost.storage.events import SyncEventStore
from roost.storage.room_pages import RoomPageStore
from roost.storage.streams import StreamIdGenerator
from roost.storage.sync_data import AccountDataStore

# GET /events reads the stream in windows of this many positions: a window holds at most
# this many events, so one query per window returns all of the user's, oldest first.
WINDOW = 100
MAX_WINDOWS = 50
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 60_000
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class OldSync:
    def __init__(self, engine: RoomEngine, view: RoomView, events: RoomPageStore,
                 sync_events: SyncEventStore, stream: StreamIdGenerator, waiter: ChangeWaiter,
                 account_data: AccountDataStore, account_stream: StreamIdGenerator,
                 directory: DirectoryStore, presence: PresenceTracker) -> None:
        self._engine = engine
        self._view = view
        self._events = events
        self._sync_events = sync_events
        self._stream = stream
        self._waiter = waiter
        self._account_data = account_data
        self._account_stream = account_stream
        self._directory = directory
        self._presence = presence

    # -- GET /events -----------------------------------------------------------------

    async def events(self, user_id: str, since: int | None, timeout_ms: int,
                     room_id: str | None) -> JsonDict:
        if room_id is not None:
            await self._view.require_read(room_id, user_id, EVENTS)
        if since is None:
            # Without `from`, the stream starts now (as other servers do).
            return {"start": f"s{self._stream.current}", "end": f"s{self._stream.current}",
                    "chunk": []}
        deadline = self._view.now_ms() + timeout_ms
        while True:
            chunk, end = await self._events_after(user_id, since, room_id)
            remaining = deadline - self._view.now_ms()
            if chunk or remaining <= 0:
                return {"start": f"s{since}", "end": f"s{end}", "chunk": chunk}
            since = end
            await self._waiter.wait(user_id, remaining / 1000)

    async def _events_after(self, user_id: str, after: int, room_id: str | None
                            ) -> tuple[list[JsonDict], int]:
        rooms = [room_id] if room_id is not None else sorted(
            await self._view.state.rooms_for_user(user_id, ("join",)))
        current = self._stream.current
        position = after
        for _ in range(MAX_WINDOWS):
            if position >= current:
                break
            upto = min(current, position + WINDOW)
            stored = await self._sync_events.in_range(rooms, position, upto, WINDOW)
            position = upto
            if stored:
                chunk = await self._serve_visible(user_id, self._engine.loaded(stored))
                if chunk:
                    return chunk, position
        return [], position

    async def _ignored(self, user_id: str) -> set[str]:
        """The users in the user's m.ignored_user_list, whose messages are not served."""
        content = await self._account_data.get(user_id, "", "m.ignored_user_list")
        users = content.get("ignored_users") if isinstance(content, dict) else None
        return {u for u in users if u != user_id} if isinstance(users, dict) else set()

    async def _without_ignored(self, user_id: str, events: list[LoadedEvent]
                               ) -> list[LoadedEvent]:
        ignored = await self._ignored(user_id)
        return [e for e in events
                if e.event.state_key is not None or e.event.sender not in ignored]

    async def _serve_visible(self, user_id: str, events: list[LoadedEvent]) -> list[JsonDict]:
        events = await self._without_ignored(user_id, events)
        by_room: dict[str, list[LoadedEvent]] = {}
        for event in events:
            by_room.setdefault(event.event.room_id, []).append(event)
        visible: set[str] = set()
        for room_id, room_events in by_room.items():
            visible.update(e.event.event_id for e in
                           await self._view.visible(room_id, user_id, room_events))
        return await self._view.serialize([e for e in events if e.event.event_id in visible],
                                          user_id)

    # -- GET /events/{eventId} -----------------------------------------------------------

    async def event(self, user_id: str, event_id: str) -> JsonDict:
        loaded = (await self._engine.get_events([event_id])).get(event_id)
        if loaded is None or loaded.rejected or not await self._view.visible(
                loaded.event.room_id, user_id, [loaded]):
            raise not_found("Event not found")
        return (await self._view.serialize([loaded], user_id))[0]

    # -- initialSync -----------------------------------------------------------------------

    async def initial_sync(self, user_id: str, limit: int, archived: bool) -> JsonDict:
        memberships = ("join", "invite", "leave", "ban") if archived else ("join", "invite")
        rooms = await self._view.state.rooms_for_user(user_id, memberships)
        end = self._stream.current
        body: JsonDict = {"end": f"s{end}", "rooms": [], "presence": [],
                          "account_data": []}
        room_data: dict[str, list[JsonDict]] = {}
        for room, data_type, content in await self._account_data.since(
                user_id, 0, self._account_stream.current):
            if room:
                room_data.setdefault(room, []).append({"type": data_type, "content": content})
            else:
                body["account_data"].append({"type": data_type, "content": content})
        for room_id, membership in sorted(rooms.items()):
            body["rooms"].append(await self._room(user_id, room_id, membership, limit, end,
                                                  room_data.get(room_id, [])))
        return body

    async def room_initial_sync(self, user_id: str, room_id: str, limit: int) -> JsonDict:
        await self._view.require_read(room_id, user_id, EVENTS)
        membership = await self._view.membership(room_id, user_id)
        data = [{"type": t, "content": c}
                for room, t, c in await self._account_data.since(
                    user_id, 0, self._account_stream.current) if room == room_id]
        body = await self._room(user_id, room_id, membership, limit, self._stream.current, data)
        members = [e["state_key"] for e in body.get("state", [])
                   if e["type"] == "m.room.member" and e["content"].get("membership") == "join"]
        body["presence"] = [{"type": "m.presence", "sender": m, "content": self._presence.get(m)}
                            for m in members]
        return body

    async def _room(self, user_id: str, room_id: str, membership: str | None, limit: int,
                    end: int, account_data: list[JsonDict]) -> JsonDict:
        room: JsonDict = {"room_id": room_id}
        if membership is not None:
            room["membership"] = membership
        is_public = await self._directory.is_public(room_id)
        room["visibility"] = "public" if is_public else "private"
        if account_data:
            room["account_data"] = account_data
        if membership == "invite":
            member = (await self._view.state.members(room_id)).get(user_id)
            invite = (await self._engine.get_events([member[1]])).get(member[1]) \
                if member is not None else None
            if invite is not None:
                room["invite"] = (await self._view.serialize([invite], user_id,
                                                             with_relations=False))[0]
        if await self._view.access.room_read(room_id, user_id, EVENTS) is None:
            return room
        page = await self._events.room_stream_events(room_id, end + 1, None, True, limit)
        visible = await self._view.visible(room_id, user_id, await self._without_ignored(
            user_id, self._engine.loaded(page)))
        visible.reverse()  # oldest first, as a timeline reads
        start = (page[-1].stream_ordering or 1) - 1 if page else end
        room["messages"] = {"chunk": await self._view.serialize(visible, user_id),
                            "start": f"s{start}", "end": f"s{end}"}
        state_ids = await self._view.access.readable_state(room_id, user_id, STATE)
        if state_ids is not None:
            loaded = await self._engine.get_events(sorted(state_ids.values()))
            room["state"] = await self._view.serialize(list(loaded.values()), user_id,
                                                       with_relations=False)
        return room


def _limit(req: ApiRequest) -> int:
    return req.limit_arg("limit", DEFAULT_LIMIT, MAX_LIMIT)


def register(router: Router, old: OldSync) -> None:
    async def get_events(req: ApiRequest) -> JsonDict:
        since = events_position(req.arg("from"), "from")
        timeout = req.limit_arg("timeout", DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS)
        return await old.events(req.user.user_id, since, timeout, req.arg("room_id"))

    async def get_event(req: ApiRequest) -> JsonDict:
        return await old.event(req.user.user_id, req.params["event_id"])

    async def initial_sync(req: ApiRequest) -> JsonDict:
        return await old.initial_sync(req.user.user_id, _limit(req),
                                      req.bool_arg("archived", False))

    async def room_initial_sync(req: ApiRequest) -> JsonDict:
        return await old.room_initial_sync(req.user.user_id, req.params["room_id"], _limit(req))

    router.add("GET", f"{CLIENT_PREFIX}/events", get_events)
    router.add("GET", f"{CLIENT_PREFIX}/events/{{event_id}}", get_event)
    router.add("GET", f"{CLIENT_PREFIX}/initialSync", initial_sync)
    router.add("GET", f"{CLIENT_PREFIX}/rooms/{{room_id}}/initialSync", room_initial_sync)
