"""Media under /_synapse/admin/v1/media: quarantine, release and delete, as operators'
tools call them. Quarantined media is served to nobody; deleted media loses its
files, thumbnails and metadata (the repository does the work: roost/media)."""

from __future__ import annotations

from typing import Any

from roost.admin.auth import ADMIN_PREFIX, AdminGate
from roost.client_api.errors import not_found
from roost.client_api.resource import ApiRequest, JsonDict, Router
from roost.media.repository import MediaRepository

M = f"{ADMIN_PREFIX}/v1/media"


class AdminMedia:
    def __init__(self, gate: AdminGate, media: MediaRepository) -> None:
        self.gate = gate
        self.media = media

    async def quarantine(self, req: ApiRequest) -> JsonDict:
        requester = await self.gate.require_admin(req)
        if not await self.media.quarantine(req.params["server_name"], req.params["media_id"],
                                           requester.user_id):
            raise not_found("Unknown media")
        return {}

    async def release(self, req: ApiRequest) -> JsonDict:
        await self.gate.require_admin(req)
        if not await self.media.quarantine(req.params["server_name"], req.params["media_id"],
                                           None):
            raise not_found("Unknown media")
        return {}

    async def delete(self, req: ApiRequest) -> JsonDict:
        await self.gate.require_admin(req)
        media_id = req.params["media_id"]
        if not await self.media.delete(req.params["server_name"], media_id):
            raise not_found("Unknown media")
        return {"deleted_media": [media_id], "total": 1}


def register(router: Router, admin_media: AdminMedia) -> None:
    routes: list[tuple[str, str, Any]] = [
        ("POST", f"{M}/quarantine/{{server_name}}/{{media_id}}", admin_media.quarantine),
        ("POST", f"{M}/unquarantine/{{server_name}}/{{media_id}}", admin_media.release),
        ("DELETE", f"{M}/{{server_name}}/{{media_id}}", admin_media.delete),
    ]
    for method, path, handler in routes:
        router.add(method, path, handler)
