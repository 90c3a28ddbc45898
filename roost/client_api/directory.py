"""Room aliases (/directory/room/{alias}, /rooms/{roomId}/aliases) and the public room list."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from roost.client_api.appservice import AppServices
from roost.client_api.errors import MatrixError, forbidden, invalid_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView
from roost.federation.remote_queries import RemoteQueries
from roost.rooms import public_rooms as public_rooms_lib
from roost.rooms.access import JOINED
from roost.rooms.auth import get_named_level, get_power_level
from roost.rooms.engine import RoomEngine, RoomError
from roost.rooms.events import is_valid_server_name
from roost.storage.directory import DirectoryStore

_ALIAS_RE = re.compile(r"^#[^:\s]+:[A-Za-z0-9.\-\[\]:]+$")
MAX_ALIAS_BYTES = 255


RemoteAlias = Callable[[str], Awaitable[tuple[str, list[str]]]]


def register(router: Router, engine: RoomEngine, view: RoomView, directory: DirectoryStore,
             server_name: str, appservices: AppServices | None = None,
             remote_alias: RemoteAlias | None = None,
             remote: RemoteQueries | None = None) -> None:
    """``remote_alias`` resolves another server's alias over federation (query/directory)
    and ``remote`` reads other servers' room directories (/publicRooms?server=)."""
    def check_local_alias(alias: str) -> None:
        if not _ALIAS_RE.match(alias) or len(alias.encode()) > MAX_ALIAS_BYTES:
            raise invalid_param("Invalid room alias")

    async def put_alias(req: ApiRequest) -> JsonDict:
        alias = req.params["alias"]
        check_local_alias(alias)
        if alias.split(":", 1)[1] != server_name:
            raise invalid_param("Room alias must be on this server")
        if appservices is not None:
            appservices.check_alias_free(alias, req.user.app_service)
        room_id = req.json().get("room_id")
        if not isinstance(room_id, str):
            raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: room_id")
        if await engine.room_version(room_id) is None:
            raise not_found("Unknown room")
        await view.require_joined(room_id, req.user.user_id)
        if not await directory.create_alias(alias, room_id, req.user.user_id):
            raise MatrixError(409, "M_UNKNOWN", "Room alias already exists")
        return {}

    async def get_alias(req: ApiRequest) -> JsonDict:
        alias = req.params["alias"]
        check_local_alias(alias)
        if alias.split(":", 1)[1] != server_name and remote_alias is not None:
            try:
                room_id, servers = await remote_alias(alias)
            except RoomError as e:
                raise MatrixError(e.status, e.errcode, e.message) from None
            return {"room_id": room_id, "servers": list(dict.fromkeys(servers))}
        found = await directory.get_alias(alias)
        if found is None and appservices is not None and await appservices.query_alias(alias):
            found = await directory.get_alias(alias)  # a bridge made it on demand
        if found is None:
            raise not_found("Room alias not found")
        return {"room_id": found[0], "servers": [server_name]}

    async def delete_alias(req: ApiRequest) -> JsonDict:
        alias = req.params["alias"]
        check_local_alias(alias)
        found = await directory.get_alias(alias)
        if found is None:
            raise not_found("Room alias not found")
        room_id, creator = found
        if creator != req.user.user_id and not req.user.is_admin:
            state = await engine.current_state_events(room_id)
            version = await engine.room_version(room_id)
            assert version is not None
            level = get_power_level(req.user.user_id, state, version)
            if level < get_named_level(state, "state_default", 50):
                raise forbidden("You may not remove this alias")
        await directory.delete_alias(alias)
        return {}

    async def room_aliases(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        # Spec: members now, or anyone when the room is world-readable.
        await view.require_read(room_id, req.user.user_id, JOINED)
        return {"aliases": await directory.aliases_of(room_id)}

    async def get_visibility(req: ApiRequest) -> JsonDict:
        public = await directory.is_public(req.params["room_id"])
        if public is None:
            raise not_found("Unknown room")
        return {"visibility": "public" if public else "private"}

    async def put_visibility(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        visibility = req.json().get("visibility", "public")
        if visibility not in ("public", "private"):
            raise invalid_param("visibility must be public or private")
        if await engine.room_version(room_id) is None:
            raise not_found("Unknown room")
        state = await engine.current_state_events(room_id)
        version = await engine.room_version(room_id)
        assert version is not None
        if not req.user.is_admin and get_power_level(req.user.user_id, state, version) < \
                get_named_level(state, "state_default", 50):
            raise forbidden("You may not change this room's visibility")
        await directory.set_public(room_id, visibility == "public")
        return {}

    async def public_rooms(req: ApiRequest) -> JsonDict:
        body = req.json(required=False) if req.method == "POST" else {}
        try:
            limit, since, term = public_rooms_lib.parse_query(
                body, req.int_arg("limit", None), req.arg("since"))
        except public_rooms_lib.BadDirectoryQuery as e:
            raise MatrixError(400, "M_BAD_JSON", str(e)) from None
        if limit is not None and limit < 0:
            raise invalid_param("limit must not be negative")
        server = req.arg("server")
        if server is not None and server != server_name:
            if remote is None:
                raise not_found("Other servers' directories are not available")
            if not is_valid_server_name(server):
                raise invalid_param("server is not a server name")
            search = body.get("filter") if isinstance(body.get("filter"), dict) else None
            include_all = body.get("include_all_networks") is True
            instance = body.get("third_party_instance_id")
            try:
                return await remote.public_rooms(
                    server, limit, since, search, include_all,
                    instance if isinstance(instance, str) else None)
            except RoomError as e:
                raise MatrixError(e.status, e.errcode, e.message) from None
        offset, size = public_rooms_lib.page_window(since, limit)
        rooms, total = await directory.public_rooms_page(offset, size, term)
        listed = await public_rooms_lib.entries(rooms, _contents(engine))
        return public_rooms_lib.cut_page(listed, offset, size, total)

    router.add("PUT", f"{CLIENT_PREFIX}/directory/room/{{alias}}", put_alias)
    router.add("GET", f"{CLIENT_PREFIX}/directory/room/{{alias}}", get_alias, auth=False)
    router.add("DELETE", f"{CLIENT_PREFIX}/directory/room/{{alias}}", delete_alias)
    router.add("GET", f"{CLIENT_PREFIX}/rooms/{{room_id}}/aliases", room_aliases)
    router.add("GET", f"{CLIENT_PREFIX}/directory/list/room/{{room_id}}", get_visibility, auth=False)
    router.add("PUT", f"{CLIENT_PREFIX}/directory/list/room/{{room_id}}", put_visibility)
    router.add("GET", f"{CLIENT_PREFIX}/publicRooms", public_rooms, auth_optional=True)
    router.add("POST", f"{CLIENT_PREFIX}/publicRooms", public_rooms)


def _contents(engine: RoomEngine) -> Any:
    async def load(event_ids: list[str]) -> dict[str, Any]:
        loaded = await engine.get_events(event_ids)
        return {eid: e.event.content for eid, e in loaded.items()}

    return load
