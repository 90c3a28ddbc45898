"""POST /knock/{roomIdOrAlias}: ask to be let into a room whose join rule is knock.

A room this server takes part in gets the knock as an ordinary local event (the
auth rules decide: join rule knock or knock_restricted, v7+/v10+). A room held
elsewhere is knocked on through a resident server (federation make_knock and
send_knock); the knock is then kept here as the user's membership, with the
stripped state the room sent, which /sync shows under rooms.knock. Accepting a
knock is an invite (POST /invite), refusing it a kick (POST /kick); the knocker
withdraws it with POST /leave.
"""

from __future__ import annotations

from roost.client_api.errors import MatrixError, forbidden, invalid_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView, append_event
from roost.client_api.rooms import resolve_room
from roost.federation.joins import RemoteRooms
from roost.rooms.engine import NewEvent, RoomEngine, RoomError
from roost.storage.directory import DirectoryStore
from roost.storage.federation_inbound import FederationInboundStore


def register(router: Router, engine: RoomEngine, view: RoomView, directory: DirectoryStore,
             remote: RemoteRooms | None, inbound: FederationInboundStore | None) -> None:
    async def knock(req: ApiRequest) -> JsonDict:
        body = req.json(required=False)
        room_id, via = await resolve_room(req.params["room"], directory, remote)
        user = req.user.user_id
        if req.user.is_guest:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests cannot knock")
        if await directory.is_blocked(room_id):
            raise forbidden("This room has been blocked on this server")
        content: JsonDict = {"membership": "knock"}
        if isinstance(body.get("reason"), str):
            content["reason"] = body["reason"]
        elif "reason" in body:
            raise invalid_param("reason must be a string")
        if remote is not None and not await remote.is_resident(room_id):
            servers = [*req.args("via"), *req.args("server_name"), *via]
            try:
                event, stripped = await remote.knock(room_id, user, servers, content)
            except RoomError as e:
                raise MatrixError(e.status, e.errcode, e.message) from None
            if inbound is not None:
                await inbound.add_remote_invite(event.event_id, room_id, user, stripped)
            return {"room_id": room_id}
        if await engine.room_version(room_id) is None:
            raise not_found("Unknown room")
        if await view.membership(room_id, user) in ("join", "invite", "ban"):
            raise forbidden("You cannot knock on a room you are joined to, invited to or "
                            "banned from")
        await append_event(engine, room_id, NewEvent(user, "m.room.member", content, user))
        return {"room_id": room_id}

    router.add("POST", f"{CLIENT_PREFIX}/knock/{{room}}", knock)
