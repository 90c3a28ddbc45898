"""GET /_matrix/federation/v1/hierarchy/{roomId}: a room this server holds, as another
server's hierarchy walk sees it.

Answers the room's summary (with its children_state), the summaries of its children
this server holds and the asking server may see, and the ids of the children it
holds but may not show (``inaccessible_children``). A room this server does not
hold, or the asking server may not see, is 404 M_NOT_FOUND (spec). Visibility for
servers is `SpaceHierarchy.server_may_see`, over the one access module.
"""

from __future__ import annotations

from roost.federation.transport.server import FederationRequest, FederationRouter, JsonDict
from roost.http.errors import MatrixError
from roost.rooms.hierarchy import SpaceHierarchy, children_of


def register(router: FederationRouter, hierarchy: SpaceHierarchy) -> None:
    async def get_hierarchy(req: FederationRequest) -> JsonDict:
        room_id = req.params["roomId"]
        origin = req.authenticated_origin
        suggested_only = req.bool_arg("suggested_only")
        state = await hierarchy.state(room_id)
        if state is None or not await hierarchy.server_may_see(room_id, origin, state):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        children: list[JsonDict] = []
        inaccessible: list[str] = []
        for child in children_of(state, suggested_only):
            child_id = child.state_key or ""
            child_state = await hierarchy.state(child_id)
            if child_state is None:
                continue
            if await hierarchy.server_may_see(child_id, origin, child_state):
                children.append(await hierarchy.summary(child_id, child_state, suggested_only))
            else:
                inaccessible.append(child_id)
        return {"room": await hierarchy.summary(room_id, state, suggested_only),
                "children": children, "inaccessible_children": inaccessible}

    router.add("GET", "/_matrix/federation/v1/hierarchy/{roomId}", get_hierarchy)
