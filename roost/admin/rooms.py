"""Rooms under /_synapse/admin: list and describe them, their members and state, block
them, and shut them down (everyone local moved out, aliases dropped, optionally a new
room for the people who were in it).

A shutdown moves each local member out with a leave of their own, appended
through the room engine like any leave, so other servers in the room hear of
it and every client's sync shows it. The v2 delete runs in the background
and is followed through its delete id, as the tools expect.
"""

from __future__ import annotations

import functools
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from roost.admin.auth import ADMIN_PREFIX, AdminGate, bind
from roost.admin.users import page_args
from roost.client_api.errors import MatrixError, bad_json, invalid_param, not_found
from roost.client_api.event_format import stripped_state
from roost.client_api.resource import ApiRequest, JsonDict, Router
from roost.client_api.rooms import RoomCreation
from roost.rooms.engine import NewEvent, RoomEngine, RoomError
from roost.storage.admin_queries import ROOM_ORDER, AdminQueries
from roost.storage.room_purge import RoomPurger

logger = logging.getLogger(__name__)
MAX_REMEMBERED_DELETES = 1000


@dataclass
class Shutdown:
    delete_id: str
    room_id: str
    status: str = "scheduled"  # scheduled, active, complete, failed
    kicked_users: list[str] = field(default_factory=list)
    failed_to_kick_users: list[str] = field(default_factory=list)
    local_aliases: list[str] = field(default_factory=list)
    new_room_id: str | None = None
    error: str | None = None
    purged_events: int | None = None

    def to_json(self) -> JsonDict:
        result: JsonDict = {"kicked_users": self.kicked_users,
                            "failed_to_kick_users": self.failed_to_kick_users,
                            "local_aliases": self.local_aliases,
                            "new_room_id": self.new_room_id}
        body: JsonDict = {"delete_id": self.delete_id, "room_id": self.room_id,
                          "status": self.status, "shutdown_room": result}
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass(frozen=True)
class ShutdownRequest:
    new_room_user_id: str | None
    room_name: str
    message: str
    block: bool
    purge: bool
    force_purge: bool = False


class AdminRooms:
    def __init__(self, gate: AdminGate, queries: AdminQueries, engine: RoomEngine,
                 creation: RoomCreation, clock: IReactorTime, purger: RoomPurger) -> None:
        self.purger = purger
        self.gate = gate
        self.queries = queries
        self.engine = engine
        self.creation = creation
        self.clock = clock
        self.deletes: dict[str, Shutdown] = {}

    async def shut_down(self, shutdown: Shutdown, request: ShutdownRequest,
                        requester: str) -> None:
        shutdown.status = "active"
        room_id = shutdown.room_id
        try:
            if request.block:
                await self.queries.block_room(room_id, requester,
                                              int(self.clock.seconds() * 1000))
            members = await self.queries.local_members(room_id)
            if request.new_room_user_id is not None:
                shutdown.new_room_id = await self._new_room(request)
            for user_id in members:
                try:
                    await self.engine.append(room_id, NewEvent(
                        user_id, "m.room.member", {"membership": "leave"}, user_id))
                    if shutdown.new_room_id is not None:
                        await self.engine.append(shutdown.new_room_id, NewEvent(
                            user_id, "m.room.member", {"membership": "join"}, user_id))
                    shutdown.kicked_users.append(user_id)
                except RoomError as e:
                    logger.warning("shutdown of %s: %s could not leave: %s", room_id, user_id, e)
                    shutdown.failed_to_kick_users.append(user_id)
            shutdown.local_aliases = await self.queries.delete_local_aliases(room_id)
            if request.purge:
                if shutdown.failed_to_kick_users and not request.force_purge:
                    raise RuntimeError("not purged: some local members could not leave"
                                       " (force_purge: true purges anyway)")
                shutdown.purged_events = await self.engine.purge_room(room_id,
                                                                      self.purger.purge)
            shutdown.status = "complete"
        except Exception as e:  # the status is how the operator learns of it
            logger.exception("shutdown of %s failed", room_id)
            shutdown.status, shutdown.error = "failed", str(e)

    async def _new_room(self, request: ShutdownRequest) -> str:
        """A public room made by the given user, with the message, for the evicted members."""
        creator = request.new_room_user_id or ""
        body = {"preset": "public_chat", "name": request.room_name}
        version = self.creation.version_of(body)
        room_id, _events = await self.engine.create_room(
            version, self.creation.events(creator, version, body, None))
        await self.engine.append(room_id, NewEvent(
            creator, "m.room.message", {"msgtype": "m.text", "body": request.message}))
        return room_id

    def remember(self, shutdown: Shutdown) -> None:
        if len(self.deletes) >= MAX_REMEMBERED_DELETES:
            del self.deletes[next(iter(self.deletes))]
        self.deletes[shutdown.delete_id] = shutdown


def _room_json(summary: dict[str, Any], detailed: bool = False) -> JsonDict:
    body: JsonDict = {}
    for name, value in summary.items():
        if name in ("topic", "avatar") and not detailed:
            continue
        if value is None:
            continue
        body[name] = value
    body["federatable"] = summary["federatable"] not in ("false", False)
    body["joined_members"] = int(summary["joined_members"])
    body["joined_local_members"] = int(summary["joined_local_members"])
    body["state_events"] = int(summary["state_events"])
    return body


async def _room_or_404(rooms: AdminRooms, room_id: str) -> dict[str, Any]:
    summary = await rooms.queries.room(room_id)
    if summary is None:
        raise not_found("Room not found")
    return summary


async def list_rooms(rooms: AdminRooms, req: ApiRequest) -> JsonDict:
    await rooms.gate.require_admin(req)
    offset, limit, backwards = page_args(req)
    order_by = req.arg("order_by", "name") or "name"
    if order_by not in ROOM_ORDER:
        raise invalid_param(f"order_by must be one of {', '.join(sorted(ROOM_ORDER))}")
    found, total = await rooms.queries.list_rooms(req.arg("search_term"), order_by, backwards,
                                                  offset, limit)
    body: JsonDict = {"rooms": [_room_json(r) for r in found], "offset": offset,
                      "total_rooms": total}
    if offset + len(found) < total:
        body["next_batch"] = offset + len(found)
    if offset > 0:
        body["prev_batch"] = max(0, offset - limit)
    return body


async def get_room(rooms: AdminRooms, req: ApiRequest) -> JsonDict:
    await rooms.gate.require_admin(req)
    return _room_json(await _room_or_404(rooms, req.params["room_id"]), detailed=True)


async def room_members(rooms: AdminRooms, req: ApiRequest) -> JsonDict:
    await rooms.gate.require_admin(req)
    await _room_or_404(rooms, req.params["room_id"])
    members = await rooms.queries.joined_members(req.params["room_id"])
    return {"members": members, "total": len(members)}


async def room_state(rooms: AdminRooms, req: ApiRequest) -> JsonDict:
    await rooms.gate.require_admin(req)
    room_id = req.params["room_id"]
    await _room_or_404(rooms, room_id)
    state = await rooms.engine.current_state_events(room_id)
    return {"state": [{**stripped_state(event), "event_id": event.event_id,
                       "room_id": event.room_id, "origin_server_ts": event.origin_server_ts}
                      for _key, event in sorted(state.items())]}


async def get_block(rooms: AdminRooms, req: ApiRequest) -> JsonDict:
    await rooms.gate.require_admin(req)
    by = await rooms.queries.blocked_by(req.params["room_id"])
    return {"block": True, "user_id": by} if by is not None else {"block": False}


async def put_block(rooms: AdminRooms, req: ApiRequest) -> JsonDict:
    requester = await rooms.gate.require_admin(req)
    block = req.json().get("block")
    if not isinstance(block, bool):
        raise bad_json("block must be a boolean")
    room_id = req.params["room_id"]
    if not room_id.startswith("!"):
        raise invalid_param("not a room id")
    if block:
        await rooms.queries.block_room(room_id, requester.user_id,
                                       int(rooms.clock.seconds() * 1000))
    else:
        await rooms.queries.unblock_room(room_id)
    return {"block": block}


def _shutdown_request(rooms: AdminRooms, body: JsonDict) -> ShutdownRequest:
    new_user = body.get("new_room_user_id")
    if new_user is not None:
        if not isinstance(new_user, str):
            raise bad_json("new_room_user_id must be a string")
        rooms.gate.local_user(new_user)
    room_name = body.get("room_name", "Content Violation Notification")
    message = body.get("message", "Sharing illegal content on this server is not permitted"
                                  " and rooms in violation will be blocked.")
    if not isinstance(room_name, str) or not isinstance(message, str):
        raise bad_json("room_name and message must be strings")
    flags = {name: body.get(name, default) for name, default in
             (("block", False), ("purge", True), ("force_purge", False))}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise bad_json("block, purge and force_purge must be booleans")
    return ShutdownRequest(new_user, room_name, message, flags["block"], flags["purge"],
                           flags["force_purge"])


async def _begin_shutdown(rooms: AdminRooms, req: ApiRequest
                          ) -> tuple[Shutdown, ShutdownRequest, str]:
    """What both DELETE versions check first: an admin, a valid body, a known room; then
    the task for it, and who asked."""
    requester = await rooms.gate.require_admin(req)
    room_id = req.params["room_id"]
    request = _shutdown_request(rooms, req.json(required=False))
    await _room_or_404(rooms, room_id)
    return Shutdown(secrets.token_urlsafe(12), room_id), request, requester.user_id


async def delete_room_v1(rooms: AdminRooms, req: ApiRequest) -> JsonDict:
    shutdown, request, admin = await _begin_shutdown(rooms, req)
    await rooms.shut_down(shutdown, request, admin)
    rooms.remember(shutdown)
    if shutdown.status == "failed":
        raise MatrixError(500, "M_UNKNOWN", shutdown.error or "shutdown failed")
    return shutdown.to_json()["shutdown_room"]


async def delete_room_v2(rooms: AdminRooms, req: ApiRequest) -> JsonDict:
    shutdown, request, admin = await _begin_shutdown(rooms, req)
    rooms.remember(shutdown)
    defer.ensureDeferred(rooms.shut_down(shutdown, request, admin))
    return {"delete_id": shutdown.delete_id}


async def delete_status_of_room(rooms: AdminRooms, req: ApiRequest) -> JsonDict:
    await rooms.gate.require_admin(req)
    found = [s.to_json() for s in rooms.deletes.values() if s.room_id == req.params["room_id"]]
    if not found:
        raise not_found("No delete task for that room")
    return {"results": found}


async def delete_status(rooms: AdminRooms, req: ApiRequest) -> JsonDict:
    await rooms.gate.require_admin(req)
    shutdown = rooms.deletes.get(req.params["delete_id"])
    if shutdown is None:
        raise not_found("No such delete task")
    return shutdown.to_json()


def register(router: Router, rooms: AdminRooms) -> None:
    bound = functools.partial(bind, rooms)
    a = ADMIN_PREFIX
    router.add("GET", f"{a}/v1/rooms", bound(list_rooms))
    router.add("GET", f"{a}/v1/rooms/{{room_id}}", bound(get_room))
    router.add("GET", f"{a}/v1/rooms/{{room_id}}/members", bound(room_members))
    router.add("GET", f"{a}/v1/rooms/{{room_id}}/state", bound(room_state))
    router.add("GET", f"{a}/v1/rooms/{{room_id}}/block", bound(get_block))
    router.add("PUT", f"{a}/v1/rooms/{{room_id}}/block", bound(put_block))
    router.add("DELETE", f"{a}/v1/rooms/{{room_id}}", bound(delete_room_v1))
    router.add("DELETE", f"{a}/v2/rooms/{{room_id}}", bound(delete_room_v2))
    router.add("GET", f"{a}/v2/rooms/{{room_id}}/delete_status", bound(delete_status_of_room))
    router.add("GET", f"{a}/v2/rooms/delete_status/{{delete_id}}", bound(delete_status))
