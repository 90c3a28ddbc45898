"""GET /capabilities: what this server lets the user change, and which room versions it has.

The room versions come from the room-version table itself
(roost.rooms.versions), so adding a version there advertises it here. 3PIDs
cannot change (no identity server or email is configured); login tokens
(/login/get_token) are offered to every user but guests, who have no password.
"""

from __future__ import annotations

from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.rooms.versions import room_versions_capability


def register(router: Router, default_room_version: str) -> None:
    async def capabilities(req: ApiRequest) -> JsonDict:
        return {"capabilities": {
            "m.change_password": {"enabled": not req.user.is_guest},
            "m.room_versions": room_versions_capability(default_room_version),
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": False},
            "m.get_login_token": {"enabled": not req.user.is_guest},
            "m.profile_fields": {"enabled": True},
        }}

    router.add("GET", f"{CLIENT_PREFIX}/capabilities", capabilities)
