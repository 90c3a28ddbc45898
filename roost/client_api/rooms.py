"""POST /createRoom, membership (join, leave, invite, kick, ban, unban, forget), /joined_rooms."""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable

from roost.client_api.errors import MatrixError, bad_json, forbidden, invalid_param, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, Handler, JsonDict, Router
from roost.client_api.room_view import RoomView, append_event, check_canonical
from roost.federation.joins import RemoteRooms
from roost.rooms import restricted
from roost.rooms.engine import NewEvent, RoomEngine, RoomError
from roost.rooms.events import is_usable_server_name
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion
from roost.storage.directory import DirectoryStore

# user_id -> the displayname/avatar_url to put in their join events.
ProfileLookup = Callable[[str], Awaitable[JsonDict]]

logger = logging.getLogger(__name__)

PRESETS = {
    "private_chat": ("invite", "shared", "can_join"),
    "trusted_private_chat": ("invite", "shared", "can_join"),
    "public_chat": ("public", "shared", "forbidden"),
}


def _str_field(body: JsonDict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise bad_json(f"{key} must be a string")
    return value


def _dict_field(body: JsonDict, key: str) -> JsonDict:
    value = body.get(key, {})
    if not isinstance(value, dict):
        raise bad_json(f"{key} must be an object")
    return value


def default_power_levels(version: RoomVersion, creator: str, trusted: list[str]) -> JsonDict:
    users = {} if version.hydra else {creator: 100}
    if not version.hydra:
        users.update({u: 100 for u in trusted})
    events = {
        "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
        "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
        "m.room.server_acl": 100, "m.room.encryption": 100,
    }
    if version.hydra:
        events["m.room.tombstone"] = 150
    return {
        "users": users, "users_default": 0, "events": events, "events_default": 0,
        "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
        "notifications": {"room": 50},
    }


def topic_content(topic: str) -> JsonDict:
    """A plain-text topic with its text/plain m.topic block (spec v1.15)."""
    return {"topic": topic, "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]}}


class RoomCreation:
    """Turns a /createRoom body into the ordered events the spec lists."""

    def __init__(self, server_name: str, default_version: str) -> None:
        self.server_name = server_name
        self.default_version = default_version

    def version_of(self, body: JsonDict) -> RoomVersion:
        identifier = _str_field(body, "room_version") or self.default_version
        version = KNOWN_ROOM_VERSIONS.get(identifier)
        if version is None:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              f"Room version {identifier} is not supported")
        return version

    def events(self, creator: str, version: RoomVersion, body: JsonDict,
               alias: str | None) -> list[NewEvent]:
        preset = _str_field(body, "preset") or (
            "public_chat" if body.get("visibility") == "public" else "private_chat")
        if preset not in PRESETS:
            raise invalid_param(f"Unknown preset {preset}")
        invites = body.get("invite", [])
        if not isinstance(invites, list) or not all(isinstance(u, str) for u in invites):
            raise bad_json("invite must be a list of user ids")
        trusted = invites if preset == "trusted_private_chat" else []
        creation = copy.deepcopy(_dict_field(body, "creation_content"))
        creation.pop("room_version", None)
        if not version.creator_is_sender:
            creation["creator"] = creator
        if version.hydra and trusted:
            creation["additional_creators"] = sorted(
                set(creation.get("additional_creators", [])) | set(trusted))
        creation["room_version"] = version.identifier
        out = [NewEvent(creator, "m.room.create", creation, "")]
        join_content: JsonDict = {"membership": "join"}
        out.append(NewEvent(creator, "m.room.member", join_content, creator))
        power = default_power_levels(version, creator, trusted)
        override = _dict_field(body, "power_level_content_override")
        power.update(copy.deepcopy(override))
        out.append(NewEvent(creator, "m.room.power_levels", power, ""))
        if alias is not None:
            out.append(NewEvent(creator, "m.room.canonical_alias", {"alias": alias}, ""))
        join_rule, history, guest = PRESETS[preset]
        out.append(NewEvent(creator, "m.room.join_rules", {"join_rule": join_rule}, ""))
        out.append(NewEvent(creator, "m.room.history_visibility",
                            {"history_visibility": history}, ""))
        out.append(NewEvent(creator, "m.room.guest_access", {"guest_access": guest}, ""))
        out.extend(self._initial_state(creator, body))
        name, topic = _str_field(body, "name"), _str_field(body, "topic")
        if name is not None:
            out.append(NewEvent(creator, "m.room.name", {"name": name}, ""))
        if topic is not None:
            out.append(NewEvent(creator, "m.room.topic", topic_content(topic), ""))
        is_direct = body.get("is_direct") is True
        for invitee in invites:
            content: JsonDict = {"membership": "invite"}
            if is_direct:
                content["is_direct"] = True
            out.append(NewEvent(creator, "m.room.member", content, invitee))
        return out

    @staticmethod
    def _initial_state(creator: str, body: JsonDict) -> list[NewEvent]:
        initial = body.get("initial_state", [])
        if not isinstance(initial, list):
            raise bad_json("initial_state must be a list")
        out = []
        for item in initial:
            if not isinstance(item, dict) or not isinstance(item.get("type"), str) \
                    or not isinstance(item.get("content"), dict):
                raise bad_json("initial_state entries need a type and a content object")
            if item["type"] == "m.room.create":
                raise bad_json("initial_state may not contain m.room.create")
            state_key = item.get("state_key", "")
            if not isinstance(state_key, str):
                raise bad_json("state_key must be a string")
            out.append(NewEvent(creator, item["type"], item["content"], state_key))
        return out


async def resolve_room(room_id_or_alias: str, directory: DirectoryStore,
                       remote: RemoteRooms | None) -> tuple[str, list[str]]:
    """The room id, and servers to join it through when it is another server's alias.

    Shared by /join and /knock, which both take a `roomIdOrAlias`."""
    if room_id_or_alias.startswith("!"):
        return room_id_or_alias, []
    if room_id_or_alias.startswith("#"):
        if remote is not None and remote.is_remote_alias(room_id_or_alias):
            try:
                return await remote.resolve_alias(room_id_or_alias)
            except RoomError as e:
                raise MatrixError(e.status, e.errcode, e.message) from None
        found = await directory.get_alias(room_id_or_alias)
        if found is None:
            raise not_found("Room alias not found")
        return found[0], []
    raise invalid_param("Expected a room id or a room alias")


def register(
    router: Router, engine: RoomEngine, view: RoomView, directory: DirectoryStore,
    creation: RoomCreation, member_profile: ProfileLookup | None = None,
    remote: RemoteRooms | None = None,
) -> None:
    """`remote` (when federation is wired) joins, invites and leaves across servers."""
    server_name = creation.server_name

    async def remotely(action: Awaitable[object]) -> None:
        try:
            await action
        except RoomError as e:
            raise MatrixError(e.status, e.errcode, e.message) from None

    async def create_room(req: ApiRequest) -> JsonDict:
        body = req.json(required=False)
        user = req.user.user_id
        version = creation.version_of(body)
        alias = None
        alias_name = _str_field(body, "room_alias_name")
        if alias_name is not None:
            if not alias_name or ":" in alias_name or "#" in alias_name:
                raise invalid_param("room_alias_name must be a bare localpart")
            alias = f"#{alias_name}:{server_name}"
            if await directory.get_alias(alias) is not None:
                raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise invalid_param("visibility must be public or private")
        events = creation.events(user, version, body, alias)
        for event in events:
            check_canonical(event.content)
        if member_profile is not None:
            events[1].content.update(await member_profile(user))  # the creator's join
        # Invites of other servers' users go over federation once the room exists (the
        # invitee's server must countersign them), not into the creation batch.
        remote_invites = [e for e in events if remote is not None and e.type == "m.room.member"
                          and e.content.get("membership") == "invite"
                          and remote.is_remote_user(e.state_key or "")]
        events = [e for e in events if not any(e is r for r in remote_invites)]
        try:
            room_id, _ = await engine.create_room(version, events)
        except RoomError as e:
            raise MatrixError(e.status, e.errcode, e.message) from None
        for invite in remote_invites:
            assert remote is not None and invite.state_key is not None
            content = {k: v for k, v in invite.content.items() if k != "membership"}
            try:
                await remote.invite(room_id, user, invite.state_key, content)
            except RoomError as e:  # the room stands; the invite can be sent again
                logger.info("createRoom %s: inviting %s failed: %s", room_id,
                            invite.state_key, e.message)
        if alias is not None and not await directory.create_alias(alias, room_id, user):
            raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
        if visibility == "public":
            await directory.set_public(room_id, True)
        return {"room_id": room_id}

    async def set_membership(room_id: str, sender: str, target: str, membership: str,
                             body: JsonDict, via: list[str] | None = None) -> None:
        if membership in ("join", "invite") and await directory.is_blocked(room_id):
            raise forbidden("This room has been blocked on this server")
        if remote is not None and membership == "join" and not await remote.is_resident(room_id):
            content = {"reason": body["reason"]} if isinstance(body.get("reason"), str) else {}
            if member_profile is not None:
                content.update(await member_profile(target))
            await remotely(remote.join(room_id, target, via or [], content))
            return
        if await engine.room_version(room_id) is None:
            raise not_found("Unknown room")
        content: JsonDict = {"membership": membership}
        reason = _str_field(body, "reason")
        if reason is not None:
            content["reason"] = reason
        if membership == "join":
            current = await view.membership(room_id, target)
            if current == "join":
                return
            if member_profile is not None:
                content.update(await member_profile(target))
            if current != "invite":
                await authorise_restricted(room_id, target, content)
        if remote is not None and membership == "invite" and remote.is_remote_user(target):
            await remotely(remote.invite(room_id, sender, target, content))
            return
        await append_event(engine, room_id, NewEvent(sender, "m.room.member", content, target))

    async def authorise_restricted(room_id: str, user_id: str, content: JsonDict) -> None:
        """A restricted room admits members of the rooms its allow list names: a local
        user who may invite vouches for the join (join_authorised_via_users_server)."""
        version = await engine.room_version(room_id)
        state = await engine.current_state_events(room_id)
        if version is None or not restricted.is_restricted(state, version):
            return
        for allowed in restricted.allowed_room_ids(state):
            if await engine.room_version(allowed) is not None \
                    and await engine.membership(allowed, user_id) == "join":
                break
        else:
            if ("m.room.join_rules", "") in state and \
                    state[("m.room.join_rules", "")].content.get("join_rule") == "knock_restricted":
                raise forbidden("You may knock on this room, or join through its allowed rooms")
            raise forbidden("You are not in any of the rooms this room admits members of")
        authoriser = restricted.choose_authoriser(state, version, server_name)
        if authoriser is None:
            raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN",
                              "No user of this server may invite to the room")
        content["join_authorised_via_users_server"] = authoriser

    async def check_guest_may_join(req: ApiRequest, room_id: str) -> None:
        """Guests join only rooms whose m.room.guest_access is can_join (the spec's guest module)."""
        if not req.user.is_guest or await engine.room_version(room_id) is None:
            return
        state = await engine.current_state_events(room_id)
        access = state.get(("m.room.guest_access", ""))
        if access is None or access.content.get("guest_access") != "can_join":
            raise MatrixError(403, "M_FORBIDDEN", "Guest access is not allowed in this room")

    async def join_by_id_or_alias(req: ApiRequest) -> JsonDict:
        given = [*req.args("via"), *req.args("server_name")]
        named = req.params["room"]
        if named.startswith("!") and ":" in named:
            given.append(named.partition(":")[2])
        bad = [name for name in given if not is_usable_server_name(name)]
        if bad:
            raise MatrixError(400, "M_INVALID_PARAM", f"not a server name: {bad[0]}")
        room_id, via = await resolve_room(named, directory, remote)
        await check_guest_may_join(req, room_id)
        via = [*req.args("via"), *req.args("server_name"), *via]
        await set_membership(room_id, req.user.user_id, req.user.user_id, "join",
                             req.json(required=False), via)
        await directory.unforget(req.user.user_id, room_id)
        return {"room_id": room_id}

    async def join(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        await check_guest_may_join(req, room_id)
        await set_membership(room_id, req.user.user_id, req.user.user_id, "join",
                             req.json(required=False))
        await directory.unforget(req.user.user_id, room_id)
        return {"room_id": room_id}

    async def leave(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        current = await view.membership(room_id, req.user.user_id)
        if current in (None, "leave"):
            if await engine.room_version(room_id) is None:
                raise not_found("Unknown room")
            raise forbidden("You are not in this room")
        if remote is not None and current in ("invite", "knock") \
                and not await remote.is_resident(room_id):
            # Rejecting an invite to (or withdrawing a knock on) a room this server is not
            # in: through the inviter's server, or those the client names.
            state = await engine.current_state_events(room_id)
            invite = state.get(("m.room.member", req.user.user_id))
            via = [*req.args("via"), *req.args("server_name")]
            if invite is not None and current == "invite":
                via.append(invite.sender.partition(":")[2])
            await remotely(remote.leave(room_id, req.user.user_id, via, req.json(required=False)))
            return {}
        await set_membership(room_id, req.user.user_id, req.user.user_id, "leave",
                             req.json(required=False))
        return {}

    def targeted(membership: str, target_in: tuple[str, ...] | None = None) -> Handler:
        """An action on another user; `target_in` lists the memberships it applies to.

        A kick and an unban are both a `leave` event, which the auth rules
        allow whatever the target's membership; checking it first keeps a
        /kick from lifting a ban and an /unban from kicking a member.
        """
        async def handler(req: ApiRequest) -> JsonDict:
            body = req.json()
            target = _str_field(body, "user_id")
            if target is None:
                raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: user_id")
            if not target.startswith("@") or ":" not in target:
                raise invalid_param("user_id is not a user id")
            room_id = req.params["room_id"]
            if target_in is not None and await engine.room_version(room_id) is not None \
                    and await view.membership(room_id, target) not in target_in:
                raise forbidden(f"{target} is not {' or '.join(target_in)} in this room")
            await set_membership(room_id, req.user.user_id, target, membership, body)
            return {}
        return handler

    async def forget(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        if await view.membership(room_id, req.user.user_id) in ("join", "invite", "knock"):
            raise MatrixError(400, "M_UNKNOWN", "Leave the room before forgetting it")
        if not await view.state.membership_history(room_id, req.user.user_id):
            raise not_found("You were never in this room")
        await directory.forget(req.user.user_id, room_id)
        return {}

    async def joined_rooms(req: ApiRequest) -> JsonDict:
        rooms = await view.state.rooms_for_user(req.user.user_id, ("join",))
        return {"joined_rooms": sorted(rooms)}

    R = f"{CLIENT_PREFIX}/rooms/{{room_id}}"
    router.add("POST", f"{CLIENT_PREFIX}/createRoom", create_room)
    router.add("POST", f"{CLIENT_PREFIX}/join/{{room}}", join_by_id_or_alias)
    router.add("POST", f"{R}/join", join)
    router.add("POST", f"{R}/leave", leave)
    router.add("POST", f"{R}/forget", forget)
    router.add("POST", f"{R}/invite", targeted("invite"))
    router.add("POST", f"{R}/kick", targeted("leave", ("join", "invite", "knock")))
    router.add("POST", f"{R}/ban", targeted("ban"))
    router.add("POST", f"{R}/unban", targeted("leave", ("ban",)))
    router.add("GET", f"{CLIENT_PREFIX}/joined_rooms", joined_rooms)


