"""Spaces: a room's summary as the hierarchy shows it, its children, and who may see it.

Shared by the client API's GET /rooms/{roomId}/hierarchy and federation's
/hierarchy/{roomId}. A room's children are its ``m.space.child`` state events
with a non-empty ``via`` list, sorted as the spec says: by ``order`` (printable
ASCII, at most 50 characters; children without a valid one after those with),
then the child event's origin_server_ts, then the child's room id.

Who may see a room's summary (spec: "the rooms the user may join or peek"): a
member or invitee; anyone when the room is world readable or its join rule is
public, knock or knock_restricted; a member of one of its allowed rooms when it
is restricted. For a server: the same with "a user of that server". Membership
comes through the one access module (``RoomAccess``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roost.rooms.access import RoomAccess
from roost.rooms.engine import RoomEngine
from roost.rooms.engine_types import RoomError
from roost.rooms.events import Event
from roost.rooms.restricted import allowed_room_ids

JsonDict = dict[str, Any]
StateKey = tuple[str, str]
OPEN_JOIN_RULES = ("public", "knock", "knock_restricted")


def child_sort_key(event: Event) -> tuple[int, str, int, str]:
    order = event.content.get("order")
    valid = isinstance(order, str) and len(order) <= 50 and all(
        0x20 <= ord(c) <= 0x7E for c in order)
    return (0 if valid else 1, order if valid else "", event.origin_server_ts,  # type: ignore[return-value]
            event.state_key or "")


def children_of(state: Mapping[StateKey, Event], suggested_only: bool) -> list[Event]:
    """The room's m.space.child events that name a child (non-empty via), in order."""
    children = [e for (t, _), e in state.items() if t == "m.space.child"
                and isinstance(e.content.get("via"), list) and e.content["via"]
                and (not suggested_only or e.content.get("suggested") is True)]
    return sorted(children, key=child_sort_key)


def stripped_child(event: Event) -> JsonDict:
    """A child event as children_state carries it (stripped, with origin_server_ts)."""
    return {"type": event.type, "state_key": event.state_key or "", "sender": event.sender,
            "content": event.content, "origin_server_ts": event.origin_server_ts}


class SpaceHierarchy:
    def __init__(self, engine: RoomEngine, access: RoomAccess) -> None:
        self._engine = engine
        self._access = access

    async def state(self, room_id: str) -> dict[StateKey, Event] | None:
        """The room's current state, or None when this server does not hold the room."""
        if await self._engine.room_version(room_id) is None:
            return None
        try:
            state = await self._engine.current_state_events(room_id)
        except RoomError:
            return None
        return state if ("m.room.create", "") in state else None

    async def summary(self, room_id: str, state: Mapping[StateKey, Event],
                      suggested_only: bool) -> JsonDict:
        """The room as a hierarchy chunk (SpaceHierarchyRoomsChunk), children included."""
        def content(event_type: str, key: str) -> Any:
            event = state.get((event_type, ""))
            return event.content.get(key) if event is not None else None

        members = sum(1 for (t, _), e in state.items()
                      if t == "m.room.member" and e.membership == "join")
        chunk: JsonDict = {
            "room_id": room_id,
            "num_joined_members": members,
            "world_readable": content("m.room.history_visibility", "history_visibility")
            == "world_readable",
            "guest_can_join": content("m.room.guest_access", "guest_access") == "can_join",
            "children_state": [stripped_child(e) for e in children_of(state, suggested_only)],
        }
        for key, event_type, field in (("name", "m.room.name", "name"),
                                       ("topic", "m.room.topic", "topic"),
                                       ("canonical_alias", "m.room.canonical_alias", "alias"),
                                       ("avatar_url", "m.room.avatar", "url"),
                                       ("join_rule", "m.room.join_rules", "join_rule"),
                                       ("room_type", "m.room.create", "type")):
            value = content(event_type, field)
            if isinstance(value, str):
                chunk[key] = value
        version = content("m.room.create", "room_version")
        chunk["room_version"] = version if isinstance(version, str) else "1"
        encryption = content("m.room.encryption", "algorithm")
        if isinstance(encryption, str):
            chunk["encryption"] = encryption
        allowed = allowed_room_ids(state)
        if allowed:
            chunk["allowed_room_ids"] = allowed
        return chunk

    async def membership(self, room_id: str, user_id: str) -> str | None:
        return await self._access.membership(room_id, user_id)

    async def user_may_see(self, room_id: str, user_id: str,
                           state: Mapping[StateKey, Event]) -> bool:
        if await self._access.membership(room_id, user_id) in ("join", "invite"):
            return True
        if _openly_visible(state):
            return True
        for allowed in _restricted_allow(state):
            if await self._access.membership(allowed, user_id) == "join":
                return True
        return False

    async def server_may_see(self, room_id: str, server_name: str,
                             state: Mapping[StateKey, Event]) -> bool:
        if _openly_visible(state) or await self._access.server_in_room(room_id, server_name):
            return True
        for allowed in _restricted_allow(state):
            if await self._engine.room_version(allowed) is not None \
                    and await self._access.server_in_room(allowed, server_name):
                return True
        return False


def chunk_visible_to_user(chunk: Mapping[str, Any], memberships: Mapping[str, str | None]
                          ) -> bool:
    """A remote room's chunk (the other server vouched the room exists): whether the user
    may see it, from what the chunk says and the user's memberships held here."""
    if chunk.get("world_readable") is True or chunk.get("join_rule") in OPEN_JOIN_RULES:
        return True
    if memberships.get(str(chunk.get("room_id"))) in ("join", "invite"):
        return True
    allowed = chunk.get("allowed_room_ids")
    if chunk.get("join_rule") in ("restricted", "knock_restricted") and isinstance(allowed, list):
        return any(memberships.get(r) == "join" for r in allowed if isinstance(r, str))
    return False


def _openly_visible(state: Mapping[StateKey, Event]) -> bool:
    history = state.get(("m.room.history_visibility", ""))
    if history is not None and history.content.get("history_visibility") == "world_readable":
        return True
    join_rules = state.get(("m.room.join_rules", ""))
    rule = join_rules.content.get("join_rule") if join_rules is not None else None
    return rule in OPEN_JOIN_RULES


def _restricted_allow(state: Mapping[StateKey, Event]) -> list[str]:
    join_rules = state.get(("m.room.join_rules", ""))
    rule = join_rules.content.get("join_rule") if join_rules is not None else None
    return allowed_room_ids(state) if rule in ("restricted", "knock_restricted") else []
