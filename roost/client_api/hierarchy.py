"""GET /_matrix/client/v1/rooms/{roomId}/hierarchy: a space's rooms, depth first.

The walk starts at the room asked for (which the user must be able to see: 403
otherwise) and follows m.space.child events down to ``max_depth``, each room
once, children in the spec's order. A room this server holds is summarised from
its state; one it does not is asked of the servers its parent's child event
names (federation /hierarchy/{roomId}), whose answer also describes that room's
own children. Rooms the user may not see are left out (rooms.hierarchy).

Pages are cut from the walk's result; ``next_batch`` is ``<offset>.<max_depth>.
<suggested_only>``, and a ``from`` token given with other parameters is 400
M_INVALID_PARAM as the spec asks. The walk visits at most MAX_ROOMS rooms.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from roost.client_api.errors import forbidden, invalid_param
from roost.client_api.resource import ApiRequest, JsonDict, Router
from roost.federation.transport.client import FederationClient, FederationClientError
from roost.rooms.hashing import server_name_of
from roost.rooms.hierarchy import SpaceHierarchy, chunk_visible_to_user

logger = logging.getLogger(__name__)

MAX_ROOMS = 500
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_DEPTH = 20


def register(router: Router, hierarchy: SpaceHierarchy, client: FederationClient | None,
             server_name: str) -> None:
    async def remote(room_id: str, via: list[str], suggested_only: bool) -> JsonDict | None:
        """Another server's answer for a room this server does not hold, or None."""
        if client is None:
            return None
        for server in dict.fromkeys(via):
            if server == server_name:
                continue
            try:
                answer = await client.get_json(
                    server, f"/_matrix/federation/v1/hierarchy/{quote(room_id, safe='')}",
                    {"suggested_only": "true" if suggested_only else "false"})
            except FederationClientError as e:
                logger.info("hierarchy of %s from %s: %s", room_id, server, e)
                continue
            if isinstance(answer, dict) and isinstance(answer.get("room"), dict) \
                    and answer["room"].get("room_id") == room_id:
                return answer
        return None

    async def get_hierarchy(req: ApiRequest) -> JsonDict:
        root = req.params["room_id"]
        user = req.user.user_id
        limit = req.limit_arg("limit", DEFAULT_LIMIT, MAX_LIMIT, minimum=1)
        max_depth = req.limit_arg("max_depth", MAX_DEPTH, MAX_DEPTH)
        suggested_only = req.bool_arg("suggested_only")
        offset = _offset(req.arg("from"), max_depth, suggested_only)

        known: dict[str, JsonDict] = {}  # chunks other servers described, by room id
        memberships: dict[str, Any] = {}

        async def membership(room_id: str) -> Any:
            if room_id not in memberships:
                memberships[room_id] = await hierarchy.membership(room_id, user)
            return memberships[room_id]

        async def describe(room_id: str, via: list[str]) -> JsonDict | None:
            state = await hierarchy.state(room_id)
            if state is not None:
                if not await hierarchy.user_may_see(room_id, user, state):
                    return None
                return await hierarchy.summary(room_id, state, suggested_only)
            chunk = known.get(room_id)
            if chunk is None:
                answer = await remote(room_id, via, suggested_only)
                if answer is None:
                    return None
                chunk = answer["room"]
                for child in answer.get("children", []):
                    if isinstance(child, dict) and isinstance(child.get("room_id"), str):
                        known.setdefault(child["room_id"], child)
            for r in [chunk.get("room_id"), *(chunk.get("allowed_room_ids") or [])]:
                if isinstance(r, str):
                    await membership(r)
            return chunk if chunk_visible_to_user(chunk, memberships) else None

        root_via = [server_name_of(root)] if ":" in root else []
        top = await describe(root, root_via)
        if top is None:
            raise forbidden("You may not see this room")
        rooms: list[JsonDict] = []
        seen = {root}
        stack: list[tuple[JsonDict, int]] = [(top, 0)]
        while stack and len(rooms) < MAX_ROOMS:
            chunk, depth = stack.pop()
            rooms.append(chunk)
            if depth >= max_depth:
                continue
            below: list[tuple[JsonDict, int]] = []
            for child in chunk.get("children_state", []):
                child_id = child.get("state_key") if isinstance(child, dict) else None
                if not isinstance(child_id, str) or child_id in seen:
                    continue
                seen.add(child_id)
                via = [v for v in child.get("content", {}).get("via", []) if isinstance(v, str)]
                described = await describe(child_id, via)
                if described is not None:
                    below.append((described, depth + 1))
            stack.extend(reversed(below))  # depth first, children in order
        page = rooms[offset:offset + limit]
        answer: JsonDict = {"rooms": page}
        if offset + limit < len(rooms):
            answer["next_batch"] = f"{offset + limit}.{max_depth}.{int(suggested_only)}"
        return answer

    router.add("GET", "/_matrix/client/v1/rooms/{room_id}/hierarchy", get_hierarchy)


def _offset(token: str | None, max_depth: int, suggested_only: bool) -> int:
    if token is None:
        return 0
    parts = token.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise invalid_param("from is not a token this server gave")
    if int(parts[1]) != max_depth or int(parts[2]) != int(suggested_only):
        raise invalid_param("from was given for other max_depth or suggested_only")
    return int(parts[0])

