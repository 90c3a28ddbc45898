"""GET /_matrix/client/v1/room_summary/{roomIdOrAlias} and GET /_matrix/client/v1/mutual_rooms.

A room's summary is the space hierarchy's (roost.rooms.hierarchy) without the
children, shown to whoever may see it there: a member or invitee, anyone for
a world-readable room or one with an open join rule, a member of an allowed
room for a restricted one. Without a token only the open rooms are shown. A
room this server does not hold, or one the caller may not see, is 404.

Mutual rooms are the rooms both users are joined to now (one page: the list is
never long enough to need another).
"""

from __future__ import annotations

from roost.client_api.errors import invalid_param, not_found
from roost.client_api.resource import ApiRequest, JsonDict, Router
from roost.rooms.hierarchy import SpaceHierarchy, chunk_visible_to_user
from roost.storage.directory import DirectoryStore
from roost.storage.room_state import RoomStateStore


def register(router: Router, spaces: SpaceHierarchy, directory: DirectoryStore,
             state: RoomStateStore) -> None:
    async def room_summary(req: ApiRequest) -> JsonDict:
        target = req.params["room"]
        if target.startswith("#"):
            found = await directory.get_alias(target)
            if found is None:
                raise not_found("Room alias not found")
            room_id = found[0]
        elif target.startswith("!"):
            room_id = target
        else:
            raise invalid_param("Expected a room id or a room alias")
        room_state = await spaces.state(room_id)
        if room_state is None:
            raise not_found("Room not found")
        summary = await spaces.summary(room_id, room_state, suggested_only=False)
        summary.pop("children_state", None)
        user = req.requester.user_id if req.requester is not None else None
        visible = await spaces.user_may_see(room_id, user, room_state) if user is not None \
            else chunk_visible_to_user(summary, {})
        if not visible:
            raise not_found("Room not found")
        if user is not None:
            membership = await spaces.membership(room_id, user)
            if membership is not None:
                summary["membership"] = membership
        return summary

    async def mutual_rooms(req: ApiRequest) -> JsonDict:
        other = req.arg("user_id")
        if not other or not other.startswith("@") or ":" not in other:
            raise invalid_param("user_id must be a user id")
        if other == req.user.user_id:
            raise invalid_param("user_id must be another user's")
        if req.arg("from") is not None:
            raise invalid_param("from is not a token this server gave")
        mine = await state.rooms_for_user(req.user.user_id, ("join",))
        theirs = await state.rooms_for_user(other, ("join",))
        shared = sorted(set(mine) & set(theirs))
        return {"joined": shared, "count": len(shared)}

    # The stable path, and MSC3266's unstable ones that clients (Cinny) still ask first.
    for path in ("/_matrix/client/v1/room_summary/{room}",
                 "/_matrix/client/unstable/im.nheko.summary/summary/{room}",
                 "/_matrix/client/unstable/im.nheko.summary/rooms/{room}/summary"):
        router.add("GET", path, room_summary, auth=False, auth_optional=True)
    router.add("GET", "/_matrix/client/v1/mutual_rooms", mutual_rooms)
