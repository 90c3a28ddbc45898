"""GET /user/{userId}/rooms/{roomId}/tags, PUT and DELETE .../tags/{tag}.

Tags are the room account data `m.tag` ({"tags": {tag: {"order": n}}}), so
/sync delivers them like any room account data. A change reads, edits and
writes that one object; changes of one user's tags in one room go one at a
time (a lock per user and room, in this process) so that two tags added at
once both stay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import DeferredLock

from roost.client_api.account_data import AccountData
from roost.client_api.errors import bad_json, forbidden, invalid_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router

MAX_TAG_BYTES = 255


class _Locks:
    """A lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], DeferredLock] = {}

    async def run(self, key: tuple[str, str], fn: Callable[[], Awaitable[None]]) -> None:
        lock = self._locks.setdefault(key, DeferredLock())
        await lock.acquire()
        try:
            await fn()
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(key, None)


def register(router: Router, account_data: AccountData,
             room_exists: Callable[[str], Awaitable[bool]]) -> None:
    locks = _Locks()

    def own(req: ApiRequest) -> tuple[str, str]:
        if req.params["user_id"] != req.user.user_id:
            raise forbidden("You may only access your own tags")
        room_id = req.params["room_id"]
        if not room_id.startswith("!"):
            raise invalid_param("Not a room id")
        return req.user.user_id, room_id

    async def current(user_id: str, room_id: str) -> dict[str, Any]:
        content = await account_data.store.get(user_id, room_id, "m.tag")
        tags = content.get("tags") if isinstance(content, dict) else None
        return dict(tags) if isinstance(tags, dict) else {}

    async def get_tags(req: ApiRequest) -> JsonDict:
        user_id, room_id = own(req)
        return {"tags": await current(user_id, room_id)}

    async def put_tag(req: ApiRequest) -> JsonDict:
        user_id, room_id = own(req)
        tag = req.params["tag"]
        if len(tag.encode("utf-8")) > MAX_TAG_BYTES:
            raise invalid_param(f"A tag is at most {MAX_TAG_BYTES} bytes")
        body = req.json()
        order = body.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, int | float)):
            raise bad_json("order must be a number")
        if not await room_exists(room_id):
            raise not_found("Unknown room")

        async def change() -> None:
            tags = await current(user_id, room_id)
            tags[tag] = body
            await account_data.put_room(user_id, room_id, "m.tag", {"tags": tags})

        await locks.run((user_id, room_id), change)
        return {}

    async def delete_tag(req: ApiRequest) -> JsonDict:
        user_id, room_id = own(req)
        tag = req.params["tag"]

        async def change() -> None:
            tags = await current(user_id, room_id)
            if tags.pop(tag, None) is not None:
                await account_data.put_room(user_id, room_id, "m.tag", {"tags": tags})

        await locks.run((user_id, room_id), change)
        return {}

    T = f"{CLIENT_PREFIX}/user/{{user_id}}/rooms/{{room_id}}/tags"
    router.add("GET", T, get_tags)
    router.add("PUT", f"{T}/{{tag}}", put_tag)
    router.add("DELETE", f"{T}/{{tag}}", delete_tag)
