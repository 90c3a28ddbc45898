"""GET/PUT /user/{userId}/account_data/{type} and the per-room form; filters."""

from __future__ import annotations

from typing import Any

from roost.client_api.errors import (
    MatrixError,
    fenced_as_unavailable,
    forbidden,
    invalid_param,
    not_found,
)
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.sync_filter import parse_filter
from roost.storage.notifier import Notifier
from roost.storage.streams import StreamIdGenerator
from roost.storage.sync_data import AccountDataStore, FilterStore

# Types the server manages itself and clients may not set (spec).
SERVER_MANAGED = {"m.fully_read", "m.push_rules"}


class AccountData:
    def __init__(self, store: AccountDataStore, stream: StreamIdGenerator,
                 notifier: Notifier) -> None:
        self.store = store
        self.stream = stream
        stream.announce_to(notifier, "account_data")

    async def put_room(self, user_id: str, room_id: str, data_type: str,
                       content: dict[str, Any]) -> None:
        with fenced_as_unavailable():
            [position] = self.stream.allocate(1)
            try:
                await self.store.put(user_id, room_id, data_type, content, position,
                                     self.stream.fence)
            except BaseException:
                self.stream.finish([position])
                raise
        # Announced by the stream once every earlier change is readable too.
        self.stream.finish([position], users=[user_id])

    async def put_global(self, user_id: str, data_type: str, content: dict[str, Any]) -> None:
        await self.put_room(user_id, "", data_type, content)


def register(router: Router, account_data: AccountData, filters: FilterStore,
             room_exists: Any) -> None:
    def own(req: ApiRequest) -> str:
        if req.params["user_id"] != req.user.user_id:
            raise forbidden("You may only access your own account data")
        return req.user.user_id

    async def put_global(req: ApiRequest) -> JsonDict:
        user = own(req)
        data_type = req.params["type"]
        if data_type in SERVER_MANAGED:
            raise MatrixError(405, "M_BAD_JSON", f"{data_type} is managed by the server")
        await account_data.put_global(user, data_type, req.json())
        return {}

    async def get_global(req: ApiRequest) -> JsonDict:
        content = await account_data.store.get(own(req), "", req.params["type"])
        if content is None:
            raise not_found("Account data not found")
        return content

    async def put_room(req: ApiRequest) -> JsonDict:
        user = own(req)
        room_id, data_type = req.params["room_id"], req.params["type"]
        if not room_id.startswith("!"):
            raise invalid_param("Not a room id")
        if data_type in SERVER_MANAGED:
            raise MatrixError(405, "M_BAD_JSON", f"{data_type} is managed by the server")
        if not await room_exists(room_id):
            raise not_found("Unknown room")
        await account_data.put_room(user, room_id, data_type, req.json())
        return {}

    async def get_room(req: ApiRequest) -> JsonDict:
        content = await account_data.store.get(own(req), req.params["room_id"], req.params["type"])
        if content is None:
            raise not_found("Account data not found")
        return content

    async def post_filter(req: ApiRequest) -> JsonDict:
        user = own(req)
        body = req.json()
        check_filter(body)
        return {"filter_id": str(await filters.add(user, body))}

    async def get_filter(req: ApiRequest) -> JsonDict:
        user = own(req)
        raw = req.params["filter_id"]
        found = await filters.get(user, int(raw)) if raw.isdigit() else None
        if found is None:
            raise not_found("Filter not found")
        return found

    U = f"{CLIENT_PREFIX}/user/{{user_id}}"
    router.add("PUT", f"{U}/account_data/{{type}}", put_global)
    router.add("GET", f"{U}/account_data/{{type}}", get_global)
    router.add("PUT", f"{U}/rooms/{{room_id}}/account_data/{{type}}", put_room)
    router.add("GET", f"{U}/rooms/{{room_id}}/account_data/{{type}}", get_room)
    router.add("POST", f"{U}/filter", post_filter)
    router.add("GET", f"{U}/filter/{{filter_id}}", get_filter)


def check_filter(body: Any) -> None:
    """Refuse what the spec's filter types do not allow (400 M_BAD_JSON); see sync_filter."""
    parse_filter(body)
