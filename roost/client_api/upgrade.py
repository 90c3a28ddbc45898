"""POST /rooms/{roomId}/upgrade: replace a room by a new one of another version.

Following the spec's "Server behaviour" for room upgrades: the user must be able to
send m.room.tombstone in the old room; the new room's create event names the old
room as its ``predecessor`` (and keeps its ``type``, a space stays a space); the
state the spec lists is copied (power levels, join rules, name, topic, avatar,
encryption, history visibility, guest access, server ACLs, space children and bans);
the old room gets the tombstone pointing at the new one; this server's aliases move
to the new room (canonical alias included), the directory listing too; and the old
room's power levels are raised so that only moderators can still talk there.
Members on every server then follow the tombstone by joining the new room.
"""

from __future__ import annotations

import copy
from typing import Any

from roost.client_api.errors import MatrixError, bad_json, forbidden, not_found
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.room_view import RoomView, append_event
from roost.rooms.auth import get_named_level, get_power_level, level_value
from roost.rooms.engine import NewEvent, RoomEngine, RoomError
from roost.rooms.events import Event
from roost.rooms.versions import KNOWN_ROOM_VERSIONS, RoomVersion
from roost.storage.directory import DirectoryStore

# State copied as is (spec: "Server behaviour" of room upgrades; Synapse copies the same).
COPIED_TYPES = ("m.room.join_rules", "m.room.name", "m.room.topic", "m.room.avatar",
                "m.room.encryption", "m.room.history_visibility", "m.room.guest_access",
                "m.room.server_acl")


def register(router: Router, engine: RoomEngine, view: RoomView,
             directory: DirectoryStore) -> None:
    async def upgrade(req: ApiRequest) -> JsonDict:
        room_id = req.params["room_id"]
        user = req.user.user_id
        body = req.json()
        identifier = body.get("new_version")
        if not isinstance(identifier, str):
            raise bad_json("new_version must be a room version")
        new_version = KNOWN_ROOM_VERSIONS.get(identifier)
        if new_version is None:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              f"Room version {identifier} is not supported")
        old_version = await engine.room_version(room_id)
        if old_version is None:
            raise not_found("Unknown room")
        await view.require_joined(room_id, user)
        state = await engine.current_state_events(room_id)
        if not _may_send_state(state, old_version, user, "m.room.tombstone"):
            raise forbidden("You may not upgrade this room")
        events = _replacement_events(state, old_version, new_version, user, room_id)
        try:
            new_room, _ = await engine.create_room(new_version, events)
        except RoomError as e:
            raise MatrixError(e.status, e.errcode, e.message) from None
        await append_event(engine, room_id, NewEvent(user, "m.room.tombstone", {
            "body": "This room has been replaced", "replacement_room": new_room}, ""))
        await _move_aliases(engine, directory, state, room_id, new_room, user)
        if await directory.is_public(room_id):
            await directory.set_public(new_room, True)
            await directory.set_public(room_id, False)
        await _restrict_old_room(engine, state, old_version, room_id, user)
        return {"replacement_room": new_room}

    router.add("POST", f"{CLIENT_PREFIX}/rooms/{{room_id}}/upgrade", upgrade)


def _may_send_state(state: dict[Any, Event], version: RoomVersion, user: str,
                    event_type: str) -> bool:
    power_levels = state.get(("m.room.power_levels", ""))
    needed = get_named_level(state, "state_default", 50)
    if power_levels is not None:
        events = power_levels.content.get("events")
        if isinstance(events, dict):
            level = level_value(events.get(event_type), version)
            if level is not None:
                needed = level
    return get_power_level(user, state, version) >= needed


def _replacement_events(state: dict[Any, Event], old: RoomVersion, new: RoomVersion,
                        user: str, old_room: str) -> list[NewEvent]:
    old_create = state[("m.room.create", "")]
    create: JsonDict = {"room_version": new.identifier, "predecessor": {"room_id": old_room}}
    if isinstance(old_create.content.get("type"), str):
        create["type"] = old_create.content["type"]
    if not new.creator_is_sender:
        create["creator"] = user
    events = [NewEvent(user, "m.room.create", create, ""),
              NewEvent(user, "m.room.member", {"membership": "join"}, user)]
    events.append(NewEvent(user, "m.room.power_levels",
                           _power_levels(state, old, new, user), ""))
    for event_type in COPIED_TYPES:
        event = state.get((event_type, ""))
        if event is not None and event.content:
            events.append(NewEvent(user, event_type, copy.deepcopy(event.content), ""))
    for (event_type, state_key), event in sorted(state.items()):
        if event_type == "m.space.child" and event.content:
            events.append(NewEvent(user, event_type, copy.deepcopy(event.content), state_key))
    for (event_type, state_key), event in sorted(state.items()):
        if event_type == "m.room.member" and event.membership == "ban" and state_key != user:
            events.append(NewEvent(user, "m.room.member", {"membership": "ban"}, state_key))
    return events


def _power_levels(state: dict[Any, Event], old: RoomVersion, new: RoomVersion,
                  user: str) -> JsonDict:
    """The old power levels, as integers, with the upgrading user able to do everything
    (in v12 the new room's creator is all-powerful and may not be listed)."""
    event = state.get(("m.room.power_levels", ""))
    content: JsonDict = copy.deepcopy(event.content) if event is not None else {}
    for name in ("users_default", "events_default", "state_default", "ban", "redact", "kick",
                 "invite"):
        if name in content:
            level = level_value(content[name], old)
            if level is None:
                del content[name]
            else:
                content[name] = level
    for name in ("users", "events", "notifications"):
        raw = content.get(name)
        if isinstance(raw, dict):
            content[name] = {k: lv for k, v in raw.items()
                             if (lv := level_value(v, old)) is not None}
    users: dict[str, int] = content.setdefault("users", {})
    if new.hydra:
        users.pop(user, None)
    else:
        levels = [v for v in [*users.values(), *(content.get("events") or {}).values(),
                              *(content.get(n) for n in ("state_default", "ban", "kick",
                                                         "redact", "invite"))]
                  if isinstance(v, int)]
        users[user] = max([100, *levels])
    return content


async def _move_aliases(engine: RoomEngine, directory: DirectoryStore, state: dict[Any, Event],
                        old_room: str, new_room: str, user: str) -> None:
    """This server's aliases of the old room now lead to the new one; the canonical alias
    follows (set in the new room, removed from the old)."""
    for alias in await directory.aliases_of(old_room):
        room_creator = (await directory.get_alias(alias) or (None, user))[1]
        await directory.delete_alias(alias)
        await directory.create_alias(alias, new_room, room_creator)
    canonical = state.get(("m.room.canonical_alias", ""))
    if canonical is None or not canonical.content:
        return
    try:
        await engine.append(new_room, NewEvent(user, "m.room.canonical_alias",
                                               copy.deepcopy(canonical.content), ""))
        await engine.append(old_room, NewEvent(user, "m.room.canonical_alias", {}, ""))
    except RoomError:
        pass  # the aliases still move; only the canonical alias event could not be sent


async def _restrict_old_room(engine: RoomEngine, state: dict[Any, Event], version: RoomVersion,
                             room_id: str, user: str) -> None:
    """Only moderators may talk or invite in the old room from now on."""
    event = state.get(("m.room.power_levels", ""))
    if event is None:
        return
    content = copy.deepcopy(event.content)
    users_default = level_value(content.get("users_default", 0), version) or 0
    restricted = max(50, users_default + 1)
    changed = False
    for name in ("events_default", "invite"):
        if (level_value(content.get(name, 0), version) or 0) < restricted:
            content[name] = restricted
            changed = True
    if changed:
        try:
            await engine.append(room_id, NewEvent(user, "m.room.power_levels", content, ""))
        except RoomError:
            pass  # the upgrade stands; the old room stays as open as it was
