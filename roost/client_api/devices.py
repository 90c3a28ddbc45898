"""GET/PUT/DELETE /devices[/{deviceId}] and POST /delete_devices."""

from __future__ import annotations

from roost.client_api.errors import bad_json, missing_param, not_found
from roost.client_api.login import optional_str
from roost.client_api.resource import CLIENT_PREFIX, ApiRequest, JsonDict, Router
from roost.client_api.tokens import TokenAuthority
from roost.client_api.uia import UserInteractiveAuth
from roost.storage.devices import DeviceRecord, DeviceStore


def _device_json(device: DeviceRecord) -> JsonDict:
    """A device as the spec's schema has it: optional fields not known are left out, not null."""
    body: JsonDict = {"device_id": device.device_id}
    for key in ("display_name", "last_seen_ts", "last_seen_ip"):
        value = getattr(device, key)
        if value is not None:
            body[key] = value
    return body


def register(
    router: Router, devices: DeviceStore, tokens: TokenAuthority, uia: UserInteractiveAuth
) -> None:
    async def list_devices(req: ApiRequest) -> JsonDict:
        return {"devices": [_device_json(d) for d in await devices.list_devices(req.user.user_id)]}

    async def get_device(req: ApiRequest) -> JsonDict:
        device = await devices.get_device(req.user.user_id, req.params["device_id"])
        if device is None:
            raise not_found("Device not found")
        return _device_json(device)

    async def put_device(req: ApiRequest) -> JsonDict:
        name = optional_str(req.json(), "display_name")
        if not await devices.set_display_name(req.user.user_id, req.params["device_id"], name):
            raise not_found("Device not found")
        return {}

    async def delete_device(req: ApiRequest) -> JsonDict:
        body = req.json(required=False)
        if await devices.get_device(req.user.user_id, req.params["device_id"]) is None:
            raise not_found("Device not found")
        await uia.require_password(f"{req.method} {req.path}", body, req.user.user_id)
        tokens.forget(await devices.delete_devices(req.user.user_id, [req.params["device_id"]]))
        return {}

    async def delete_devices(req: ApiRequest) -> JsonDict:
        body = req.json()
        ids = body.get("devices")
        if ids is None:
            raise missing_param("devices")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise bad_json("devices must be a list of device ids")
        await uia.require_password(f"{req.method} {req.path}", body, req.user.user_id)
        tokens.forget(await devices.delete_devices(req.user.user_id, ids))
        return {}

    router.add("GET", f"{CLIENT_PREFIX}/devices", list_devices)
    router.add("GET", f"{CLIENT_PREFIX}/devices/{{device_id}}", get_device)
    router.add("PUT", f"{CLIENT_PREFIX}/devices/{{device_id}}", put_device)
    router.add("DELETE", f"{CLIENT_PREFIX}/devices/{{device_id}}", delete_device)
    router.add("POST", f"{CLIENT_PREFIX}/delete_devices", delete_devices)
