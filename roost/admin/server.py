"""GET /_synapse/admin/v1/server_version, and the one call that puts every admin route up."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from roost.admin import register as shared_secret
from roost.admin import registration_tokens, reports, rooms, users
from roost.admin.auth import ADMIN_PREFIX
from roost.client_api.resource import ApiRequest, JsonDict, Router


def server_version() -> str:
    try:
        return f"Roost/{version('roost')}"
    except PackageNotFoundError:  # running from a checkout without an install
        return "Roost"


def register_all(router: Router, registration: shared_secret.SharedSecretRegistration,
                 admin_users: users.AdminUsers, admin_rooms: rooms.AdminRooms,
                 admin_tokens: registration_tokens.AdminRegistrationTokens,
                 admin_reports: reports.AdminReports) -> None:
    async def get_server_version(_req: ApiRequest) -> JsonDict:
        return {"server_version": server_version()}

    router.add("GET", f"{ADMIN_PREFIX}/v1/server_version", get_server_version, auth=False)
    shared_secret.register(router, registration)
    users.register(router, admin_users)
    rooms.register(router, admin_rooms)
    registration_tokens.register(router, admin_tokens)
    reports.register(router, admin_reports)
